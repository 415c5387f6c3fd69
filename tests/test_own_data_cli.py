"""``python -m rlhf_mini {reward,sft,dpo} --data FILE`` on a small file written here, on one process
and under ``torchrun`` (CPU, gloo)."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from rlhf_mini.models import ScalarHeadModel, load_pretrained

TOPICS = ["the weather", "a soup recipe", "fixing a bike", "the history of tea", "learning to swim", "a good book",
          "planting tomatoes", "a rainy day"]


@pytest.fixture(scope="module")
def hh_file(tmp_path_factory):
    """HH-RLHF-style transcripts: the chosen reply helps, the rejected one refuses or rambles."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(96):
            topic = TOPICS[int(rng.integers(len(TOPICS)))]
            prompt = f"\n\nHuman: Can you tell me about {topic}?\n\nAssistant:"
            bad = ["No.", "I will not talk about that.", "Whatever, go away."][i % 3]
            chosen = "" if i == 5 else f" Happy to help: here are a few kind words about {topic}."
            fh.write(json.dumps({"chosen": prompt + chosen, "rejected": prompt + " " + bad}) + "\n")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # one thread per process: two ranks share the two cores of a laptop without oversubscribing them
    return {**os.environ, "RLHF_MINI_CACHE": str(tmp_path_factory.mktemp("cache")), "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


FAST = ["--pretrain-steps", "20", "--batch-size", "8"]


def run(args, env, nproc=0, timeout=600, script=None):
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        cmd = launcher + ([str(script)] if script else ["-m", "rlhf_mini"]) + args
    else:
        cmd = [sys.executable, "-m", "rlhf_mini", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_reward_on_own_data_writes_metrics_and_a_safetensors_checkpoint(tmp_path, hh_file, env):
    out = tmp_path / "rm"
    result = run(["reward", "--data", str(hh_file), "--out", str(out), "--max-steps", "30", *FAST], env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "eval_loss", "train_loss", "eval_rewards/chosen", "eval_rewards/margins"):
        assert key in metrics, key
    assert metrics["n_train"] + metrics["n_eval"] == 96 and metrics["n_eval"] == 10
    assert metrics["data_report"] == {"rows": 96, "skipped": 0, "empty_chosen": 1}  # loaded and counted
    assert len(metrics["steps"]) == 30 and metrics["steps"][-1]["rewards/accuracies"] > 0.5
    assert metrics["accuracy"] >= 0.8  # the two kinds of reply are easy to tell apart
    assert (out / "model.safetensors").exists()
    model = ScalarHeadModel.from_pretrained(out)
    assert model.config.n_layer == 2


def test_sft_and_dpo_on_own_data_from_a_local_model(tmp_path, hh_file, env, tiny_policy, tiny_tokenizer):
    start = tmp_path / "start"
    tiny_policy.save_pretrained(start)
    tiny_tokenizer.save_pretrained(start)
    for stage in ("sft", "dpo"):
        out = tmp_path / stage
        result = run([stage, "--data", str(hh_file), "--model", str(start), "--out", str(out), "--max-steps", "4",
                      "--batch-size", "8"], env)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert len(metrics["steps"]) == 4 and metrics["model"] == str(start)
        assert "eval_loss" in metrics if stage == "sft" else "accuracy" in metrics
        model, tokenizer = load_pretrained(out)
        assert model.config.n_embd == tiny_policy.config.n_embd


def test_bad_data_on_the_command_line_names_file_line_and_field(tmp_path, env):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    result = run(["reward", "--data", str(path), "--out", str(tmp_path / "x")], env)
    assert result.returncode == 2
    assert "bad.jsonl:2: field 'rejected' is missing" in result.stderr
    result = run(["ppo", "--data", str(path), "--out", str(tmp_path / "x")], env)
    assert result.returncode == 2 and "--data works with the reward, sft, dpo stages" in result.stderr


def test_two_processes_reach_the_parameters_of_one_with_the_same_global_batch(tmp_path, hh_file, env):
    args = ["reward", "--data", str(hh_file), "--max-steps", "4", *FAST]
    one = run([*args, "--out", str(tmp_path / "one")], env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = run([*args, "--out", str(tmp_path / "two")], env, nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
    start = ScalarHeadModel.from_language_model(
        load_pretrained(json.loads((tmp_path / "one" / "metrics.json").read_text())["backbone"])[0], seed=0)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    theta0 = {k: v.detach().numpy() for k, v in start.state_dict().items()}
    step_one = np.concatenate([(a[k] - theta0[k]).ravel() for k in sorted(a)])
    step_two = np.concatenate([(b[k] - theta0[k]).ravel() for k in sorted(a)])
    # The runs differ only in the order of floating-point sums (each rank pads and scores half the
    # pairs, DDP adds the halves' gradients): about 1e-7 relative in every gradient. Adam divides by
    # sqrt(v), which amplifies that noise only on the few coordinates whose gradient is nearly 0
    # (measured: 74 of 480k parameters differ by more than 1e-5; the whole update by 0.08 % in
    # norm). A missing gradient average or a wrong shard changes the update direction itself,
    # a difference of order 100 % in norm; 1 % separates the two by two orders of magnitude.
    assert np.abs(step_one).max() > 5e-4  # the parameters did move (4 warm-up steps)
    assert np.linalg.norm(step_one - step_two) / np.linalg.norm(step_one) < 1e-2
    losses = [[r["loss"] for r in json.loads((tmp_path / run_ / "metrics.json").read_text())["steps"]]
              for run_ in ("one", "two")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)  # every step's loss over the global batch


def test_a_crash_in_one_rank_ends_the_run_with_its_error(tmp_path, hh_file, env):
    script = tmp_path / "crash_rank_1.py"
    script.write_text(
        "import os, runpy, sys\n"
        "from rlhf_mini import reward\n"
        "if os.environ['RANK'] == '1':\n"
        "    def boom(*args, **kwargs):\n"
        "        raise RuntimeError('injected failure on rank 1')\n"
        "    reward.bradley_terry_loss = boom\n"
        "sys.argv[0] = 'rlhf_mini'\n"
        "runpy.run_module('rlhf_mini', run_name='__main__')\n")
    result = run(["reward", "--data", str(hh_file), "--out", str(tmp_path / "x"), "--max-steps", "20", *FAST],
                 env, nproc=2, script=script, timeout=300)  # a hang would hit the timeout and fail the test
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert not (tmp_path / "x" / "metrics.json").exists()
