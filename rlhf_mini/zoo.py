"""The model zoo: cached artifacts that any chapter can ask for.

A zoo call returns an artifact keyed by its config and by the source code of the modules that
make it. When it is missing, the call builds it (deterministically) and stores it; afterwards it
is loaded, not retrained. So every notebook runs on its own in a fresh kernel, and a test run
pays for each artifact once.

The cache lives in ``$RLHF_MINI_CACHE`` (default ``~/.cache/rlhf_mini``).
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from rlhf_mini.config import Profile, get_profile

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

CACHE_ENV = "RLHF_MINI_CACHE"


def cache_dir() -> Path:
    """Where artifacts live: ``$RLHF_MINI_CACHE`` or ``~/.cache/rlhf_mini``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlhf_mini")


def artifact_key(config: dict, modules: list[ModuleType]) -> str:
    """A short hash of the config and of the source code that builds the artifact."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for module in modules:
        h.update(inspect.getsource(module).encode())
    return h.hexdigest()[:16]


def cached(name: str, config: dict, modules: list[ModuleType], build: Callable[[Path], None]) -> Path:
    """The folder of artifact ``name``; ``build(folder)`` fills it when it is not cached yet.

    Builds go to a temporary folder that is renamed into place, under a file lock, so an
    interrupted build leaves nothing half-written and two processes never build the same thing.
    """
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-{artifact_key(config, modules)}"
    if (target / "DONE").exists():
        return target
    with open(root / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "DONE").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
        try:
            build(tmp)
            (tmp / "config.json.zoo").write_text(json.dumps(config, indent=1, default=str))
            (tmp / "DONE").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def base_model_path(profile: Profile | None = None) -> Path:
    """The folder of the pretrained base model and its tokenizer (built on first use)."""
    from rlhf_mini import models, pretrain
    from rlhf_mini.worlds import arithmetic, assistant, base, sentiment

    profile = profile or get_profile()

    def build(folder: Path) -> None:
        result = pretrain.pretrain_base_model(profile)
        result.model.save_pretrained(folder)
        result.tokenizer.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    # only what shapes the base model is in its key: changing a later stage's step count keeps it
    keyed = {k: v for k, v in vars(profile).items()
             if k in {"n_layer", "n_embd", "n_head", "vocab_size", "n_ctx", "corpus_docs",
                      "pretrain_steps", "pretrain_batch", "pretrain_seq", "pretrain_lr"}}
    return cached(f"base-{profile.name}", keyed,
                  [models, pretrain, base, assistant, arithmetic, sentiment], build)


def tokenizer(profile: Profile | None = None) -> PreTrainedTokenizerFast:
    """The course tokenizer (byte-level BPE trained on the course corpus)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model_path(profile))
    tok.padding_side = "left"
    return tok


def base_model(profile: Profile | None = None) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """The base language model pretrained on the course corpus, and its tokenizer."""
    from rlhf_mini.config import get_device
    from rlhf_mini.models import load_pretrained

    model, tok = load_pretrained(base_model_path(profile))
    return model.to(get_device()).eval(), tok


def base_model_metrics(profile: Profile | None = None) -> list[dict]:
    """The base model's pretraining loss curve."""
    return json.loads((base_model_path(profile) / "metrics.json").read_text())
