"""Speed and memory of the LM-head log-prob paths, forward + backward, side by side.

    python benchmarks/kernels.py                       # CPU: N in {1k, 2k}, PyTorch paths only
    python benchmarks/kernels.py --n 1024 8192 --json results.json
    python benchmarks/kernels.py --peak-bw 3.35        # TB/s, if the card is not recognised

Variants (per-token log p(target) for hidden [N, D] and an LM head [V, D], then .sum().backward()):
    naive    torch linear + log_softmax + gather: materialises [N, V] logits
    chunked  rlhf_mini.kernels reference: row chunks under activation checkpointing
    fused    rlhf_mini.kernels default: fused Triton forward, "fused_dz" backward (GPU only)
    fused/*  with --sweep: the default with one tile setting changed (see SWEEP)
    teaching the all-Triton kernels, backward included, that chapter 16 reads: never more than a
             tile of logits, but not a contender for speed (on an H200 1.5-4.8x slower than naive:
             Triton's in-kernel matmuls run below cuBLAS, and its two gradient kernels each
             recompute the logits); measured so the cost of that simplicity stays visible
    liger    Liger-Kernel's fused linear cross-entropy with reduction="none" (if installed)

Peak memory is the extra memory above the inputs during one forward + backward: on GPU from
torch.cuda.max_memory_allocated, on CPU from the process's VmHWM (reset through
/proc/self/clear_refs), because tracemalloc does not see torch's allocations.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from rlhf_mini.kernels import linear_logprobs, naive_linear_logprobs  # noqa: E402

PEAK_BANDWIDTH_TBPS = {"H200": 4.8, "H100": 3.35, "A100": 2.0, "L40S": 0.864, "4090": 1.0}


def liger_logprobs_fn():
    """Per-token log-probs from Liger's fused linear cross-entropy, or None if unavailable."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss,
        )
        loss_fn = LigerFusedLinearCrossEntropyLoss(reduction="none")
    except Exception as error:  # not installed, or too old for reduction="none"
        return None, f"liger-kernel unavailable ({type(error).__name__}: {error})"
    return (lambda h, w, t: -loss_fn(w, h, t)), None


# Tile settings tried by --sweep, each as its own "fused/<name>" variant next to the default.
SWEEP = {
    "split1": dict(split_v=1),  # one program per row block, the whole vocabulary in one sweep
    "bn128": dict(block_n=128),
    "bv256": dict(block_v=256),
    "bd32": dict(block_d=32),
    "warps4": dict(num_warps=4),
    "dz2M": dict(chunk_bytes=1 << 21),  # smaller dz chunks: less memory, more launches
    "dz4M": dict(chunk_bytes=1 << 22),
    "dz8M": dict(chunk_bytes=1 << 23),
    "dz32M": dict(chunk_bytes=1 << 25),  # the default "fused_dz" backward, larger chunks
    "dz64M": dict(chunk_bytes=1 << 26),
    "cublas": dict(backward="cublas"),  # fp32 logits from cuBLAS, 64 MiB chunks
    "cublas16M": dict(backward="cublas", chunk_bytes=1 << 24),
    "cublas128M": dict(backward="cublas", chunk_bytes=1 << 27),
}


def variants(device: str, sweep: bool = False) -> tuple[dict, list[str]]:
    notes = []
    fns = {
        "naive": lambda h, w, t: naive_linear_logprobs(h, w, t),
        "chunked": lambda h, w, t: linear_logprobs(h, w, t, backend="reference"),
    }
    if device == "cuda" and importlib.util.find_spec("triton") is None:
        notes.append("triton is not installed: the fused kernels and Liger are not measured")
    elif device == "cuda":
        from rlhf_mini.kernels.triton_kernels import TileConfig

        all_triton = TileConfig(backward="triton")
        fns["fused"] = lambda h, w, t: linear_logprobs(h, w, t, backend="triton")
        fns["teaching"] = lambda h, w, t: linear_logprobs(h, w, t, backend="triton",
                                                            tiles=all_triton)
        for label, changes in (SWEEP.items() if sweep else ()):
            fns[f"fused/{label}"] = (lambda tiles: lambda h, w, t: linear_logprobs(
                h, w, t, backend="triton", tiles=tiles))(TileConfig(**changes))
        liger, note = liger_logprobs_fn()
        if liger is not None:
            fns["liger"] = liger
        else:
            notes.append(note)
    else:
        notes.append("fused Triton kernel and Liger: GPU only (CPU runs the PyTorch paths)")
    return fns, notes


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def cpu_rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_bytes(step, device: str) -> int:
    """Memory above the current level at the high-water mark of one call of step()."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    base = cpu_rss_kib("VmRSS")
    step()
    return (cpu_rss_kib("VmHWM") - base) * 1024


def median_seconds(step, device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_one(fn, n: int, args, device: str, dtype: torch.dtype) -> dict:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, args.d, generator=gen).to(device, dtype).requires_grad_()
    weight = (torch.randn(args.v, args.d, generator=gen) / args.d**0.5).to(device, dtype)
    weight.requires_grad_()
    targets = torch.randint(0, args.v, (n,), generator=gen).to(device)

    def step():
        hidden.grad = weight.grad = None
        fn(hidden, weight, targets).sum().backward()

    step()  # compile / warm caches before measuring memory
    hidden.grad = weight.grad = None
    peak = peak_extra_bytes(step, device)
    seconds = median_seconds(step, device, args.warmup, args.repeats)
    element = torch.finfo(dtype).bits // 8
    # Minimal traffic: forward reads h and W; backward reads them again and writes both grads.
    min_bytes = 3 * element * (n * args.d + args.v * args.d) + 2 * 4 * n
    return {"seconds": seconds, "peak_bytes": peak, "min_bytes": min_bytes,
            "tflops": 6 * n * args.v * args.d / seconds / 1e12}


def detect_peak_bandwidth(name: str) -> float | None:
    for key, tbps in PEAK_BANDWIDTH_TBPS.items():
        if key in name:
            return tbps
    return None


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def print_table(results: list[dict], peak_bw: float | None) -> None:
    header = (f"{'N':>6} {'variant':>15} {'time ms':>9} {'x naive':>8} {'peak MiB':>10} "
              f"{'x naive':>8} {'TFLOP/s':>8} {'GB/s':>8}" + ("  %peakBW" if peak_bw else ""))
    print("\n" + header + "\n" + "-" * len(header))
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        naive = next((r for r in rows if r["variant"] == "naive" and "error" not in r), None)
        for r in rows:
            if "error" in r:
                print(f"{n:>6} {r['variant']:>15}  {r['error']}")
                continue
            t_ratio = r["seconds"] / naive["seconds"] if naive else float("nan")
            m_ratio = r["peak_bytes"] / max(naive["peak_bytes"], 1) if naive else float("nan")
            gbps = r["min_bytes"] / r["seconds"] / 1e9
            line = (f"{n:>6} {r['variant']:>15} {r['seconds'] * 1e3:>9.2f} {t_ratio:>8.2f} "
                    f"{r['peak_bytes'] / 2**20:>10.1f} {m_ratio:>8.3f} {r['tflops']:>8.2f} "
                    f"{gbps:>8.1f}")
            if peak_bw:
                line += f"  {100 * gbps / (peak_bw * 1e3):>6.2f}%"
            print(line)


def check_targets(results: list[dict]) -> list[str]:
    """The goals for the fused kernel on an H100/H200, as PASS/FAIL lines."""
    def get(n, variant):
        return next((r for r in results if r["n"] == n and r["variant"] == variant
                     and "error" not in r), None)

    n_mem = 8192 if any(r["n"] == 8192 for r in results) else max(r["n"] for r in results)
    lines = []
    naive, fused = get(n_mem, "naive"), get(n_mem, "fused")
    if naive and fused:
        ok = fused["peak_bytes"] <= naive["peak_bytes"] / 4
        lines.append(f"{'PASS' if ok else 'FAIL'}  fused peak memory <= 1/4 of naive at N={n_mem}: "
                     f"{fused['peak_bytes'] / 2**20:.0f} vs {naive['peak_bytes'] / 2**20:.0f} MiB")
    for n in sorted({r["n"] for r in results}):
        naive, fused, liger = get(n, "naive"), get(n, "fused"), get(n, "liger")
        if naive and fused:
            ok = fused["seconds"] <= 1.05 * naive["seconds"]  # 5% for timing noise
            lines.append(f"{'PASS' if ok else 'FAIL'}  fused no slower than naive at N={n}: "
                         f"{fused['seconds'] * 1e3:.2f} vs {naive['seconds'] * 1e3:.2f} ms")
        if liger and fused:
            ok = fused["seconds"] <= 1.25 * liger["seconds"]
            lines.append(f"{'PASS' if ok else 'FAIL'}  fused within 1.25x of Liger at N={n}: "
                         f"{fused['seconds'] * 1e3:.2f} vs {liger['seconds'] * 1e3:.2f} ms")
            ok = fused["peak_bytes"] <= 1.25 * liger["peak_bytes"]
            lines.append(f"{'PASS' if ok else 'FAIL'}  fused peak memory within 1.25x of Liger at "
                         f"N={n}: {fused['peak_bytes'] / 2**20:.0f} vs "
                         f"{liger['peak_bytes'] / 2**20:.0f} MiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", help="token counts (default: GPU 1k..32k, "
                        "CPU 1k and 2k)")
    parser.add_argument("--v", type=int, default=50257, help="vocabulary size")
    parser.add_argument("--d", type=int, default=768, help="hidden size")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], help="default: bf16 GPU, fp32 CPU")
    parser.add_argument("--variants", nargs="+", help="subset of naive chunked fused teaching "
                        "liger (and fused/<name> with --sweep)")
    parser.add_argument("--warmup", type=int, help="untimed runs after the first (default: GPU 3, CPU 0)")
    parser.add_argument("--repeats", type=int, help="timed runs (default: GPU 10, CPU 3)")
    parser.add_argument("--peak-bw", type=float, help="card's peak memory bandwidth in TB/s")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sweep", action="store_true", help="GPU: also time the fused kernel "
                        "with each tile setting in SWEEP")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # glibc keeps freed blocks under its mmap threshold (which grows up to 32 MiB) and hands
        # them out again, unseen by VmHWM: later variants would read low. Restart with every
        # block over 1 MiB mmap'd, so each allocation is fresh pages and each free returns them.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    gpu = device == "cuda"
    args.n = args.n or ([1024, 2048, 4096, 8192, 16384, 32768] if gpu else [1024, 2048])
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 0)
    args.repeats = args.repeats or (10 if gpu else 3)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype or ("bf16" if gpu else "fp32")]
    name = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    peak_bw = args.peak_bw or (detect_peak_bandwidth(name) if gpu else None)

    fns, notes = variants(device, sweep=args.sweep)
    if args.variants:
        fns = {k: v for k, v in fns.items() if k in args.variants}
    print(f"device: {name}   dtype: {dtype}   V={args.v} D={args.d}   "
          f"peak bandwidth: {f'{peak_bw} TB/s' if peak_bw else 'unknown (pass --peak-bw)'}")
    for note in notes:
        print("note:", note)

    results = []
    for n in args.n:
        for variant, fn in fns.items():
            row = {"n": n, "variant": variant}
            try:
                row.update(bench_one(fn, n, args, device, dtype))
                print(f"N={n:>6} {variant:>15}: {row['seconds'] * 1e3:9.2f} ms  "
                      f"{row['peak_bytes'] / 2**20:9.1f} MiB", flush=True)
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
            finally:
                if gpu:
                    torch.cuda.empty_cache()
            results.append(row)

    print_table(results, peak_bw)
    if gpu:
        print()
        for line in check_targets(results):
            print(line)
    if args.json:
        payload = {"device": name, "dtype": str(dtype), "v": args.v, "d": args.d,
                   "peak_bw_tbps": peak_bw, "results": results}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
