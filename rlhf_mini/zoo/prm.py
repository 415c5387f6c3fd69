"""The cached verifiers of the arithmetic world: their training solutions (drawn once, shared by the
PRM and the ORM of a data source) and the trained PRM and ORM."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from rlhf_mini import batch, models, prm, sampling, training
from rlhf_mini.config import Profile, get_device, get_profile
from rlhf_mini.models import ScalarHeadModel
from rlhf_mini.prm import (
    MISTAKES,
    VerifierConfig,
    VerifierDataConfig,
    parity_balanced,
    sample_solutions,
    train_verifier,
)
from rlhf_mini.utils import set_seed
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo import cached, load_scalar_model
from rlhf_mini.zoo.sft import sft_policy, sft_policy_path


def cached_generator_policy(profile: Profile | None = None):
    """The policy that writes solutions: the arithmetic SFT policy and its tokenizer."""
    return sft_policy("arithmetic", profile)


def training_solutions_path(profile: Profile | None = None, source: str = "world",
                            mistakes: str = "miscalculation") -> Path:
    """The folder of the cached training solutions (``solutions.jsonl``: one ``prompt``/``response``
    object per line) that the PRM and the ORM of ``source`` and ``mistakes`` both train on.

    Drawn once and shared by the two kinds: from the world's solver it takes seconds, but from the
    SFT policy (``source="sft"``) it is the slow part, about 100,000 sampled solutions on the gpu
    profile. Parity-balanced when ``VerifierDataConfig.balance_parity`` says so.
    """
    if source not in ("world", "sft"):
        raise ValueError(f"source must be 'world' or 'sft', got {source!r}")
    if mistakes not in MISTAKES or (source == "sft" and mistakes != "miscalculation"):
        raise ValueError(f"mistakes must be one of {MISTAKES} (the SFT policy makes its own), got {mistakes!r}")
    profile = profile or get_profile()
    data_config = VerifierDataConfig.from_profile(profile, source=source, mistakes=mistakes)
    world = get_world("arithmetic")

    def build(folder: Path) -> None:
        policy, tok = cached_generator_policy(profile) if source == "sft" else (None, None)
        prompts = world.prompts(data_config.n_prompts, seed=data_config.seed, split="train")
        solutions = sample_solutions(world, prompts, data_config.samples_per_prompt, model=policy, tokenizer=tok,
                                     max_new_tokens=data_config.max_new_tokens,
                                     temperature=data_config.temperature, seed=data_config.seed,
                                     mistakes=data_config.mistakes)
        flat_prompts = [p for p, s in zip(prompts, solutions) for _ in s]
        flat = [r for s in solutions for r in s]
        if data_config.balance_parity:
            keep = parity_balanced(world, flat_prompts, flat)
            flat_prompts, flat = [flat_prompts[i] for i in keep], [flat[i] for i in keep]
        with open(folder / "solutions.jsonl", "w") as f:
            for prompt, response in zip(flat_prompts, flat):
                f.write(json.dumps({"prompt": prompt, "response": response}) + "\n")

    key = asdict(data_config)
    if source == "sft":  # the world's solver needs no model
        key["generator"] = sft_policy_path("arithmetic", profile).name
    name = f"verifier-data-arithmetic-{profile.name}-{source}" + ("" if mistakes == "miscalculation" else f"-{mistakes}")
    return cached(name, key, [sys.modules[__name__], prm, sampling], build)


def training_solutions(profile: Profile | None = None, source: str = "world",
                       mistakes: str = "miscalculation") -> tuple[list[str], list[str]]:
    """``(prompts, responses)``: the cached training solutions of ``training_solutions_path``."""
    rows = [json.loads(line) for line in
            (training_solutions_path(profile, source, mistakes) / "solutions.jsonl").read_text().splitlines()]
    return [r["prompt"] for r in rows], [r["response"] for r in rows]


def verifier_path(kind: str = "prm", profile: Profile | None = None, source: str = "world",
                  mistakes: str = "miscalculation") -> Path:
    """The folder of the cached PRM or ORM (built on first use from the SFT body).

    Both kinds train on the same solutions (``training_solutions``), for the same steps, from the
    same initialisation. ``mistakes`` picks the world solver's slips (``VerifierDataConfig.mistakes``).
    """
    profile = profile or get_profile()
    data_path = training_solutions_path(profile, source, mistakes)  # validates source and mistakes
    config = VerifierConfig.from_profile(profile, kind=kind)
    world = get_world("arithmetic")
    gen_path = sft_policy_path("arithmetic", profile)

    def build(folder: Path) -> None:
        set_seed(config.seed)
        policy, tok = cached_generator_policy(profile)
        flat_prompts, flat = training_solutions(profile, source, mistakes)
        model = ScalarHeadModel.from_language_model(policy, seed=config.seed).to(get_device())
        result = train_verifier(config, model, tok, world, flat_prompts, flat)
        result.model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "metrics.json").write_text(json.dumps(result.metrics))

    key = {"kind": kind, "generator": gen_path.name, "data": data_path.name, **asdict(config)}
    name = f"{kind}-arithmetic-{profile.name}" + ("" if mistakes == "miscalculation" else f"-{mistakes}")
    return cached(name, key, [sys.modules[__name__], prm, batch, models, sampling, training], build)


def cached_verifier(kind: str = "prm", profile: Profile | None = None, source: str = "world",
                    mistakes: str = "miscalculation"):
    """The cached PRM (``kind="prm"``) or ORM (``"orm"``) and its tokenizer."""
    return load_scalar_model(verifier_path(kind, profile, source, mistakes))


def verifier_metrics(kind: str = "prm", profile: Profile | None = None, source: str = "world",
                     mistakes: str = "miscalculation") -> list[dict]:
    """Per-step training metrics of the cached verifier."""
    return json.loads((verifier_path(kind, profile, source, mistakes) / "metrics.json").read_text())
