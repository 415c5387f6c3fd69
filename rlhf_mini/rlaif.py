"""RLAIF: the DPO recipe with an AI judge in place of the human labeler (Bai et al. 2022; Lee et al. 2023).

Constitutional AI's second phase replaces human comparisons with a model's verdicts against a
written constitution. Here the judge is ``constitution.ConstitutionalJudge`` over the default
constitution (harmless, helpful, polite, concise, and honest, the last one read from the
pretrained base model's confidence in each claim). Its sampled verdict labels pairs of the SFT
policy's own samples,

    y_a, y_b ~ π_SFT(·|x),    y_a ≻ y_b  with probability  σ((U_AI(x, y_a) − U_AI(x, y_b)) / T),

and DPO trains on them exactly as ``zoo.dpo.dpo_policy`` does on gold-labelled pairs
(``dpo.on_policy_pairs`` with ``prefer=judge.compare``): same prompts, same seeds, same β and steps
(``zoo.rlaif.rlaif_policy``). The only difference between the two policies is who labelled the
data, so comparing them measures what AI feedback costs or gains. The gold values stay in the
records, so the agreement of the AI labels with gold is measured, never assumed.
"""

from __future__ import annotations

from rlhf_mini.constitution import ConstitutionalJudge, LMConfidence, default_constitution
from rlhf_mini.worlds import get_world

JUDGE_TEMPERATURE = 0.25
"""the judge's Bradley–Terry temperature (chapter 14's)"""
HONESTY_THRESHOLD = -2.0
"""mean token log-prob below which a claim counts as unsure (chapter 14's)"""


def ai_judge(base_model, tokenizer, seed: int = 0) -> ConstitutionalJudge:
    """The constitutional judge of chapter 14, with ``base_model`` (the pretrained LM) as the
    honesty reader: its ``compare(prompt, a, b)`` is the sampled AI label."""
    confidence = LMConfidence(base_model, tokenizer, get_world("assistant").format_prompt,
                              threshold=HONESTY_THRESHOLD)
    return ConstitutionalJudge(default_constitution(confidence), temperature=JUDGE_TEMPERATURE, seed=seed)
