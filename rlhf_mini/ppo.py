"""KL-regularised PPO for language models, in one file (Ziegler et al. 2019; Ouyang et al. 2022).

The objective, for prompts x and responses y ~ π_θ(·|x):

    maximise  J(θ) = E_x E_{y~π_θ} [ r(x, y) ] − β · KL(π_θ(·|x) ‖ π_ref(·|x))

with r the learned reward model (RM) and π_ref the frozen SFT policy. PPO treats each response
token as an action and spreads the objective over tokens (lm-human-preferences' recipe):

    r_t = −β · (log π_θ(y_t | x, y_<t) − log π_ref(y_t | x, y_<t))    every response token t
    r_T += score(x, y)                                                 the last response token

then estimates advantages with GAE (γ = 1, λ = 0.95),

    δ_t = r_t + γ V(s_{t+1}) − V(s_t),    A_t = Σ_l (γλ)^l δ_{t+l},    R_t = A_t + V(s_t)

and maximises the clipped surrogate  E_t[min(ρ_t A_t, clip(ρ_t, 1 ± ε) A_t)],  ρ_t = π_θ/π_old,
together with a clipped value loss on R_t. Each iteration: sample a rollout, score it, compute
per-token rewards and advantages, then run ``ppo_epochs`` passes over shuffled minibatches.

Implementation details (Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO"):

* Sampling and scoring use the same temperature: every log-prob (policy, old, reference) comes
  from logits / τ, so ρ and the KL are measured under the distribution that was sampled.
* The value model is a separate ``ScalarHeadModel`` started from the reward model (the N+ details'
  choice; a value head on the policy would couple the two losses through a shared body). The
  value of the state before token t is read at position t − 1.
* Reward normalisation: the RM score is affinely rescaled so that samples from π_ref have mean 0
  and standard deviation 1 (lm-human-preferences), measured once before training; the same
  rescaling is folded into the value head so that initial values are on the new scale.
* A response that hits ``max_new_tokens`` without EOS has ``missing_eos_penalty`` subtracted
  from its score. The RM reads its score at the EOS that closes a response and was never trained
  on a cut-off answer, so ``scoring.score_texts`` scores the cut-off text with an EOS appended
  (what it would be worth had it ended there) and the penalty is the price of not ending.
* Dropout is switched off in the policy and value model (``models.disable_dropout``): the old
  log-probs are taken in eval mode and the new ones in train mode, and ρ must be 1 at θ_old.
* Optionally (``whiten_token_rewards``, off by default as in lm-human-preferences), each rollout's
  per-token rewards are rescaled to unit variance, keeping their mean, before GAE (TRL's option).
* Advantages are whitened per rollout; the KL coefficient β (``beta``) is fixed or adapted
  (Ziegler's proportional controller).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_mini.logprobs import token_logprobs
from rlhf_mini.losses import (
    KL_ESTIMATORS,
    check_finite,
    check_per_token,
    kl_penalty,
    masked_mean,
    masked_var,
    whiten,
    zero_outside,
)
from rlhf_mini.models import ScalarHeadModel, disable_dropout
from rlhf_mini.sampling import generate
from rlhf_mini.scoring import score_texts
from rlhf_mini.training import load_checkpoint, optimizer_step, save_checkpoint

ScoreFn = Callable[[list[str], list[str]], np.ndarray]


@dataclass
class PPOConfig:
    """Every knob of the PPO trainer; the defaults suit the cpu profile's tiny GPT-2."""

    learning_rate: float = 1e-4
    """Adam step size for policy and value model"""
    rollout_batch: int = 64
    """prompts sampled (one response each) per iteration"""
    mini_batch: int = 16
    """rollout rows per gradient step"""
    ppo_epochs: int = 4
    """passes over each rollout"""
    clip_range: float = 0.2
    """ε of the clipped surrogate: ρ is clipped to [1 − ε, 1 + ε]"""
    clip_range_value: float = 0.2
    """the value prediction may move at most this far from the rollout's value"""
    vf_coef: float = 0.1
    """weight of the value loss in the total loss"""
    gamma: float = 1.0
    """discount (1: the score at the end counts fully for every token)"""
    lam: float = 0.95
    """GAE λ: bias–variance trade-off of the advantage estimate"""
    temperature: float = 1.0
    """sampling temperature, also used for every log-prob"""
    max_new_tokens: int = 32
    """response length limit"""
    beta: float = 0.05
    """β: weight of the per-token KL penalty (initial value when adaptive)"""
    adaptive_kl: bool = False
    """adapt β so that the KL per response tracks ``target_kl`` (Ziegler et al. 2019)"""
    target_kl: float = 6.0
    """target KL(π ‖ π_ref) per response, in nats (adaptive only)"""
    kl_horizon: int = 10_000
    """samples over which the controller closes the gap (adaptive only)"""
    kl_estimator: str = "k1"
    """per-token KL estimator in the reward: k1, k2, k3 or abs (``losses.kl_penalty``)"""
    whiten_rewards: bool = True
    """rescale RM scores so that reference samples have mean 0, std 1"""
    norm_samples: int = 256
    """reference samples used to measure the RM's mean and std"""
    whiten_token_rewards: bool = False
    """also rescale each rollout's per-token rewards (KL terms + score) to unit variance, keeping
    their mean, before GAE (``whiten(..., shift_mean=False)``; TRL's ``whiten_rewards``)"""
    whiten_advantages: bool = True
    """normalise advantages to mean 0, std 1 per rollout"""
    missing_eos_penalty: float | None = 1.0
    """subtracted from the score of a response without EOS (None: off)"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    seed: int = 0
    """seeds prompt choice, sampling and minibatch order (per iteration)"""
    max_steps: int = 60
    """number of rollout + update iterations"""

    @classmethod
    def from_profile(cls, profile, **overrides: object) -> PPOConfig:
        """Sizes from a ``Profile`` (rollout batch, iterations, response length), then overrides.

        ``learning_rate``, the default or an override such as a recipe's, is a rate for the cpu
        profile's models and is multiplied by ``profile.lr_scale`` (1 there, 0.2 at GPT-2-small width).
        """
        base = dict(rollout_batch=profile.rollout_batch, mini_batch=max(1, profile.rollout_batch // 4),
                    max_steps=profile.rl_steps, max_new_tokens=profile.max_new_tokens)
        values = {**base, **overrides}
        values["learning_rate"] = values.get("learning_rate", cls.learning_rate) * profile.lr_scale
        return cls(**values)

    def validate(self) -> None:
        for name in ("learning_rate", "rollout_batch", "mini_batch", "ppo_epochs", "clip_range",
                     "clip_range_value", "temperature", "max_new_tokens", "kl_horizon", "target_kl"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PPOConfig.{name} must be positive, got {getattr(self, name)}")
        if self.rollout_batch % self.mini_batch:
            raise ValueError(f"PPOConfig.mini_batch ({self.mini_batch}) must divide "
                             f"rollout_batch ({self.rollout_batch})")
        if self.beta < 0:
            raise ValueError(f"PPOConfig.beta must be >= 0, got {self.beta}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"PPOConfig.kl_estimator must be one of {KL_ESTIMATORS}, "
                             f"got {self.kl_estimator!r}")


class FixedKLController:
    """β stays where it starts."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. (2019): β ← β · (1 + clip(KL/target − 1, −0.2, 0.2) · n / horizon).

    Too much KL raises β, too little lowers it; the clip bounds each move to ±20% · n / horizon.
    """

    def __init__(self, beta: float, target: float, horizon: int) -> None:
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.beta *= 1.0 + error * n_steps / self.horizon


# --------------------------------------------------------------------------------------------
# GAE and the clipped losses
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def compute_gae(
    rewards: torch.torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16), masked per token.

        δ_t = r_t + γ V_{t+1} − V_t
        A_t = δ_t + γλ A_{t+1}          (= Σ_l (γλ)^l δ_{t+l})
        R_t = A_t + V_t                 (the value target)

    ``rewards``, ``values`` and ``mask`` are ``[B, T]``. The response occupies one contiguous span
    of each row (left padding before it, right padding after it are 0 in ``mask``). The episode
    ends at the last masked token: the value after it, V_{T_end+1}, counts as 0 and nothing after
    it flows back. Positions outside the mask get advantage 0 and return equal to their value (so
    a value loss there is 0 even without a mask). Runs under ``no_grad``: advantages and returns
    are targets, not something to differentiate through.
    """
    m = check_per_token(mask, rewards=rewards, values=values)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape [B, T], got {tuple(rewards.shape)}")
    check_finite("rewards", rewards, where=m)
    check_finite("values", values, where=m)
    # A row's mask must be one contiguous span: count the 0→1 switches (at most one per row).
    starts = (m[:, 1:] & ~m[:, :-1]).sum(dim=1) + m[:, 0].long()
    if bool((starts > 1).any()):
        row = int(torch.nonzero(starts > 1)[0, 0])
        raise ValueError(
            f"mask row {row} is not one contiguous span of response tokens; GAE needs each "
            "response to be a single episode"
        )
    mf = m.to(values.dtype)
    zeros = torch.zeros_like(values)
    rewards = torch.where(m, rewards, zeros)
    values_m = torch.where(m, values, zeros)
    batch, length = values.shape
    advantages = torch.zeros_like(values)
    last_advantage = torch.zeros(batch, dtype=values.dtype, device=values.device)
    for t in reversed(range(length)):
        # next_mask is 0 past the end of the response, which makes V_{T_end+1} = 0 and stops
        # A_{t+1} from leaking across the episode boundary.
        next_mask = mf[:, t + 1] if t + 1 < length else torch.zeros_like(last_advantage)
        next_value = values_m[:, t + 1] if t + 1 < length else torch.zeros_like(last_advantage)
        delta = rewards[:, t] + gamma * next_value * next_mask - values_m[:, t]
        last_advantage = delta + gamma * lam * next_mask * last_advantage
        advantages[:, t] = last_advantage
    advantages = torch.where(m, advantages, zeros)
    returns = advantages + values
    return advantages, returns


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), averaged over tokens.

        ρ_t = π_θ(a_t | s_t) / π_old(a_t | s_t) = exp(logprobs − old_logprobs)
        L = masked_mean( max(−ρ_t A_t, −clip(ρ_t, 1 − ε, 1 + ε) A_t) )

    (the max of the negated terms is the paper's min of the objective terms). When the clipped
    branch is the larger loss, the token's gradient is 0: the policy has already moved far enough
    in the direction the advantage asks.

    Returns ``(loss, stats)``; the stats are detached 0-d tensors:

    * ``clipfrac``: fraction of masked tokens where the clipped branch is strictly active.
    * ``approx_kl``: the k3 estimator of KL(π_old ‖ π_θ) on the sampled tokens,
      masked_mean((ρ − 1) − log ρ), which is unbiased and never negative (as in CleanRL).
    * ``ratio_mean``: masked mean of ρ (1 on the first minibatch of each rollout).
    """
    if clip_range <= 0:
        raise ValueError(f"clip_range must be positive, got {clip_range}")
    m = check_per_token(mask, logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages)
    if int(m.sum()) == 0:
        raise ValueError("mask has no nonzero entries; there is no token to train on")
    check_finite("logprobs", logprobs, where=m)
    check_finite("old_logprobs", old_logprobs, where=m)
    check_finite("advantages", advantages, where=m)
    advantages = zero_outside(advantages, m)
    log_ratio = zero_outside(logprobs - old_logprobs, m)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(logprobs.dtype), m),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, m),
            "ratio_mean": masked_mean(ratio, m),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped value loss (as in OpenAI baselines ``ppo2`` and lm-human-preferences).

        V_clip = V_old + clip(V − V_old, −ε, ε)
        L_V = ½ · masked_mean( max((V − R)², (V_clip − R)²) )

    The max makes the loss pessimistic: moving V more than ε from V_old earns no reduction.
    """
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value must be positive, got {clip_range_value}")
    m = check_per_token(mask, values=values, old_values=old_values, returns=returns)
    if int(m.sum()) == 0:
        raise ValueError("mask has no nonzero entries; there is no token to train on")
    check_finite("values", values, where=m)
    check_finite("old_values", old_values, where=m)
    check_finite("returns", returns, where=m)
    values, old_values, returns = (zero_outside(x, m) for x in (values, old_values, returns))
    values_clipped = old_values + torch.clamp(
        values - old_values, -clip_range_value, clip_range_value
    )
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (values_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), m)




# --------------------------------------------------------------------------------------------
# Rewards, values and the training loop
# --------------------------------------------------------------------------------------------


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, response_mask: torch.Tensor,
                      beta: float) -> torch.Tensor:
    """r_t = −β·kl_t on response tokens, plus the score on each row's last response token."""
    mask = response_mask.bool()
    if bool((mask.sum(1) == 0).any()):
        raise ValueError("a rollout row has no response token")
    rewards = torch.where(mask, -beta * kl, torch.zeros_like(kl))
    positions = torch.arange(mask.shape[1], device=mask.device)
    last = (mask.long() * positions).argmax(1)
    rewards[torch.arange(len(last), device=last.device), last] += scores.to(rewards.dtype)
    return rewards


def state_values(value_model: ScalarHeadModel, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> torch.Tensor:
    """V(s_t) for the state before token t: the value model's output at position t − 1."""
    out = value_model(input_ids, attention_mask)
    return torch.cat([out.new_zeros(out.shape[0], 1), out[:, :-1]], dim=1)


def value_model_from_reward_model(reward_model: ScalarHeadModel) -> ScalarHeadModel:
    """A trainable copy of the reward model, to serve as the value model (N+ details)."""
    value = copy.deepcopy(reward_model)
    for p in value.parameters():
        p.requires_grad_(True)
    return value.train()


def default_score_fn(reward_model, tokenizer, world) -> ScoreFn:
    """Score raw prompts + decoded responses exactly as the reward model was trained to see them."""
    return lambda prompts, responses: score_texts(reward_model, tokenizer, world, prompts, responses)


def _rng_for(seed: int, iteration: int) -> tuple[np.random.Generator, torch.Generator, int]:
    """Everything random in an iteration derives from (seed, iteration), so resuming replays it."""
    rng = np.random.default_rng([seed, iteration])
    sample_seed = int(rng.integers(1 << 31))
    return rng, torch.Generator().manual_seed(int(rng.integers(1 << 31))), sample_seed


def _checked_scores(score_fn: ScoreFn, prompts: list[str], responses: list[str]) -> torch.Tensor:
    scores = torch.as_tensor(np.asarray(score_fn(prompts, responses), dtype=np.float32))
    if scores.shape != (len(prompts),):
        raise ValueError(f"the reward function returned shape {tuple(scores.shape)}, "
                         f"expected ({len(prompts)},)")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(f"the reward model returned {int((~torch.isfinite(scores)).sum())} "
                         "NaN or inf score(s)")
    return scores


@torch.no_grad()
def reward_normalisation(ref_policy, tokenizer, world, prompts: list[str], score_fn: ScoreFn,
                         config: PPOConfig) -> tuple[float, float]:
    """Mean and std of RM scores on reference samples (lm-human-preferences' reward gain/bias)."""
    rng = np.random.default_rng([config.seed, 1 << 20])
    chosen = [prompts[i] for i in rng.choice(len(prompts), size=config.norm_samples)]
    gen = generate(ref_policy, tokenizer, [world.format_prompt(p) for p in chosen],
                   max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                   batch_size=config.rollout_batch, seed=int(rng.integers(1 << 31)), progress=False)
    scores = _checked_scores(score_fn, chosen, gen.responses)
    return float(scores.mean()), float(scores.std().clamp(min=1e-6))


@dataclass
class Rollout:
    """One iteration's sampled batch, scored at θ_old: everything PPO's update reads.

    Token tensors are ``[B, T]`` (prompt + response, left-padded); per-response ones are ``[B]``."""

    iteration: int
    """the iteration it was drawn for (seeds its prompts, its samples and its minibatch order)"""
    prompts: list[str]
    """raw world prompts"""
    responses: list[str]
    """decoded responses, without the EOS"""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    """1 on response tokens (the EOS included when emitted)"""
    logprobs: torch.Tensor
    """log π_old(y_t | ·) of the sampling policy, at the sampling temperature"""
    ref_logprobs: torch.Tensor
    """log π_ref(y_t | ·), same temperature"""
    values: torch.Tensor
    """V_old(s_t): the value model's estimate for the state before token t"""
    entropy: torch.Tensor
    """the policy's entropy at each position"""
    raw_scores: torch.Tensor
    """the reward model's scores"""
    scores: torch.Tensor
    """the scores that enter the reward: normalised, minus ``missing_eos_penalty`` where truncated"""
    truncated: torch.Tensor
    """bool: the response hit ``max_new_tokens`` without an EOS"""


def rollout(policy, ref_policy, value_model, tokenizer, world, prompts: list[str], config: PPOConfig,
            score_fn: ScoreFn, *, iteration: int = 0, reward_mean: float = 0.0,
            reward_std: float = 1.0) -> Rollout:
    """Draw ``config.rollout_batch`` prompts for ``iteration``, sample one response to each from
    ``policy``, and score the batch: log-probs under π_old and π_ref, values, and the reward
    model's score ((raw − ``reward_mean``) / ``reward_std``, minus the missing-EOS penalty)."""
    rng, _, sample_seed = _rng_for(config.seed, iteration)
    device = next(policy.parameters()).device
    batch_prompts = [prompts[i] for i in rng.choice(len(prompts), size=config.rollout_batch)]
    gen = generate(policy, tokenizer, [world.format_prompt(p) for p in batch_prompts],
                   max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                   batch_size=config.rollout_batch, seed=sample_seed, progress=False)
    batch = gen.batch.to(device)
    ids, attn, mask = batch.input_ids, batch.attention_mask, batch.response_mask
    policy.eval()
    value_model.eval()
    with torch.no_grad():
        old_logprobs, entropy = token_logprobs(policy, ids, attn, temperature=config.temperature,
                                               return_entropy=True)
        ref_logprobs = token_logprobs(ref_policy, ids, attn, temperature=config.temperature)
        old_values = state_values(value_model, ids, attn)
    raw_scores = _checked_scores(score_fn, batch_prompts, gen.responses).to(device)
    scores = (raw_scores - reward_mean) / reward_std
    truncated = gen.truncated.to(device)
    if config.missing_eos_penalty is not None:
        scores = torch.where(truncated, scores - config.missing_eos_penalty, scores)
    return Rollout(iteration, batch_prompts, gen.responses, ids, attn, mask, old_logprobs,
                   ref_logprobs, old_values, entropy, raw_scores, scores, truncated)


def minibatches(rollout: Rollout, config: PPOConfig) -> Iterator[tuple[int, torch.Tensor]]:
    """``(epoch, rows)`` for every gradient step of the update on ``rollout``: ``ppo_epochs``
    shuffled passes over its rows, ``mini_batch`` rows at a time (the order is seeded by the
    rollout's iteration)."""
    _, shuffle_gen, _ = _rng_for(config.seed, rollout.iteration)
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(config.rollout_batch, generator=shuffle_gen).to(rollout.input_ids.device)
        for rows in order.split(config.mini_batch):
            yield epoch, rows


def ppo_optimizer(policy, value_model, config: PPOConfig) -> tuple[torch.optim.Optimizer, list]:
    """One Adam over the policy's and the value model's trainable parameters: ``(optimizer, params)``."""
    params = [p for p in [*policy.parameters(), *value_model.parameters()] if p.requires_grad]
    return torch.optim.Adam(params, lr=config.learning_rate, eps=1e-5), params


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over response tokens: 1 when V predicts the returns, 0 when it does
    no better than a constant, negative when worse."""
    return 1.0 - float(masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8))


def train_ppo(config: PPOConfig, policy, ref_policy, reward_model, value_model, tokenizer, world,
              prompts: list[str], *, score_fn: ScoreFn | None = None,
              checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
              resume_from: str | Path | None = None, progress: bool = True):
    """Train ``policy`` (and ``value_model``) in place with PPO; return ``(policy, metrics)``.

    ``prompts`` are raw world prompts (formatted with ``world.format_prompt`` for sampling).
    ``score_fn(prompts, responses) -> scores`` defaults to the reward model through
    ``rlhf_mini.scoring.score_texts``. With ``checkpoint_dir`` and ``checkpoint_every = k`` a
    checkpoint is written after every k-th iteration to ``checkpoint_dir/iter_{k}``;
    ``resume_from`` continues from one (same next-step loss as the uninterrupted run).
    """
    config.validate()
    if not prompts:
        raise ValueError("train_ppo got no prompts")
    score_fn = score_fn or default_score_fn(reward_model, tokenizer, world)
    ref_policy.eval()
    # the ratio ρ compares train-mode log-probs with eval-mode ones: with dropout on it is not 1 at θ_old
    disable_dropout(policy)
    disable_dropout(value_model)
    optimizer, params = ppo_optimizer(policy, value_model, config)
    kl_ctl = (AdaptiveKLController(config.beta, config.target_kl, config.kl_horizon)
              if config.adaptive_kl else FixedKLController(config.beta))
    metrics: list[dict] = []
    start = 0
    if resume_from is not None:
        state = load_checkpoint(resume_from, {"policy": policy, "value": value_model}, optimizer)
        start, kl_ctl.beta, metrics = state["iteration"], state["beta"], state["metrics"]
        reward_mean, reward_std = state["reward_mean"], state["reward_std"]
    elif config.whiten_rewards:
        reward_mean, reward_std = reward_normalisation(ref_policy, tokenizer, world, prompts,
                                                       score_fn, config)
        with torch.no_grad():  # the value model starts from the RM: give it the same rescaling
            value_model.head.weight /= reward_std
            value_model.head.bias.sub_(reward_mean).div_(reward_std)
    else:
        reward_mean, reward_std = 0.0, 1.0

    bar = tqdm(range(start, config.max_steps), desc="ppo", disable=not progress)
    for iteration in bar:
        # ---- rollout ------------------------------------------------------------------------
        ro = rollout(policy, ref_policy, value_model, tokenizer, world, prompts, config, score_fn,
                     iteration=iteration, reward_mean=reward_mean, reward_std=reward_std)
        mask, old_logprobs, ref_logprobs = ro.response_mask, ro.logprobs, ro.ref_logprobs
        old_values, scores = ro.values, ro.scores
        # ---- per-token rewards and advantages ----------------------------------------------
        kl = torch.where(mask.bool(), kl_penalty(old_logprobs, ref_logprobs, config.kl_estimator),
                         torch.zeros_like(old_logprobs))
        beta = kl_ctl.beta
        rewards = per_token_rewards(kl, scores, mask, beta)
        if config.whiten_token_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = compute_gae(rewards, old_values, mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, mask)
        # ---- PPO epochs over minibatches -----------------------------------------------------
        policy.train()
        value_model.train()
        stats: dict[str, list[float]] = {k: [] for k in ("loss/policy", "loss/value",
                                                        "policy/clipfrac", "policy/approx_kl")}
        for _, mb in minibatches(ro, config):
            m = mask[mb]
            new_logprobs = token_logprobs(policy, ro.input_ids[mb], ro.attention_mask[mb],
                                          temperature=config.temperature)
            new_values = state_values(value_model, ro.input_ids[mb], ro.attention_mask[mb])
            pg_loss, pg_stats = ppo_policy_loss(new_logprobs, old_logprobs[mb], advantages[mb],
                                                m, config.clip_range)
            vf_loss = ppo_value_loss(new_values, old_values[mb], returns[mb], m,
                                     config.clip_range_value)
            loss = pg_loss + config.vf_coef * vf_loss
            optimizer_step(optimizer, loss, params, config.max_grad_norm)
            for key, value in (("loss/policy", pg_loss), ("loss/value", vf_loss),
                               ("policy/clipfrac", pg_stats["clipfrac"]),
                               ("policy/approx_kl", pg_stats["approx_kl"])):
                stats[key].append(float(value.detach()))
        # ---- logging and the KL controller ---------------------------------------------------
        kl_per_response = kl.sum(1)
        mean_kl = float(kl_per_response.mean())
        kl_ctl.update(mean_kl, n_steps=config.rollout_batch)
        explained = explained_variance(old_values, returns, mask)
        row = {
            "iteration": iteration + 1,
            "objective/rlhf_reward": float((scores - beta * kl_per_response).mean()),
            "objective/scores": float(scores.mean()),
            "objective/raw_scores": float(ro.raw_scores.mean()),
            "objective/kl": mean_kl,
            "objective/entropy": float(masked_mean(ro.entropy, mask)),
            "gold": float(world.gold_rewards(ro.prompts, ro.responses).mean()),
            **{k: float(np.mean(v)) for k, v in stats.items()},
            "val/explained_variance": explained,
            "beta": beta,
            "eos_rate": 1.0 - float(ro.truncated.float().mean()),
            "response_length": float(mask.sum(1).float().mean()),
        }
        metrics.append(row)
        bar.set_postfix(score=f"{row['objective/scores']:.2f}", gold=f"{row['gold']:.2f}",
                        kl=f"{mean_kl:.2f}")
        done = iteration + 1
        if checkpoint_dir is not None and checkpoint_every and done % checkpoint_every == 0:
            save_checkpoint(Path(checkpoint_dir) / f"iter_{done}", {"policy": policy, "value": value_model},
                            {"iteration": done, "beta": kl_ctl.beta, "metrics": list(metrics),
                             "reward_mean": reward_mean, "reward_std": reward_std,
                             "config": asdict(config)}, optimizer=optimizer)
    policy.eval()
    return policy, metrics
