"""rlhf_mini: the from-scratch package behind the RLHF 201 course.

``import rlhf_mini`` stays light (no torch): a submodule is imported the first time it is named,
so ``rlhf_mini.losses.bradley_terry_loss`` works as well as ``from rlhf_mini.losses import ...``.
"""

import importlib

__version__ = "0.1.0"

SUBMODULES = (
    "batch", "best_of_n", "cli_stages", "config", "constitution", "data", "distributed", "dpo", "eval",
    "exercises", "grpo", "kernels",
    "labelers", "labelstore", "logprobs", "losses", "models", "nbtools", "ppo", "pretrain", "prm",
    "rejection_sampling", "reward", "rlaif", "sampling", "scoring", "sft", "slides", "theory", "training",
    "utils", "verifiers", "widgets", "worlds", "zoo",
)


def __getattr__(name: str):
    # PEP 562: called only for names not yet set, i.e. submodules not imported so far
    if name in SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES])
