"""Throughput and peak memory of the course's training steps, side by side.

    python benchmarks/training.py                       # cpu profile, every stage
    python benchmarks/training.py --profile gpu --stages dpo ppo
    python benchmarks/training.py --vocab 50257         # GPT-2's vocabulary: where logits hurt

One optimizer step (forward, backward, AdamW) of:
    reward   Bradley–Terry reward model on chosen + rejected sequences
    ppo      policy log-probs at every response token + value model + clipped losses
    dpo      summed response log-probs of chosen and rejected + the DPO loss
each with the log-probs computed two ways: ``naive`` (the model's full [B, T, V] logits and a
log_softmax) and ``chunked`` (the output layer applied to chunks of response rows under
checkpointing, rlhf_mini.logprobs' default). The reward model has no vocabulary-sized output, so
it runs once. Every variant runs in its own process, so that peak memory (the process's VmHWM on
the CPU, torch.cuda.max_memory_allocated on a GPU) belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from rlhf_mini.config import get_device, get_profile  # noqa: E402
from rlhf_mini.logprobs import sequence_logprobs, token_logprobs  # noqa: E402
from rlhf_mini.losses import bradley_terry_loss, dpo_loss  # noqa: E402
from rlhf_mini.models import ScalarHeadModel  # noqa: E402
from rlhf_mini.ppo import ppo_policy_loss, ppo_value_loss  # noqa: E402

STAGES = ("reward", "ppo", "dpo")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_models(profile, vocab: int, device):
    config = GPT2Config(vocab_size=vocab, n_positions=profile.n_ctx, n_embd=profile.n_embd,
                        n_layer=profile.n_layer, n_head=profile.n_head, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).to(device), ScalarHeadModel(config).to(device)


def fake_batch(batch: int, length: int, prompt: int, vocab: int, device, seed: int = 0):
    """Left-padded token ids with a response mask: row i has i % 4 padding tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, length), generator=gen)
    attention = torch.ones(batch, length, dtype=torch.long)
    response = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        attention[i, : i % 4] = 0
        response[i, i % 4 + prompt:] = 1
    return ids.to(device), attention.to(device), response.to(device)


def build_step(stage: str, impl: str, profile, vocab: int, device):
    """A closure doing one optimizer step, and the number of tokens it processes."""
    policy, scalar = make_models(profile, vocab, device)
    batch, length, prompt = profile.batch_size, min(profile.n_ctx, 96), 32
    ids, attention, response = fake_batch(batch, length, prompt, vocab, device)
    ids_b, attention_b, response_b = fake_batch(batch, length, prompt, vocab, device, seed=1)
    if stage == "reward":
        optimizer = torch.optim.AdamW(scalar.parameters(), lr=1e-5)

        def step():
            loss = bradley_terry_loss(scalar.score(ids, attention), scalar.score(ids_b, attention_b))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step, 2 * int(attention.sum())

    if stage == "ppo":
        params = list(policy.parameters()) + list(scalar.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-5)
        with torch.no_grad():
            old_logprobs = token_logprobs(policy, ids, attention, impl=impl)
            old_values = scalar(ids, attention)
        advantages = torch.randn(batch, length, device=device)
        returns = torch.randn(batch, length, device=device)

        def step():
            logprobs = token_logprobs(policy, ids, attention, impl=impl)
            values = scalar(ids, attention)
            pg_loss, _ = ppo_policy_loss(logprobs, old_logprobs, advantages, response)
            loss = pg_loss + 0.1 * ppo_value_loss(values, old_values, returns, response)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step, int(attention.sum())

    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    with torch.no_grad():
        ref_chosen = sequence_logprobs(policy, ids, attention, response, impl=impl)
        ref_rejected = sequence_logprobs(policy, ids_b, attention_b, response_b, impl=impl)

    def step():
        chosen = sequence_logprobs(policy, ids, attention, response, impl=impl)
        rejected = sequence_logprobs(policy, ids_b, attention_b, response_b, impl=impl)
        losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1)
        optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()
        optimizer.step()
    return step, 2 * int(attention.sum())


def measure(stage: str, impl: str, profile_name: str, vocab: int | None, warmup: int,
            repeats: int) -> dict:
    profile = get_profile(profile_name)
    device = get_device()
    vocab = vocab or profile.vocab_size
    gpu = device.type == "cuda"
    # One throw-away step first: transformers loads modules lazily and torch starts its thread
    # pools on first use; none of that should count as the variant's memory.
    tiny_step, _ = build_step(stage, impl, profile.replace(n_layer=1, n_embd=16, n_head=2,
                                                           batch_size=2), 64, device)
    tiny_step()
    del tiny_step
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        base = _rss_kib("VmRSS") * 1024
    step, tokens = build_step(stage, impl, profile, vocab, device)
    for _ in range(warmup + 1):  # the first steps in a process are slow
        step()
    times = []
    for _ in range(repeats):
        if gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if gpu else _rss_kib("VmHWM") * 1024) - base
    seconds = statistics.median(times)
    return {"stage": stage, "impl": impl, "vocab": vocab, "tokens": tokens, "ms": seconds * 1e3,
            "tokens_per_s": tokens / seconds, "peak_mib": peak / 2**20,
            "device": torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default=None, help="cpu or gpu (default: follows the hardware)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--vocab", type=int, help="override the profile's vocabulary size")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=2, metavar=("STAGE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(measure(*args.worker, args.profile, args.vocab, args.warmup, args.repeats)))
        return
    # Each variant in a fresh process; glibc then maps every block over 1 MiB fresh, so the
    # high-water mark sees each variant's own allocations (see benchmarks/kernels.py).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    results = []
    for stage in args.stages:
        for impl in (("chunked",) if stage == "reward" else ("naive", "chunked")):
            cmd = [sys.executable, __file__, "--worker", stage, impl, "--warmup", str(args.warmup),
                   "--repeats", str(args.repeats)]
            cmd += ["--profile", args.profile] if args.profile else []
            cmd += ["--vocab", str(args.vocab)] if args.vocab else []
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{stage:>6} {impl:>8}: {row['tokens_per_s']:10.0f} tokens/s  "
                  f"{row['peak_mib']:8.1f} MiB", flush=True)
            results.append(row)

    print(f"\ndevice: {results[0]['device']}   profile: {args.profile or get_profile().name}   "
          f"vocab: {results[0]['vocab']}")
    print(f"{'stage':>6} {'impl':>8} {'ms/step':>9} {'tokens/s':>10} {'x naive':>8} "
          f"{'peak MiB':>9} {'x naive':>8}")
    for row in results:
        naive = next((r for r in results if r["stage"] == row["stage"] and r["impl"] == "naive"), row)
        print(f"{row['stage']:>6} {row['impl']:>8} {row['ms']:9.1f} {row['tokens_per_s']:10.0f} "
              f"{row['tokens_per_s'] / naive['tokens_per_s']:8.2f} {row['peak_mib']:9.1f} "
              f"{row['peak_mib'] / max(naive['peak_mib'], 1e-9):8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
