"""The model zoo: cached artifacts that any chapter can ask for, above the algorithms.

This package composes the stages (the PPO recipe needs the SFT policy and the reward model): one
module per stage holds the course's recipes and cached getters (``zoo.sft``, ``zoo.reward``,
``zoo.ppo``, ``zoo.rejection_sampling``, ``zoo.dpo``, ``zoo.rlaif``, ``zoo.prm``); this file holds
the content-hashed cache, the loaders, and the pretrained base model they all start from.

A zoo call returns an artifact keyed by its config and by the source code of the modules that
make it. When it is missing, the call builds it (deterministically) and stores it; afterwards it
is loaded, not retrained. So every notebook runs on its own in a fresh kernel, and a test run
pays for each artifact once.

The cache lives in ``$RLHF_MINI_CACHE`` (default ``~/.cache/rlhf_mini``).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import tokenizers
import torch
import transformers
from transformers import AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from rlhf_mini import models, pretrain
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.models import ScalarHeadModel, load_pretrained
from rlhf_mini.worlds import arithmetic, assistant, base, sentiment

hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

CACHE_ENV = "RLHF_MINI_CACHE"
STAGES = ("sft", "reward", "ppo", "rejection_sampling", "dpo", "rlaif", "prm")


def __getattr__(name: str):
    # PEP 562: ``zoo.ppo`` imports the stage module on first use (the stages import this file)
    if name in STAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cache_dir() -> Path:
    """Where artifacts live: ``$RLHF_MINI_CACHE`` or ``~/.cache/rlhf_mini``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlhf_mini")


def artifact_key(config: dict, modules: list[ModuleType]) -> str:
    """A short hash of the config, of the source code that builds the artifact, and of the versions
    of the libraries whose floating-point details shape it (two environments sharing one cache,
    say the newest and the oldest supported transformers, each train their own)."""
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__}
    h = hashlib.sha256(json.dumps([config, versions], sort_keys=True, default=str).encode())
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


def load_tokenizer(profile: Profile | None = None) -> PreTrainedTokenizerFast:
    """The course tokenizer (byte-level BPE trained on the course corpus)."""
    tok = AutoTokenizer.from_pretrained(base_model_path(profile))
    tok.padding_side = "left"
    return tok


def load_policy(folder: str | Path) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """A saved language model (policy) and its tokenizer, on the course device, in eval mode."""
    model, tok = load_pretrained(folder)
    return model.to(get_device()).eval(), tok


def load_scalar_model(folder: str | Path) -> tuple[ScalarHeadModel, PreTrainedTokenizerFast]:
    """A saved reward model or verifier (``ScalarHeadModel``) and its tokenizer, on the course
    device, in eval mode."""
    tok = AutoTokenizer.from_pretrained(str(folder))
    tok.padding_side = "left"
    return ScalarHeadModel.from_pretrained(str(folder)).to(get_device()).eval(), tok


def cached_base_model(profile: Profile | None = None) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """The base language model pretrained on the course corpus, and its tokenizer."""
    return load_policy(base_model_path(profile))


def base_model_metrics(profile: Profile | None = None) -> list[dict]:
    """The base model's pretraining loss curve."""
    return json.loads((base_model_path(profile) / "metrics.json").read_text())
