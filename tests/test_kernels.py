"""Tests for rlhf_mini.kernels: Triton kernels vs their PyTorch references vs naive full logits.

Without a GPU the Triton kernels run in Triton's CPU interpreter. Triton picks interpreted or
compiled mode for every `@triton.jit` function (its own library included) when triton is first
imported, so TRITON_INTERPRET=1 must be set before that. If something imported triton earlier in
this process (torch._dynamo does, through transformers, e.g. from a conftest), the kernel tests
run instead in a fresh Python process started with TRITON_INTERPRET=1.
With a GPU the same tests run the compiled kernels, plus a test at a realistic LM-head shape.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Can the Triton kernels run in this process: on a GPU, or in an interpreter switched on in time?
KERNELS_RUN_HERE = ON_GPU or os.environ.get("TRITON_INTERPRET") == "1"

import pytest  # noqa: E402

try:  # optional: the GPU machine may not have it
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:
    given = None

import rlhf_mini.kernels as K  # noqa: E402

DEVICE = "cuda" if ON_GPU else "cpu"
# Small tiles so that the test shapes span several vocabulary tiles, the last one partial.
# tl.dot needs every block dimension >= 16 on a GPU, so 16 is the floor here too.
SMALL_TILES = dict(block_n=16, block_v=32, block_d=16, num_warps=4)
# Tolerances (rtol; atol is rtol times the largest expected magnitude) per input dtype.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.fixture(scope="module", params=[("cublas", 3), ("fused_dz", 2), ("triton", 1)],
                ids=["split3-bwd-cublas", "split2-bwd-fused_dz", "split1-bwd-triton"])
def tiles(request):
    """Small tiles for the kernel tests, or a skip with the reason. Never falls back to the
    reference: the tests pass backend="triton", which raises if the kernel cannot run.
    All three backward schemes are tested; "cublas" and "fused_dz" with chunks of a few vocabulary
    columns, so that most test shapes span several chunks (N = 1 takes one). The forward runs with
    the vocabulary in up to 3 slices (the last one partial), up to 2, and in one."""
    pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot run")
    if not KERNELS_RUN_HERE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 could be set: this kernel test "
                    "runs in test_kernel_tests_in_fresh_interpreter_process instead")
    from rlhf_mini.kernels.triton_kernels import TileConfig

    backward, split_v = request.param
    return TileConfig(**SMALL_TILES, backward=backward, split_v=split_v, chunk_bytes=4 * 128 * 5)


@pytest.mark.skipif(KERNELS_RUN_HERE, reason="the kernel tests run in this process")
def test_kernel_tests_in_fresh_interpreter_process():
    pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot run")
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--noconftest",
               str(Path(__file__).resolve()), "-k", "not fresh_interpreter_process"]
    run = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"kernel tests failed in the interpreter:\n{run.stdout}\n{run.stderr}"
    assert "could be set" not in run.stdout, f"the child skipped kernel tests:\n{run.stdout}"


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, what: str) -> None:
    expected = expected.double()
    atol = tol * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.double(), expected, rtol=tol, atol=atol, msg=lambda m: f"{what}: {m}")


def make_head(n, d, v, dtype, seed=0, ignore=(), device=DEVICE):
    """Random hidden [n, d], head [v, d] (scaled so logits are O(1..3)) and targets with ignores."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=gen)
    weight = torch.randn(v, d, generator=gen) * (2.0 / d**0.5)
    targets = torch.randint(0, v, (n,), generator=gen)
    for i in ignore:
        targets[i] = -100
    return hidden.to(device, dtype), weight.to(device, dtype), targets.to(device)


def leaf(x, dtype=None):
    return x.detach().to(dtype or x.dtype).clone().requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# Naive full-logits versions (float64): the ground truth for the references
# ----------------------------------------------------------------------------------------------
def naive_stats(hidden, weight, targets, temperature=1.0):
    log_probs = (hidden @ weight.T / temperature).log_softmax(-1)
    valid = targets != -100
    logp = log_probs.gather(-1, targets.clamp(min=0)[:, None]).squeeze(-1) * valid
    entropy = -(log_probs.exp() * log_probs).sum(-1) * valid
    return logp, entropy


def naive_kl(logp, ref_logp, kind):
    log_r = ref_logp - logp
    return {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": log_r.exp() - 1 - log_r}[kind]


def test_references_match_naive_float64():
    n, d, v = 23, 12, 57
    hidden, weight, targets = make_head(n, d, v, torch.float64, ignore=(2, 9), device="cpu")
    ref_hidden, ref_weight, _ = make_head(n, 7, v, torch.float64, seed=1, device="cpu")
    g_logp, g_ent = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)

    h1, w1 = leaf(hidden), leaf(weight)
    logp, entropy = naive_stats(h1, w1, targets, temperature=0.8)
    ((logp * g_logp).sum() + (entropy * g_ent).sum()).backward()

    h2, w2 = leaf(hidden), leaf(weight)
    logp2, entropy2 = K.linear_logprob_stats_reference(
        h2, w2, targets, temperature=0.8, with_entropy=True, chunk_size=5)  # 5 chunks, last partial
    ((logp2 * g_logp).sum() + (entropy2 * g_ent).sum()).backward()

    for actual, expected, what in [(logp2, logp, "logp"), (entropy2, entropy, "entropy"),
                                   (h2.grad, h1.grad, "grad hidden"), (w2.grad, w1.grad, "grad W")]:
        assert_close(actual, expected, 1e-10, what)
    assert_close(K.naive_linear_logprobs(hidden, weight, targets, temperature=0.8), logp, 1e-10,
                 "naive_linear_logprobs")

    with torch.no_grad():
        ref_logp, _ = naive_stats(ref_hidden, ref_weight, targets, temperature=0.8)
    for kind in ("k1", "k2", "k3"):
        kl, _ = K.linear_kl_reference(hidden, weight, ref_hidden, ref_weight, targets, kind,
                                      temperature=0.8, chunk_size=5)
        assert_close(kl, naive_kl(logp, ref_logp, kind) * (targets != -100), 1e-10, kind)


# ----------------------------------------------------------------------------------------------
# Triton kernels vs the reference
# ----------------------------------------------------------------------------------------------
SHAPES = [  # (N, D, V, ignored rows): V not a multiple of 32, N = 1, a V that is, D not of 16
    (13, 32, 100, (0, 7)),
    (1, 16, 37, ()),
    (16, 24, 64, (15,)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-D{s[1]}-V{s[2]}")
def test_linear_logprobs_kernel_matches_reference(tiles, shape, dtype):
    n, d, v, ignore = shape
    hidden, weight, targets = make_head(n, d, v, dtype, ignore=ignore)
    upstream = torch.randn(n, device=DEVICE, dtype=torch.float64)
    h, w = leaf(hidden), leaf(weight)
    logp = K.linear_logprobs(h, w, targets, temperature=0.7, backend="triton", tiles=tiles)
    (logp.double() * upstream).sum().backward()
    assert logp.dtype == torch.float32 and logp.shape == (n,)
    assert h.grad.dtype == dtype and w.grad.dtype == dtype

    # The reference runs in float64 on the same (already rounded) inputs.
    h64, w64 = leaf(hidden, torch.float64), leaf(weight, torch.float64)
    expected = K.linear_logprobs(h64, w64, targets, temperature=0.7, backend="reference")
    (expected * upstream).sum().backward()

    tol = TOL[dtype]
    assert_close(logp, expected, tol, "logp")
    assert_close(h.grad, h64.grad, tol, "grad hidden")
    assert_close(w.grad, w64.grad, tol, "grad W")
    for i in ignore:
        assert logp[i].item() == 0.0 and h.grad[i].abs().max().item() == 0.0


@pytest.mark.parametrize(("kind", "dtype"), [("k1", torch.float32), ("k2", torch.float32),
                                             ("k3", torch.float32), ("k3", torch.bfloat16)])
def test_linear_kl_and_entropy_kernel_matches_reference(tiles, kind, dtype):
    n, d, d_ref, v = 11, 32, 16, 90
    hidden, weight, targets = make_head(n, d, v, dtype, ignore=(4,))
    ref_hidden, ref_weight, _ = make_head(n, d_ref, v, dtype, seed=1)
    g_kl = torch.randn(n, device=DEVICE, dtype=torch.float64)
    g_ent = torch.randn(n, device=DEVICE, dtype=torch.float64)

    h, w = leaf(hidden), leaf(weight)
    kl, entropy = K.linear_kl(h, w, ref_hidden, ref_weight, targets, kind, return_entropy=True,
                              backend="triton", tiles=tiles)
    ((kl.double() * g_kl).sum() + (entropy.double() * g_ent).sum()).backward()

    h64, w64 = leaf(hidden, torch.float64), leaf(weight, torch.float64)
    kl_ref, entropy_ref = K.linear_kl(h64, w64, ref_hidden.double(), ref_weight.double(), targets,
                                      kind, return_entropy=True, backend="reference")
    ((kl_ref * g_kl).sum() + (entropy_ref * g_ent).sum()).backward()

    tol = TOL[dtype]
    assert_close(kl, kl_ref, tol, f"{kind}")
    assert_close(entropy, entropy_ref, tol, "entropy")
    assert_close(h.grad, h64.grad, tol, "grad hidden")
    assert_close(w.grad, w64.grad, tol, "grad W")
    assert kl[4].item() == 0.0 and entropy[4].item() == 0.0
    if kind != "k1":
        assert (kl >= -1e-6).all(), "k2 and k3 are non-negative"


def test_vocabulary_slices_cover_the_vocabulary_without_an_empty_slice():
    pytest.importorskip("triton", reason="triton is not installed")
    if not KERNELS_RUN_HERE:
        pytest.skip("needs the kernels module; runs in the interpreter child process")
    from rlhf_mini.kernels.triton_kernels import TileConfig, _vocab_splits

    for v, split_v in [(90, 3), (37, 3), (64, 2), (50257, 7), (32, 5)]:
        tiles = TileConfig(**SMALL_TILES, split_v=split_v)
        splits, cols = _vocab_splits(8, v, torch.device("cpu"), tiles)
        assert cols % tiles.block_v == 0 and 1 <= splits <= split_v
        assert (splits - 1) * cols < v <= splits * cols, (v, split_v, splits, cols)
    assert _vocab_splits(8, 90, torch.device("cpu"), TileConfig(**SMALL_TILES))[0] == 1
    with pytest.raises(ValueError, match="split_v"):
        TileConfig(split_v=-1)


def test_backward_chunk_sizes():
    pytest.importorskip("triton", reason="triton is not installed")
    if not KERNELS_RUN_HERE:
        pytest.skip("needs the kernels module; runs in the interpreter child process")
    from rlhf_mini.kernels.triton_kernels import TileConfig, _chunk_cols

    # Defaults: 16 MiB of bf16 dz for "fused_dz", 64 MiB of fp32 logits for "cublas".
    assert _chunk_cols(8192, 50257, TileConfig(), element_bytes=2) == 1024
    assert _chunk_cols(8192, 50257, TileConfig(backward="cublas"), element_bytes=4) == 2048
    assert _chunk_cols(3000, 50257, TileConfig(), element_bytes=2) % 128 == 0  # aligned
    assert _chunk_cols(4, 100, TileConfig()) == 100  # one chunk holds the whole vocabulary
    assert _chunk_cols(13, 100, TileConfig(chunk_bytes=4 * 128 * 5)) == 49
    with pytest.raises(ValueError, match="chunk_bytes"):
        TileConfig(chunk_bytes=-1)


def test_kl_without_entropy_and_ignored_everything(tiles):
    hidden, weight, targets = make_head(5, 16, 40, torch.float32, ignore=range(5))
    h, w = leaf(hidden), leaf(weight)
    kl = K.linear_kl(h, w, hidden, weight, targets, "k3", backend="triton", tiles=tiles)
    logp = K.linear_logprobs(h, w, targets, backend="triton", tiles=tiles)
    (kl.sum() + logp.sum()).backward()
    assert kl.abs().max().item() == 0.0 and logp.abs().max().item() == 0.0
    assert h.grad.abs().max().item() == 0.0 and w.grad.abs().max().item() == 0.0


def test_no_rows(tiles):
    # e.g. a batch whose response masks select nothing: empty outputs, zero gradients, no division by N
    hidden, weight, targets = make_head(0, 16, 40, torch.float32)
    h, w = leaf(hidden), leaf(weight)
    logp = K.linear_logprobs(h, w, targets, backend="triton", tiles=tiles)
    kl, entropy = K.linear_kl(h, w, hidden, weight, targets, "k3", return_entropy=True, backend="triton", tiles=tiles)
    assert logp.shape == kl.shape == entropy.shape == (0,)
    (logp.sum() + kl.sum() + entropy.sum()).backward()
    assert h.grad.shape == (0, 16) and w.grad.abs().max().item() == 0.0


if given is not None:

    @settings(max_examples=4, deadline=None)
    @given(n=st.integers(1, 16), d=st.integers(16, 32), v=st.integers(17, 100),
           seed=st.integers(0, 2**16))
    def test_linear_logprobs_random_shapes(tiles, n, d, v, seed):
        hidden, weight, targets = make_head(n, d, v, torch.float32, seed=seed)
        logp = K.linear_logprobs(hidden, weight, targets, backend="triton", tiles=tiles)
        expected = K.naive_linear_logprobs(hidden.double(), weight.double(), targets)
        assert_close(logp, expected, TOL[torch.float32], "logp")

else:

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_linear_logprobs_random_shapes():
        pass


# ----------------------------------------------------------------------------------------------
# Sequence log-probs and preference losses, vs full logits
# ----------------------------------------------------------------------------------------------
def naive_sequence_logprobs(hidden, weight, input_ids, mask):
    log_probs = (hidden[:, :-1] @ weight.T).log_softmax(-1)
    token_logps = log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logps * mask[:, 1:]).sum(-1)


def make_pairs(b, t, d, v, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, v, (b, t), generator=gen)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):  # prompt of 2 + i tokens, then the response, then one pad for i > 0
        mask[i, 2 + i: t - (1 if i else 0)] = True
    return hidden, ids, mask


def test_sequence_logprobs_and_dpo_loss(tiles):
    b, t, d, v, beta = 3, 7, 32, 70, 0.3
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(v, d, generator=gen, dtype=torch.float64) * 0.35
    chosen_h, chosen_ids, chosen_mask = make_pairs(b, t, d, v, seed=4)
    rejected_h, rejected_ids, rejected_mask = make_pairs(b, t, d, v, seed=5)
    ref_chosen, ref_rejected = torch.randn(b, dtype=torch.float64), torch.randn(b, dtype=torch.float64)

    # Naive: full logits in float64.
    w1, hc1, hr1 = leaf(weight), leaf(chosen_h), leaf(rejected_h)
    pc = naive_sequence_logprobs(hc1, w1, chosen_ids, chosen_mask)
    pr = naive_sequence_logprobs(hr1, w1, rejected_ids, rejected_mask)
    margin = beta * ((pc - ref_chosen) - (pr - ref_rejected))
    naive_loss = -torch.nn.functional.logsigmoid(margin).mean()
    naive_loss.backward()

    # Fused: the Triton kernel in fp32.
    to32 = lambda x: leaf(x, torch.float32).to(DEVICE).detach().requires_grad_(True)
    w2, hc2, hr2 = to32(weight), to32(chosen_h), to32(rejected_h)
    seq = K.sequence_logprobs_fused(hc2, w2, chosen_ids.to(DEVICE), chosen_mask.to(DEVICE),
                                    backend="triton")
    assert_close(seq.cpu(), pc, 1e-5, "sequence log-probs")
    out = K.fused_dpo_loss(hc2, hr2, w2, chosen_ids.to(DEVICE), rejected_ids.to(DEVICE),
                           chosen_mask.to(DEVICE), rejected_mask.to(DEVICE),
                           ref_chosen.to(DEVICE), ref_rejected.to(DEVICE), beta=beta,
                           backend="triton")
    out.loss.backward()
    assert_close(out.loss.cpu(), naive_loss, 1e-5, "DPO loss")
    assert_close(out.chosen_rewards.cpu(), beta * (pc - ref_chosen), 1e-5, "chosen rewards")
    assert_close(w2.grad.cpu(), w1.grad, 1e-5, "grad W")
    assert_close(hc2.grad.cpu(), hc1.grad, 1e-5, "grad chosen hidden")
    assert_close(hr2.grad.cpu(), hr1.grad, 1e-5, "grad rejected hidden")
    assert hc2.grad[:, -1].abs().max().item() == 0.0, "the last position predicts nothing"


def test_bradley_terry_loss_matches_formula():
    chosen, rejected = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0, 1.5, -1.0])
    p_chosen_wins = torch.sigmoid(chosen - rejected - 0.25)
    expected = -(0.9 * p_chosen_wins.log() + 0.1 * (1 - p_chosen_wins).log()).mean()
    actual = K.bradley_terry_loss(chosen, rejected, margin=0.25, label_smoothing=0.1)
    assert_close(actual, expected, 1e-6, "Bradley-Terry loss")


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------
def test_dispatcher_is_explicit():
    with pytest.raises(ValueError, match="backend must be"):
        K.resolve_backend("fast", torch.device("cpu"))
    assert K.resolve_backend("reference", torch.device(DEVICE)) == "reference"
    hidden, weight, targets = make_head(4, 8, 10, torch.float32, device="cpu")
    targets[0] = 10  # out of the vocabulary
    with pytest.raises(ValueError, match="targets must lie in"):
        K.linear_logprobs(hidden, weight, targets, backend="reference")


def test_importing_rlhf_mini_does_not_import_triton():
    code = "import sys, rlhf_mini, rlhf_mini.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------------------------
# Real GPU: compiled kernels with the default tiles at an LM-head shape (GPT-2 small)
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (compiled kernels)")
@pytest.mark.parametrize("backward", ["cublas", "fused_dz", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_realistic_shape(dtype, backward, monkeypatch):
    pytest.importorskip("triton", reason="triton is not installed")
    # get_device() switches TF32 on for the process (training wants it): whichever test ran first,
    # the reference below must be a true fp32 matmul
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    from rlhf_mini.kernels.triton_kernels import TileConfig

    tiles = TileConfig(backward=backward)
    n, d, v = 4096, 768, 50257
    hidden, weight, targets = make_head(n, d, v, dtype, ignore=(0, 100, 4095))
    ref_hidden, ref_weight, _ = make_head(n, d, v, dtype, seed=1)
    upstream = torch.randn(n, device="cuda", dtype=torch.float32)

    h, w = leaf(hidden), leaf(weight)
    kl, entropy = K.linear_kl(h, w, ref_hidden, ref_weight, targets, "k3", return_entropy=True,
                              backend="triton", tiles=tiles)
    logp = K.linear_logprobs(h, w, targets, backend="triton", tiles=tiles)
    (logp * upstream + kl + 0.1 * entropy).sum().backward()

    # Reference in fp32 on the same inputs (fp32 matmul without TF32).
    h32, w32 = leaf(hidden, torch.float32), leaf(weight, torch.float32)
    kl_ref, entropy_ref = K.linear_kl(h32, w32, ref_hidden.float(), ref_weight.float(), targets,
                                      "k3", return_entropy=True, backend="reference")
    logp_ref = K.linear_logprobs(h32, w32, targets, backend="reference")
    (logp_ref * upstream + kl_ref + 0.1 * entropy_ref).sum().backward()

    tol = {torch.float32: 1e-4, torch.bfloat16: 2e-2}[dtype]  # fp32: sums over 50k terms
    assert_close(logp, logp_ref, tol, "logp")
    assert_close(kl, kl_ref, tol, "kl")
    assert_close(entropy, entropy_ref, tol, "entropy")
    assert_close(h.grad, h32.grad, tol, "grad hidden")
    assert_close(w.grad, w32.grad, tol, "grad W")
