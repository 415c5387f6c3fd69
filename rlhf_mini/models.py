"""The model zoo's building blocks, on transformers' GPT-2 classes.

- ``train_tokenizer``: a byte-level BPE trained locally with ``tokenizers`` on the course corpus.
- ``make_config``: a GPT-2 config of a profile's shape, with dropout off (RL and DPO need
  deterministic log-probs: with dropout on, the DPO loss at step 0 is not exactly ln 2).
- ``ScalarHeadModel``: a GPT-2 body with a scalar head, for reward models (one score per
  sequence, read at its last token) and value models (one value per token).
- ``reference_copy``: a frozen copy of a policy, the π_ref of the KL penalty.
- ``load_pretrained``: anything ``from_pretrained`` understands: a local folder or a hub name.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    GPT2PreTrainedModel,
    PreTrainedTokenizerFast,
)

from rlhf_mini.config import Profile

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# Renders a list of {"role", "content"} messages in the course's chat format. The newline is
# written as an expression because transformers renders templates with trim_blocks on.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}" + EOS_TOKEN + "{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (GPT-2's scheme) on ``texts``.

    The end-of-text token is separate from the pad token: if they were the same, a mask built
    from ``token != pad`` would drop the real EOS from the loss.
    """
    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=CHAT_TOKENS, padding_side="left", model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_config(profile: Profile, tokenizer: PreTrainedTokenizerFast) -> GPT2Config:
    """A GPT-2 config of the profile's shape, with dropout off and the tokenizer's special ids."""
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=profile.n_ctx, n_embd=profile.n_embd,
        n_layer=profile.n_layer, n_head=profile.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_policy(profile: Profile, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 language model of the profile's shape."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(make_config(profile, tokenizer))


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens: cumsum(mask) − 1, clamped at 0.

    With left padding the first real token must get position 0, as it did when the sequence was
    sampled; the default ``arange(T)`` would shift every position.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class ScalarHeadModel(GPT2PreTrainedModel):
    """GPT-2 with a scalar head: a reward model (``score``) or a value model (``forward``)."""

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.head = nn.Linear(config.n_embd, 1)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One scalar per token: ``[B, T]``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).last_hidden_state
        return self.head(hidden).squeeze(-1)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One scalar per sequence, read at its last real token (the EOS): ``[B]``.

        Works for left or right padding: the last real token is the last position whose mask is 1.
        It equals ``forward`` read at that token, up to float rounding, for less work: nothing reads
        the last block's output at the other positions, so that block runs its query, attention
        output and MLP at the one position (``_last_block_at``); only its keys and values cover
        every position. With the ``cpu`` profile's two blocks, that is about 40 % fewer matrix FLOPs.
        """
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.long() * positions).argmax(-1)
        return self.values_at(input_ids, attention_mask, last)

    def values_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``forward`` read only where it is needed: ``at`` holds column indices, ``[B]`` (one per
        row, the output is ``[B]``) or ``[B, K]`` (K per row, the output is ``[B, K]``).

        A process reward model reads a value at each step's end and an outcome or reward model at
        the EOS, a handful of positions in a row of dozens. Every block but the last runs whole;
        the last runs its query, attention output and MLP only at those positions
        (``_last_block_at``), with keys and values from every position. Equal to ``forward``
        gathered at ``at``, up to float rounding.
        """
        blocks, ln_f = self.transformer.h, self.transformer.ln_f
        # GPT2Model runs every block in `h`, then ln_f: hand it all blocks but the last, and no ln_f
        self.transformer.h, self.transformer.ln_f = blocks[:-1], nn.Identity()
        try:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
            ).last_hidden_state
        finally:
            self.transformer.h, self.transformer.ln_f = blocks, ln_f
        hidden = _last_block_at(blocks[-1], hidden, attention_mask, at, layer_index=len(blocks) - 1)
        return self.head(ln_f(hidden)).squeeze(-1)

    @classmethod
    def from_language_model(cls, lm: GPT2LMHeadModel, seed: int = 0) -> ScalarHeadModel:
        """Start a reward or value model from a language model's body (InstructGPT's recipe)."""
        torch.manual_seed(seed)
        model = cls(lm.config)
        model.transformer.load_state_dict(lm.transformer.state_dict())
        # a small head keeps initial scores near 0, so early PPO rewards are on a sane scale
        nn.init.normal_(model.head.weight, std=1.0 / (lm.config.n_embd + 1) ** 0.5)
        nn.init.zeros_(model.head.bias)
        return model.to(lm.device)  # built on the CPU; it joins the language model's device


def _last_block_at(block: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, at: torch.Tensor,
                   layer_index: int) -> torch.Tensor:
    """A GPT-2 block's output at the columns ``at`` of each row: ``[B]`` → ``[B, D]`` (``hidden[b, at[b]]``),
    or ``[B, K]`` → ``[B, K, D]``.

    The same arithmetic as the block (pre-LayerNorm attention, then MLP, each with its residual)
    for the chosen queries only: keys and values come from every position, and the query at column
    t sees the real tokens up to t (the causal mask).
    """
    attn = block.attn
    batch, width, dim = hidden.shape
    per_row = at.view(batch, -1)  # [B, K]
    queries = per_row.shape[1]
    rows = torch.arange(batch, device=hidden.device)[:, None].expand_as(per_row).reshape(-1)
    cols = per_row.reshape(-1)
    heads = attn.num_heads
    x = block.ln_1(hidden)
    weight, bias = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: x @ weight + bias, columns [q | k | v]
    keys, values = torch.addmm(bias[dim:], x.reshape(-1, dim), weight[:, dim:]).split(dim, dim=-1)
    query = torch.addmm(bias[:dim], x[rows, cols], weight[:, :dim])  # [B * K, D]
    positions = torch.arange(width, device=hidden.device)
    # [B, K, width]: the real tokens up to each query's column, and the query itself
    visible = (attention_mask.bool()[:, None, :] & (positions <= per_row[..., None])) | (positions == per_row[..., None])
    scale = (dim // heads) ** -0.5 if attn.scale_attn_weights else 1.0
    if attn.scale_attn_by_inverse_layer_idx:
        scale /= layer_index + 1
    mixed = nn.functional.scaled_dot_product_attention(
        query.view(batch, queries, heads, -1).transpose(1, 2),
        keys.view(batch, width, heads, -1).transpose(1, 2),
        values.view(batch, width, heads, -1).transpose(1, 2),
        attn_mask=visible[:, None, :, :], scale=scale,
        dropout_p=attn.attn_dropout.p if block.training else 0.0,
    )  # [B, heads, K, D / heads]
    out = hidden[rows, cols] + attn.resid_dropout(attn.c_proj(mixed.transpose(1, 2).reshape(batch * queries, dim)))
    out = out + block.mlp(block.ln_2(out))
    return out.view(*at.shape, dim)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability in ``model`` to 0, in place.

    PPO's ratio and DPO's step-0 loss of ln 2 assume that the policy scores a sequence the same way
    in train and eval mode; the course's models have no dropout (``make_config``), but a hub GPT-2
    has 0.1 in three places."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def reference_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode: the π_ref that the KL penalty compares against."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def load_pretrained(name_or_path: str | Path, **kwargs: object) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer with ``from_pretrained``.

    A local folder written by ``save_pretrained`` works offline; a hub name such as ``"gpt2"``
    works wherever the network allows. A tokenizer without a pad token gets its EOS as pad, and
    left padding for batched generation.
    """
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(name_or_path), **kwargs)
    return model, tokenizer
