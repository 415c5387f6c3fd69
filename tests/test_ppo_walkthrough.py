"""Chapter 9's one-iteration walk-through and ``train_ppo`` cannot drift apart: the chapter's own
cells (its imports, its exercise solutions, the two walk-through cells) run on tiny models, and one
iteration of ``train_ppo`` from the same start must leave the same weights and the same β."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_mini import ppo
from rlhf_mini.exercises.notebooks import is_exercise
from rlhf_mini.models import ScalarHeadModel, reference_copy
from rlhf_mini.ppo import PPOConfig, train_ppo, value_model_from_reward_model
from rlhf_mini.training import load_trainer_state
from rlhf_mini.worlds import get_world
from rlhf_mini.zoo.ppo import CHAPTER_RECIPE

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "09_ppo.ipynb"
TAG = "ppo-walkthrough"


def chapter_cells() -> tuple[str, list[str], list[str]]:
    """The chapter's imports cell, its exercise cells and its walk-through cells, as source."""
    cells = [c for c in json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    source = lambda cell: "".join(cell["source"])  # noqa: E731
    exercises = [source(c) for c in cells if is_exercise(c)]
    walkthrough = [source(c) for c in cells if TAG in c["metadata"].get("tags", [])]
    return source(cells[0]), exercises, walkthrough


def test_the_walkthrough_calls_the_pieces_directly() -> None:
    _, exercises, walkthrough = chapter_cells()
    assert 2 <= len(walkthrough) <= 3
    text = "\n".join(walkthrough)
    for call in ("ppo.rollout(", "ppo.per_token_rewards(", "compute_gae(", "ppo.minibatches(",
                 "ppo_policy_loss(", "ppo_value_loss(", "optimizer_step(", "adaptive_kl_update("):
        assert call in text, call
    for name in ("compute_gae", "ppo_policy_loss", "ppo_value_loss", "adaptive_kl_update"):
        assert any(f"def {name}(" in cell for cell in exercises), name
        # the chapter's own (the student's) functions, not the package's
        assert f"ppo.{name}(" not in text, name


@pytest.fixture()
def start(tiny_policy):
    """One initial state: the policy, and a reward model that scores and starts the value model."""
    reward_model = ScalarHeadModel.from_language_model(tiny_policy, seed=1).eval()
    for p in reward_model.parameters():
        p.requires_grad_(False)

    def models():
        policy = copy.deepcopy(tiny_policy)
        rm = copy.deepcopy(reward_model)
        return policy, reference_copy(policy), rm, value_model_from_reward_model(rm)

    return models


def test_one_notebook_iteration_is_one_trainer_iteration(start, tiny_tokenizer, tmp_path, capsys) -> None:
    world = get_world("assistant")
    prompts = world.prompts(64, seed=0, split="train")
    # the chapter's recipe and walk-through settings, at the tiny models' scale
    config = PPOConfig(**{**CHAPTER_RECIPE, "rollout_batch": 8, "mini_batch": 4, "max_new_tokens": 8,
                          "whiten_rewards": False, "learning_rate": 1e-3, "max_steps": 1})
    imports, exercises, walkthrough = chapter_cells()

    # the notebook: its imports, the student's functions, then the walk-through's cells
    policy, ref_policy, reward_model, value_model = start()
    before = [p.detach().clone() for p in policy.parameters()]
    namespace: dict = {"__name__": "__walkthrough__"}
    exec(compile(imports, "09_ppo[imports]", "exec"), namespace)
    for i, cell in enumerate(exercises):
        exec(compile(cell, f"09_ppo[exercise {i}]", "exec"), namespace)
    assert namespace["compute_gae"] is not ppo.compute_gae
    namespace.update(policy=policy, ref_policy=ref_policy, reward_model=reward_model, value_model=value_model,
                     tokenizer=tiny_tokenizer, world=world, prompts=prompts, config=config)
    for i, cell in enumerate(walkthrough):
        exec(compile(cell, f"09_ppo[walk-through {i}]", "exec"), namespace)
    assert "approx KL" in capsys.readouterr().out

    # the trainer, from the same start
    t_policy, t_ref, t_rm, t_value = start()
    _, metrics = train_ppo(config, t_policy, t_ref, t_rm, t_value, tiny_tokenizer, world, prompts,
                           checkpoint_dir=tmp_path, checkpoint_every=1, progress=False)

    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(policy.parameters(), before))
    assert moved > 1e-4, "the walk-through did not update the policy"
    for mine, theirs in ((policy, t_policy), (value_model, t_value)):
        for (name, a), b in zip(mine.named_parameters(), theirs.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    log, row = namespace["log"], metrics[0]
    assert len(log) == config.ppo_epochs * config.rollout_batch // config.mini_batch
    for key, column in (("loss/policy", "policy loss"), ("loss/value", "value loss"),
                        ("policy/approx_kl", "approx KL"), ("policy/clipfrac", "clipfrac")):
        assert np.mean([entry[column] for entry in log]) == pytest.approx(row[key], abs=1e-6), key
    explained = ppo.explained_variance(namespace["ro"].values, namespace["returns"], namespace["mask"])
    assert explained == pytest.approx(row["val/explained_variance"], abs=1e-6)
    assert namespace["beta"] == row["beta"]
    assert namespace["next_beta"] == pytest.approx(load_trainer_state(tmp_path / "iter_1")["beta"], rel=1e-12)
