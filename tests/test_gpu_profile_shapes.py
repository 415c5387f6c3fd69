"""The ``gpu`` profile's shapes, checked on the CPU.

The ``gpu`` profile (GPT-2 small: 12 layers, 768 wide, 12 heads, a 4096-entry vocabulary, 256
positions) only runs where there is a GPU, so a shape or dtype error at that scale (a tensor sized
by the cpu profile's 128 positions or 1024-entry vocabulary, a position index past 255, a float64
or int tensor reaching the optimizer) would otherwise first show up on a rented machine. This file
guards against that without one:

* the full-shape model is built on the ``meta`` device (no memory allocated) from the package's own
  ``make_config``/``new_policy``, and its shape fields and parameter count are checked;
* a stand-in of the same width, heads, vocabulary and context but one layer
  (``profile.replace(n_layer=1)``) runs ONE optimizer step of every training stage with the
  package's real trainers and the gpu profile's configs (``*.from_profile``): SFT, the
  Bradley–Terry reward model, PPO, DPO, the PRM verifier, rejection sampling's fine-tune, RLAIF
  (DPO on rubric-judged pairs) and GRPO (chapter 13's gpu recipe). Each step must give a finite
  loss and move every parameter while keeping its dtype and shape. Where a stage accepts long inputs, one row fills the whole 256-token
  context, so the last position embedding (255) is used.

Batch sizes are smaller than the profile's (64 for SFT/RM/DPO, 128 for the verifier and the PPO
rollout): a full gpu batch at 256 tokens takes about 16 s per step on 2 cores. The sequence lengths,
width, heads and vocabulary are the profile's.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_mini.config import get_profile
from rlhf_mini.dpo import DPOConfig, on_policy_pairs, train_dpo
from rlhf_mini.models import (
    ScalarHeadModel,
    make_config,
    new_policy,
    reference_copy,
    train_tokenizer,
)
from rlhf_mini.ppo import PPOConfig, train_ppo, value_model_from_reward_model
from rlhf_mini.prm import VerifierConfig, encode_solutions, train_verifier
from rlhf_mini.rejection_sampling import RSConfig, train_rejection_sampling
from rlhf_mini.reward import RewardConfig, train_reward_model
from rlhf_mini.rlaif import ai_judge
from rlhf_mini.sft import SFTConfig, train_sft
from rlhf_mini.worlds import WORLDS, get_world

# GPT-2 small has 124,439,808 parameters with its 50,257-entry vocabulary and 1,024 positions;
# the gpu profile keeps the 12 blocks and ln_f and shrinks the two embeddings.
GPT2_SMALL_PARAMS = 124_439_808
SMALL_BATCH = 8
"""rows per step instead of the profile's 64 (see the module docstring)"""


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu():
    return get_profile("gpu")


@pytest.fixture(scope="module")
def standin(gpu):
    """The gpu profile with one block: same width, heads, vocabulary and context."""
    return gpu.replace(n_layer=1)


@pytest.fixture(scope="module")
def tokenizer(gpu):
    """A BPE with exactly the profile's vocabulary size.

    ``make_config`` sizes the embedding from ``len(tokenizer)``, so the tokenizer must have 4096
    entries for the model to have the profile's embedding. The worlds' text is templated: a BPE
    trained on it saturates well below 4096 merges (about 1.2k on this sample; 2115 even on the
    gpu profile's full 180k-document pretraining corpus), so the rest of the vocabulary is filled
    with added tokens that never occur in the text. Tokenizing the corpus is unchanged; the
    embedding, the LM head and the logits get the profile's shape.
    """
    rng = np.random.default_rng(0)
    texts = []
    for name in sorted(WORLDS):
        texts += get_world(name).corpus(300, rng)
    tok = train_tokenizer(texts, gpu.vocab_size)
    trained = len(tok)
    assert trained <= gpu.vocab_size
    tok.add_tokens([f"<|unused_{i}|>" for i in range(gpu.vocab_size - trained)])
    assert len(tok) == gpu.vocab_size
    return tok


@pytest.fixture(scope="module")
def demos():
    return get_world("assistant").demonstrations(64, seed=0)


@pytest.fixture(scope="module")
def long_response(demos, tokenizer, gpu):
    """A response longer than the whole context: rows holding it are cut to exactly n_ctx tokens."""
    text = " ".join(d["response"] for d in demos)
    assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) > 2 * gpu.n_ctx
    return text


def snapshot(*models: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{name}": p.detach().clone()
            for i, m in enumerate(models) for name, p in m.named_parameters()}


def assert_stepped(before: dict[str, torch.Tensor], *models: torch.nn.Module,
                   exempt: frozenset[str] = frozenset()) -> None:
    """Every parameter moved (those in ``exempt`` may not), and none changed its dtype or shape
    or stopped being finite."""
    after = {f"{i}.{name}": p.detach() for i, m in enumerate(models) for name, p in m.named_parameters()}
    assert after.keys() == before.keys()
    assert exempt <= before.keys()
    for name, old in before.items():
        new = after[name]
        assert new.dtype == old.dtype == torch.float32, (name, old.dtype, new.dtype)
        assert new.shape == old.shape, (name, old.shape, new.shape)
        assert bool(torch.isfinite(new).all()), name
        assert name in exempt or not torch.equal(new, old), f"{name} did not change in the step"


class PositionProbe:
    """Records the widest batch and the largest position id that reach a GPT-2 body."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.width, self.max_position = 0, -1
        self.handle = model.transformer.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.width = max(self.width, ids.shape[1])
        positions = kwargs.get("position_ids")
        if positions is not None:
            self.max_position = max(self.max_position, int(positions.max()))


def assert_finite(*values: float) -> None:
    for v in values:
        assert math.isfinite(v), values


def fresh_policy(profile, tokenizer, seed: int = 0) -> GPT2LMHeadModel:
    return new_policy(profile, tokenizer, seed=seed)


# --------------------------------------------------------------------------------------------
# The full model, without allocating it
# --------------------------------------------------------------------------------------------


def test_full_gpu_shape_on_meta_device(gpu, standin, tokenizer):
    assert (gpu.n_layer, gpu.n_embd, gpu.n_head, gpu.vocab_size, gpu.n_ctx) == (12, 768, 12, 4096, 256)
    assert gpu.n_embd % gpu.n_head == 0
    config = make_config(gpu, tokenizer)
    assert (config.n_layer, config.n_embd, config.n_head, config.vocab_size, config.n_positions) == \
        (12, 768, 12, 4096, 256)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)
    assert (config.eos_token_id, config.pad_token_id) == (tokenizer.eos_token_id, tokenizer.pad_token_id)

    with torch.device("meta"):
        policy = new_policy(gpu, tokenizer)
        scalar = ScalarHeadModel(config)
    policy.tie_weights()  # transformers before 5.24 skips the tying on the meta device (not on a real one)
    assert all(p.is_meta for p in policy.parameters())  # nothing allocated
    n_embd, vocab, ctx = gpu.n_embd, gpu.vocab_size, gpu.n_ctx
    # per block: c_attn (n × 3n), attn c_proj (n × n), c_fc (n × 4n), mlp c_proj (4n × n) and their
    # biases (3n + n + 4n + n), two layer norms (2 × 2n)
    per_block = 12 * n_embd * n_embd + 13 * n_embd
    expected = vocab * n_embd + ctx * n_embd + gpu.n_layer * per_block + 2 * n_embd  # LM head tied to wte
    assert expected == GPT2_SMALL_PARAMS - (50_257 - vocab) * n_embd - (1_024 - ctx) * n_embd == 88_398_336
    assert sum(p.numel() for p in policy.parameters()) == expected
    assert policy.lm_head.weight is policy.transformer.wte.weight
    assert tuple(policy.transformer.wte.weight.shape) == (vocab, n_embd)
    assert tuple(policy.transformer.wpe.weight.shape) == (ctx, n_embd)
    assert len(policy.transformer.h) == 12
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert sum(p.numel() for p in scalar.parameters()) == expected + n_embd + 1  # the scalar head

    # the stand-in differs from the full model in its depth only
    small = make_config(standin, tokenizer).to_dict()
    full = config.to_dict()
    assert {k for k in full if full[k] != small.get(k)} == {"n_layer"}
    assert sum(p.numel() for p in fresh_policy(standin, tokenizer).parameters()) == \
        expected - (gpu.n_layer - 1) * per_block


# --------------------------------------------------------------------------------------------
# One step of each stage on the one-layer stand-in
# --------------------------------------------------------------------------------------------


def test_sft_step(standin, tokenizer, demos, long_response):
    policy = fresh_policy(standin, tokenizer)
    examples = [dict(demos[0], response=long_response)] + demos[1:SMALL_BATCH]
    config = replace(SFTConfig.from_profile(standin), max_steps=1, batch_size=SMALL_BATCH)
    assert config.max_length == standin.n_ctx
    probe, before = PositionProbe(policy), snapshot(policy)
    with pytest.warns(UserWarning, match="truncated"):
        policy, metrics = train_sft(config, policy, tokenizer, examples, progress=False)
    assert len(metrics) == 1
    assert_finite(metrics[0]["loss"], metrics[0]["grad_norm"])
    assert (probe.width, probe.max_position) == (standin.n_ctx, standin.n_ctx - 1)
    assert_stepped(before, policy)


def test_reward_model_step(standin, tokenizer, demos, long_response):
    model = ScalarHeadModel.from_language_model(fresh_policy(standin, tokenizer))
    pairs = [{"prompt": d["prompt"], "chosen": d["response"], "rejected": "What a silly question."}
             for d in demos[:SMALL_BATCH]]
    pairs[0]["chosen"] = long_response
    config = replace(RewardConfig.from_profile(standin), max_steps=1, batch_size=SMALL_BATCH, eval_every=0)
    assert config.max_length == standin.n_ctx
    probe, before = PositionProbe(model), snapshot(model)
    with pytest.warns(UserWarning, match="truncated"):
        model, metrics = train_reward_model(config, model, tokenizer, pairs, progress=False)
    assert len(metrics) == 1
    row = metrics[0]
    assert_finite(row["loss"], row["grad_norm"], row["rewards/chosen"], row["rewards/rejected"])
    assert (probe.width, probe.max_position) == (standin.n_ctx, standin.n_ctx - 1)
    # the Bradley–Terry loss sees score differences only: a shift of every score (the head's bias,
    # or ln_f's bias, which the head maps to one constant) gets zero gradient up to rounding, and
    # Adam turns that rounding noise into a step or none
    assert_stepped(before, model, exempt=frozenset({"0.head.bias", "0.transformer.ln_f.bias"}))


def test_ppo_iteration(standin, tokenizer):
    """One rollout of 8 prompts (the profile's 128 would take minutes) with the profile's 48 new
    tokens, scored by a stand-in reward model through ``score_texts``, then one PPO minibatch.
    Reward whitening is off: it only samples once more from π_ref, on the same code path."""
    world = get_world("assistant")
    policy = fresh_policy(standin, tokenizer)
    reward_model = ScalarHeadModel.from_language_model(fresh_policy(standin, tokenizer, seed=1), seed=1)
    value_model = value_model_from_reward_model(reward_model)
    config = PPOConfig.from_profile(standin, max_steps=1, rollout_batch=SMALL_BATCH, mini_batch=SMALL_BATCH,
                                    ppo_epochs=1, whiten_rewards=False)
    assert config.max_new_tokens == standin.max_new_tokens == 48
    assert config.learning_rate == pytest.approx(PPOConfig.learning_rate * standin.lr_scale)
    ref = reference_copy(policy)
    probe, before = PositionProbe(policy), snapshot(policy, value_model)
    policy, metrics = train_ppo(config, policy, ref, reward_model, value_model, tokenizer, world,
                                world.prompts(16, seed=0), progress=False)
    assert len(metrics) == 1
    row = metrics[0]
    assert_finite(*(v for v in row.values() if isinstance(v, float)))
    assert 0 < row["response_length"] <= config.max_new_tokens
    # prompts are cut to 96 tokens for sampling, so a rollout stays inside the 256-token context
    assert 0 < probe.max_position < standin.n_ctx
    assert_stepped(before, policy, value_model)


def test_dpo_step(standin, tokenizer, demos, long_response):
    world = get_world("assistant")
    policy = fresh_policy(standin, tokenizer)
    ref = reference_copy(policy)
    pairs = [{"prompt": d["prompt"], "chosen": d["response"], "rejected": "What a silly question."}
             for d in demos[:SMALL_BATCH]]
    pairs[0]["chosen"] = long_response
    config = DPOConfig.from_profile(standin, max_steps=1, batch_size=SMALL_BATCH)
    assert config.max_length == standin.n_ctx
    probe, before = PositionProbe(policy), snapshot(policy)
    with pytest.warns(UserWarning, match="truncated"):
        result = train_dpo(config, policy, ref, tokenizer, pairs, world, progress=False)
    assert len(result.metrics) == 1
    row = result.metrics[0]
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)  # π_θ = π_ref at step 0
    assert_finite(row["grad_norm"], row["logps/chosen"], row["logps/rejected"])
    assert result.ref_logps["chosen"].dtype == torch.float32
    assert (probe.width, probe.max_position) == (standin.n_ctx, standin.n_ctx - 1)
    assert_stepped(before, policy)


def long_arithmetic_solution(tokenizer, world, length: int) -> tuple[str, str]:
    """A correct worked sum whose prompt + response + EOS is exactly ``length`` tokens.

    The longest sum of ones that fits, then leading spaces (one token each; ``parse_problem``
    strips them) to fill the rest.
    """
    def n_tokens(prompt: str, response: str) -> int:
        return len(tokenizer(world.format_prompt(prompt) + response, add_special_tokens=False)["input_ids"]) + 1

    def solved(n_terms: int, pad: int) -> tuple[str, str]:
        prompt = " " * pad + "Q: " + " + ".join(["1"] * n_terms) + " = ?"
        return prompt, world.sample_response(prompt, np.random.default_rng(0), style="demo")

    n_terms = 2
    while n_tokens(*solved(n_terms + 1, 0)) <= length:
        n_terms += 1
    for pad in range(length):
        prompt, response = solved(n_terms, pad)
        if n_tokens(prompt, response) >= length:
            break
    assert n_tokens(prompt, response) == length, (n_terms, pad)
    return prompt, response


def test_prm_step(standin, tokenizer):
    world = get_world("arithmetic")
    prompts = world.prompts(SMALL_BATCH - 1, seed=0)
    rng = np.random.default_rng(0)
    responses = [world.sample_response(p, rng) for p in prompts]
    long_prompt, long_solution = long_arithmetic_solution(tokenizer, world, standin.n_ctx)
    prompts, responses = [long_prompt, *prompts], [long_solution, *responses]
    config = VerifierConfig.from_profile(standin, kind="prm", max_steps=1, batch_size=SMALL_BATCH)
    assert config.max_length == standin.n_ctx
    assert encode_solutions(tokenizer, world, prompts, responses, config.max_length).input_ids.shape == \
        (SMALL_BATCH, standin.n_ctx)
    model = ScalarHeadModel.from_language_model(fresh_policy(standin, tokenizer))
    probe, before = PositionProbe(model), snapshot(model)
    result = train_verifier(config, model, tokenizer, world, prompts, responses, progress=False)
    assert len(result.metrics) == 1
    assert_finite(result.metrics[0]["loss"], result.metrics[0]["accuracy"])
    assert (probe.width, probe.max_position) == (standin.n_ctx, standin.n_ctx - 1)
    assert_stepped(before, result.model)


def test_rejection_sampling_fine_tune_step(standin, tokenizer):
    """One round: 2 prompts × 2 samples of the profile's 48 new tokens, then one SFT step on the
    best sample of each prompt (the profile's batch would only add rows of the same shape)."""
    world = get_world("sentiment")
    policy = fresh_policy(standin, tokenizer).eval()
    ref = reference_copy(policy)
    config = RSConfig.from_profile(standin, rounds=1, prompts_per_round=2, n_samples=2, sft_steps=1,
                                   batch_size=2, n_eval_prompts=2)
    assert (config.max_length, config.max_new_tokens) == (standin.n_ctx, standin.max_new_tokens)

    def by_length(prompts, responses):
        return np.array([float(len(r)) for r in responses])

    before = snapshot(policy)
    result = train_rejection_sampling(config, policy, ref, tokenizer, world, by_length, progress=False)
    assert [m["round"] for m in result.metrics] == [0, 1]
    row = result.metrics[1]
    assert_finite(row["sft/first_loss"], row["sft/loss"], row["kl"], row["gold"], row["rm/kept"])
    assert len(result.datasets[0]) == 2
    assert_stepped(before, policy)


def test_rlaif_step(standin, tokenizer):
    """The RLAIF recipe of ``zoo.rlaif``: the constitutional judge (reading honesty from the
    stand-in as its base model) labels pairs of the policy's own samples, then one DPO step."""
    world = get_world("assistant")
    policy = fresh_policy(standin, tokenizer)
    ref = reference_copy(policy)
    judge = ai_judge(ref, tokenizer, seed=0)
    pairs = on_policy_pairs(ref, tokenizer, world, world.prompts(2, seed=3), max_new_tokens=standin.max_new_tokens,
                            seed=5, prefer=judge.compare)
    assert len(pairs) == 2  # only identical responses are dropped
    config = DPOConfig.from_profile(standin, max_steps=1, batch_size=len(pairs))
    probe, before = PositionProbe(policy), snapshot(policy)
    result = train_dpo(config, policy, ref, tokenizer, pairs, world, progress=False)
    row = result.metrics[0]
    assert row["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert_finite(row["grad_norm"], row["logps/chosen"], row["logps/rejected"])
    assert 0 < probe.max_position < standin.n_ctx
    assert_stepped(before, policy)


def test_grpo_step(standin, tokenizer):
    """Chapter 13's gpu recipe (``zoo.grpo.CHAPTER_RECIPE["gpu"]``: G = 16, μ = 2) on 2 problems
    instead of 64: sample with the profile's completion length, score, group advantages, two clipped
    updates. The stand-in is untrained and never right, so the reward here is the completion's
    length in characters: any reward that differs within a group gives the update a gradient."""
    from rlhf_mini.grpo import train_grpo
    from rlhf_mini.zoo import grpo as zoo_grpo

    world = get_world("arithmetic")
    policy = fresh_policy(standin, tokenizer)
    config = zoo_grpo.grpo_config(standin, "grpo", prompts_per_step=2, max_steps=1)
    assert (config.num_generations, config.num_iterations) == (16, 2)
    assert config.max_completion_length == standin.max_new_tokens == 48

    def length_reward(prompts: list[str], completions: list[str]) -> list[float]:
        return [float(len(c)) for c in completions]

    probe, before = PositionProbe(policy), snapshot(policy)
    policy, metrics = train_grpo(config, policy, tokenizer, world, world.prompts(8, seed=0), length_reward,
                                 progress=False)
    row = metrics[0]
    # completion_length/wrong averages the completions with reward 0: none under this reward (NaN)
    assert_finite(*(v for k, v in row.items() if isinstance(v, float) and k != "completion_length/wrong"))
    assert row["reward_std"] > 0 and 0 < row["completion_length"] <= config.max_completion_length
    assert 0 < probe.max_position < standin.n_ctx
    assert_stepped(before, policy)
