"""Shared fixtures: a tiny tokenizer and GPT-2 built in seconds, and an isolated artifact cache."""

from __future__ import annotations

import numpy as np
import pytest

from rlhf_mini.config import get_profile
from rlhf_mini.models import new_policy, train_tokenizer
from rlhf_mini.worlds import get_world


@pytest.fixture(scope="session")
def tiny_profile():
    return get_profile("cpu").replace(n_layer=1, n_embd=32, n_head=2, vocab_size=400, n_ctx=96)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_profile):
    rng = np.random.default_rng(0)
    texts = []
    for name in ("assistant", "sentiment", "arithmetic"):
        texts += get_world(name).corpus(300, rng)
    return train_tokenizer(texts, tiny_profile.vocab_size)


@pytest.fixture()
def tiny_policy(tiny_profile, tiny_tokenizer):
    return new_policy(tiny_profile, tiny_tokenizer, seed=0).eval()


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_MINI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
