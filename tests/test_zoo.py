import json

import transformers

from rlhf_mini import zoo
from rlhf_mini.worlds import base as world_base


def test_cached_builds_once_and_keys_on_config(isolated_cache):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights.txt").write_text("w")

    a = zoo.cached("thing", {"x": 1}, [world_base], build)
    b = zoo.cached("thing", {"x": 1}, [world_base], build)
    assert a == b and len(calls) == 1 and (a / "weights.txt").read_text() == "w"
    c = zoo.cached("thing", {"x": 2}, [world_base], build)
    assert c != a and len(calls) == 2
    assert json.loads((c / "config.json.zoo").read_text()) == {"x": 2}
    assert a.parent == isolated_cache


def test_failed_build_leaves_nothing_behind(isolated_cache):
    def broken(folder):
        (folder / "half.bin").write_text("...")
        raise RuntimeError("interrupted")

    try:
        zoo.cached("broken", {}, [], broken)
    except RuntimeError:
        pass
    assert not [p for p in isolated_cache.iterdir() if p.is_dir()]


def test_key_depends_on_code(isolated_cache):
    from rlhf_mini.worlds import assistant

    assert zoo.artifact_key({}, [world_base]) != zoo.artifact_key({}, [world_base, assistant])


def test_base_model_is_built_then_reused(isolated_cache, monkeypatch, tiny_profile):
    from rlhf_mini import pretrain

    calls = []
    real = pretrain.pretrain_base_model

    def counting(profile, **kw):
        calls.append(profile)
        return real(profile, progress=False)

    monkeypatch.setattr(pretrain, "pretrain_base_model", counting)
    small = tiny_profile.replace(name="tiny", corpus_docs=200, pretrain_steps=3, pretrain_batch=4, pretrain_seq=16)
    model, tok = zoo.cached_base_model(small)
    model2, _ = zoo.cached_base_model(small)
    assert len(calls) == 1
    assert model.config.n_layer == 1 and len(tok) == model.config.vocab_size
    assert len(zoo.base_model_metrics(small)) == 3


def test_artifact_key_follows_the_library_versions(monkeypatch):
    """A model trained under another transformers (make test-oldest, a GPU image) is another artifact."""
    key = zoo.artifact_key({"steps": 1}, [world_base])
    monkeypatch.setattr(transformers, "__version__", "5.0.0.test")
    assert zoo.artifact_key({"steps": 1}, [world_base]) != key
