"""`python -m rlhf_mini STAGE --out DIR` writes metrics.json and a loadable checkpoint.

The tests marked ``stage`` run each stage end to end on the cpu profile's real models (base, SFT,
reward model, PPO, DPO, rejection sampling, RLAIF, chapter 12's PRM and ORM, chapter 13's start
policy). ``make test`` runs them after the notebooks, which have trained those models into the
shared artifact cache, so a test run pays for each model once; run alone (``make stages``), they
train what is missing. ``make unit`` leaves them out and keeps the argument checks below.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from transformers import AutoTokenizer

from rlhf_mini.models import ScalarHeadModel, load_pretrained


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_mini", *args], capture_output=True, text=True)


@pytest.mark.stage
def test_sft_stage_writes_metrics_and_checkpoint(tmp_path):
    out = tmp_path / "sft"
    result = run_cli("sft", "--task", "assistant", "--profile", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) > 10 and "loss" in metrics[0]
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    model, tokenizer = load_pretrained(out)
    assert model.config.n_layer == 2 and tokenizer.pad_token == "<|pad|>"


@pytest.mark.stage
def test_rlaif_stage_writes_the_policy_and_the_judge_labels(tmp_path):
    result = run_cli("rlaif", "--task", "assistant", "--profile", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_pairs"] == 2000
    for pairs in ("policy_pairs", "shipped_pairs"):
        assert 0.5 < metrics["agreement"][pairs]["agreement"] < 1.0, pairs
    labels = (tmp_path / "assistant_ai_labels.jsonl").read_text().splitlines()
    assert len(labels) == 2000 and json.loads(labels[0])["labeler"] == "ai"
    assert len(metrics["steps"]) > 10 and "rewards/accuracies" in metrics["steps"][-1]
    model, tokenizer = load_pretrained(tmp_path)
    assert model.config.n_layer == 2 and tokenizer.pad_token == "<|pad|>"


@pytest.mark.stage
def test_eval_stage_ranks_every_policy(tmp_path):
    # trains the stages' policies into the shared cache when they are missing (a few minutes the
    # first time); the chapters then reuse them
    result = run_cli("eval", "--task", "assistant", "--profile", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    board = {row["policy"]: row for row in metrics["leaderboard"]}
    assert set(board) == {"base", "sft", "ppo", "best-of-16", "rs", "dpo", "rlaif"}
    elos = [row["elo"] for row in metrics["leaderboard"]]
    assert elos == sorted(elos, reverse=True)
    for name, win in metrics["win_rate_vs_sft"].items():
        assert win["ci_low"] <= win["win_rate"] <= win["ci_high"], name
    # every stage's policy beats the pretrained model it started from, by the gold reward
    assert all(board[name]["elo"] > board["base"]["elo"] for name in board if name != "base")
    assert all(metrics["win_rate_vs_sft"][name]["win_rate"] > 0.5 for name in ["ppo", "dpo", "best-of-16"])
    # chapter 14's rubric judge agrees on the direction: the aligned policies above SFT, base below,
    # with and without length control
    judged = metrics["ai_judge_vs_sft"]
    assert set(judged) == set(metrics["win_rate_vs_sft"])
    for name in ["ppo", "dpo", "best-of-16", "rlaif"]:
        for kind in ("raw", "length_controlled"):
            assert judged[name][kind]["ci_low"] > 0.5, (name, kind, judged[name][kind])
    assert judged["base"]["raw"]["ci_high"] < 0.5
    # MT-Bench-style turns: every trained policy scores above base on both turns
    mt = metrics["mt_bench"]
    assert set(mt) == {"base", "sft", "ppo", "rs", "dpo", "rlaif"}
    for name in ["sft", "ppo", "rs", "dpo", "rlaif"]:
        assert mt[name]["turn1"] > mt["base"]["turn1"] and mt[name]["turn2"] > mt["base"]["turn2"], name


@pytest.mark.stage
@pytest.mark.parametrize("stage, learned", [
    # after the eval stage these copy the cached policies; run alone, each trains its stage first
    ("reward", lambda m: np.mean([r["rewards/accuracies"] for r in m[-10:]]) > np.mean([r["rewards/accuracies"] for r in m[:10]])),
    ("ppo", lambda m: m[-1]["gold"] > m[0]["gold"] and m[-1]["objective/scores"] > m[0]["objective/scores"]),
    ("dpo", lambda m: m[-1]["loss"] < m[0]["loss"] and m[-1]["rewards/margins"] > 0),
    # chapter 10: the RM score compounds over the rounds; the gold reward rose in round 1 only
    ("rs", lambda m: m[-1]["rm"] > m[0]["rm"] and max(r["gold"] for r in m[1:]) > m[0]["gold"]),
])
def test_training_stages_write_metrics_and_a_loadable_checkpoint(tmp_path, stage, learned):
    result = run_cli(stage, "--task", "assistant", "--profile", "cpu", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["stage"] == stage
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert isinstance(metrics, list) and len(metrics) >= 3
    assert learned(metrics), metrics[-1]
    if stage == "reward":
        model = ScalarHeadModel.from_pretrained(tmp_path)
        tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    else:
        model, tokenizer = load_pretrained(tmp_path)
    assert model.config.n_layer == 2 and tokenizer.pad_token == "<|pad|>"


@pytest.mark.stage
def test_prm_stage_writes_both_verifiers(tmp_path):
    # trains chapter 12's PRM and ORM into the shared cache when missing (about five minutes)
    result = run_cli("prm", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"prm", "orm"}
    for kind in ("prm", "orm"):
        steps = metrics[kind]
        assert np.mean([r["loss"] for r in steps[-50:]]) < np.mean([r["loss"] for r in steps[:50]]), kind
        labels = steps[-1]["labels_per_solution"]  # a PRM learns from every step, an ORM from the answer
        assert (labels > 1) if kind == "prm" else (labels == 1), kind
        model = ScalarHeadModel.from_pretrained(tmp_path / kind)
        assert model.config.n_layer == 2


@pytest.mark.stage
def test_bon_stage_writes_every_n_and_the_pool(tmp_path):
    from rlhf_mini.best_of_n import load_best_of_n_sweep

    result = run_cli("bon", "--task", "assistant", "--profile", "cpu", "--n", "1", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "metrics.json").read_text())["rows"]
    assert [row["n"] for row in rows] == [1, 4]
    assert rows[0]["kl_measured"] == pytest.approx(0.0, abs=1e-12)
    # best-of-4 under the reward model: the proxy rises, and the KL is near log 4 − 3/4 (ties lower it)
    assert rows[1]["proxy"] > rows[0]["proxy"]
    assert 0.8 * rows[1]["kl_analytic"] < rows[1]["kl_measured"] <= rows[1]["kl_analytic"] + 0.01
    sweep = load_best_of_n_sweep(tmp_path)
    assert sweep.proxy.shape == (128, 8) and sweep.metrics == rows


@pytest.mark.stage
def test_grpo_stage_writes_trl_metrics_and_a_checkpoint(tmp_path):
    # two steps of Dr. GRPO from chapter 13's start policy (trained into the shared cache the first time)
    result = run_cli("grpo", "--task", "arithmetic", "--profile", "cpu", "--out", str(tmp_path),
                     "--loss-type", "dr_grpo", "--grpo-steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["step"] for row in metrics] == [1, 2]
    for key in ("reward", "reward_std", "frac_reward_zero_std", "completion_length", "kl", "eval/accuracy"):
        assert np.isfinite(metrics[-1][key]), key
    model, tokenizer = load_pretrained(tmp_path)
    assert model.config.n_layer == 2 and tokenizer.pad_token == "<|pad|>"


def run_main(args, capsys) -> tuple[int, str, str]:
    """``python -m rlhf_mini ARGS`` in this process: for argument checks, which end before any work,
    a subprocess would spend its seconds importing torch (the stage tests above run the real command)."""
    from rlhf_mini.__main__ import main

    try:
        code = main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_grpo_help_lists_the_methods(capsys):
    code, out, _ = run_main(["grpo", "--help"], capsys)
    assert code == 0 and "dr_grpo" in out and "--grpo-steps" in out


@pytest.mark.parametrize("args, message", [
    (["sft", "--task", "chess", "--out", "x"], "--task must be one of"),
    (["fly", "--out", "x"], "invalid choice"),
    (["sft"], "the following arguments are required: --out"),
    (["rlaif", "--task", "sentiment", "--out", "x"], "works on --task assistant only"),
    (["prm", "--task", "assistant", "--out", "x"], "works on --task arithmetic only"),
    (["bon", "--n", "0", "4", "--out", "x"], "--n values must be >= 1"),
    (["prm", "--mistakes", "typo", "--out", "x"], "argument --mistakes: invalid choice"),
    (["grpo", "--task", "assistant", "--out", "x"], "works on --task arithmetic only"),
    (["grpo", "--loss-type", "sigmoid", "--out", "x"], "--loss-type for the grpo stage must be one of"),
    (["dpo", "--loss-type", "dapo", "--out", "x"], "--loss-type for the dpo stage must be one of"),
])
def test_bad_arguments_are_clear(args, message, capsys):
    code, _, err = run_main(args, capsys)
    assert code == 2 and message in err
