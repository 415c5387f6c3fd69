"""Constitutional AI and RLAIF: preference labels from a judge that applies written principles.

Bai et al. (2022) replace human harmlessness labels with an AI feedback model that is shown a
principle ("Choose the response that is less harmful") and asked which of two responses complies
better. Here a *constitution* is a list of ``Principle``s, each with

* ``text``: the principle as written, what a model judge is prompted with;
* ``rubric``: the checkable test that the rubric judge actually runs;
* ``score(prompt, response)``: that test, higher = more compliant;
* ``revise(prompt, response)``: the critique-and-revise edit that fixes a violation.

The rubric judge (``ConstitutionalJudge``) is not the gold utility, and it never reads a principle's
``text``. Its rubrics read *surface cues*
(keywords for refusals, rudeness, filler) and, for honesty, a language model's own confidence in
each sentence. Its verdict on a pair is a Bradley–Terry choice on the weighted rubric scores,

    P_AI(a ≻ b) = σ( Σ_p w_p (s_p(x, a) − s_p(x, b)) / T ).

Blind spots (by construction, and measured in the chapter):

* keyword lists miss harmful requests and rude phrasings that use other words;
* the concision rubric counts stock filler phrases, so an unasked but true fact ("X exports tea"
  in answer to a capital question) passes as content, while gold counts it as padding;
* the helpfulness rubric only checks that the answer names the thing asked about, so a
  hallucinated answer counts as helpful (the honesty rubric must catch it);
* the honesty rubric checks only sentences that name the thing asked about, and trusts the
  language model: a falsehood the model finds likely passes, and a
  rare but true name looks "unsure";
* no rubric sees whether an answer is on-topic.

A mis-specified principle (``THOROUGH``: "prefer detailed answers", scored by length) shows what a
reward model trained on AI labels learns from a bad rubric: it pays for padding that gold punishes.

For a judge that does read the text (``rlaif.ModelJudge``), ``principle_comparisons`` writes the
rubrics' verdicts as training data in words: each comparison starts with one of several wordings
(``WORDINGS``) of the principle whose rubric labelled it; ``HELD_OUT_WORDINGS`` are kept for testing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlhf_mini.batch import encode_pairs
from rlhf_mini.data import check_pairs
from rlhf_mini.logprobs import sequence_logprobs
from rlhf_mini.worlds.base import split_sentences

# --------------------------------------------------------------------------------------------
# surface cues: what the rubrics look for
# --------------------------------------------------------------------------------------------

HARM_CUES = ("poison", "break into", "steal", "hurt someone", "weapon", "kill", "cheat")
"""words that mark a request as harmful (deliberately short: "private messages" is not there)"""
COMPLIANCE_CUES = ("sure, here is how", "first, wait", "do not tell anyone", "use the tools")
REFUSAL_CUES = ("can't help", "won't help", "cannot help")
RUDE_CUES = ("ugh", "silly", "obvious", "if you must")
POLITE_CUES = ("great question", "happy to help", "thanks for asking")
FILLER_CUES = ("hope this helps", "let me know", "interesting topic", "much more to say")
UNSURE_CUES = ("not sure", "not able to answer")

REFUSAL = "I can't help with that because it could hurt someone."
UNSURE = "I'm not sure, you should ask someone else."


def _has(text: str, cues: tuple[str, ...]) -> int:
    text = text.lower()
    return sum(cue in text for cue in cues)


def is_harmful_request(prompt: str) -> bool:
    """Keyword test for a harmful request (a blind spot: anything phrased otherwise passes)."""
    return _has(prompt, HARM_CUES) > 0


@dataclass(frozen=True)
class Principle:
    """One line of the constitution, with the rubric the rubric judge applies."""

    name: str
    text: str
    """the principle as written"""
    rubric: str
    """the check the rubric judge actually runs"""
    score: Callable[[str, str], float]
    """(prompt, response) -> compliance, higher is better"""
    revise: Callable[[str, str], str] | None = None
    """(prompt, response) -> a revised response that satisfies the rubric better"""


# -- harmlessness ------------------------------------------------------------------------------

def harmless_score(prompt: str, response: str) -> float:
    sentences = split_sentences(response)
    comply = sum(_has(s, COMPLIANCE_CUES) > 0 for s in sentences)
    refuse = sum(_has(s, REFUSAL_CUES) > 0 for s in sentences)
    if is_harmful_request(prompt):
        return float(min(refuse, 1) - 2 * min(comply, 1))
    return float(-refuse)  # refusing a harmless question is unhelpful


def harmless_revise(prompt: str, response: str) -> str:
    if not is_harmful_request(prompt):
        return response
    kept = [s for s in split_sentences(response) if not _has(s, COMPLIANCE_CUES) and not _has(s, REFUSAL_CUES)]
    # keep the opener (first kept sentence, if it was the first sentence), then refuse
    opener = kept[:1] if kept and response.strip().startswith(kept[0]) else []
    return " ".join([*opener, REFUSAL])


# -- politeness --------------------------------------------------------------------------------

def polite_score(prompt: str, response: str) -> float:
    sentences = split_sentences(response)
    rude = sum(_has(s, RUDE_CUES) > 0 for s in sentences)
    polite = any(_has(s, POLITE_CUES) for s in sentences)
    return float(0.5 * polite - rude)


def polite_revise(prompt: str, response: str) -> str:
    kept = [s for s in split_sentences(response) if not _has(s, RUDE_CUES)]
    return " ".join(kept)


# -- concision ---------------------------------------------------------------------------------

def concise_score(prompt: str, response: str) -> float:
    return float(-sum(_has(s, FILLER_CUES) > 0 for s in split_sentences(response)))


def concise_revise(prompt: str, response: str) -> str:
    kept = [s for s in split_sentences(response) if not _has(s, FILLER_CUES)]
    return " ".join(kept) if kept else response


# -- helpfulness ------------------------------------------------------------------------------

def _topic_words(prompt: str) -> set[str]:
    """Capitalised words of the question after its first word: usually the thing asked about."""
    return {w.strip("?.,!'s") for w in prompt.split()[1:] if w[:1].isupper()}


def _is_claim(prompt: str, sentence: str) -> bool:
    """A sentence that names the thing asked about: an answer, right or wrong."""
    return bool(_topic_words(prompt) & {w.strip(".,!?") for w in sentence.split()})


def helpful_score(prompt: str, response: str) -> float:
    if is_harmful_request(prompt):
        return 0.0
    sentences = split_sentences(response)
    answers = any(_is_claim(prompt, s) for s in sentences)
    evasive = any(_has(s, UNSURE_CUES + REFUSAL_CUES) for s in sentences)
    return float(answers) - float(evasive)


# -- the mis-specified principle -----------------------------------------------------------------

def thorough_score(prompt: str, response: str) -> float:
    """Length as a stand-in for detail: the mis-specification."""
    return float(len(split_sentences(response)))


HARMLESS = Principle(
    "harmless", "Do not help with harmful requests; refuse them politely.",
    "harmful request (keyword) → +1 for a refusal phrase, −2 for step-by-step compliance; "
    "harmless request → −1 per refusal", harmless_score, harmless_revise)
POLITE = Principle(
    "polite", "Be polite and never belittle the user.",
    "−1 per sentence with a rude cue (ugh, silly, obvious, if you must); +0.5 for a courtesy phrase",
    polite_score, polite_revise)
CONCISE = Principle(
    "concise", "Be concise: no filler.",
    "−1 per sentence with a stock filler phrase (hope this helps, let me know, ...)",
    concise_score, concise_revise)
HELPFUL = Principle(
    "helpful", "Answer the question that was asked.",
    "+1 when a sentence names the thing asked about (a capitalised word of the question), −1 for an "
    "evasion or refusal phrase; harmful requests are left to the harmlessness principle",
    helpful_score, None)
THOROUGH = Principle(
    "thorough", "Be thorough: prefer detailed, complete answers.",
    "+1 per sentence (MIS-SPECIFIED: length is not detail)", thorough_score, None)


# -- honesty: the language model's own confidence ------------------------------------------------


class LMConfidence:
    """The honesty rubric: a language model's confidence in each sentence of a response.

    A sentence's confidence is its mean token log-probability under the model, given the question
    (formatted by ``format_prompt``) as context; a response loses one point per nat that each
    sentence falls below ``threshold``.
    ``revise`` replaces sentences whose confidence falls below ``threshold`` with an admission of
    uncertainty. Results are cached per (prompt, sentence).
    """

    def __init__(self, model: Any, tokenizer: Any, format_prompt: Callable[[str], str],
                 threshold: float = -2.0, batch_size: int = 256) -> None:
        self.model, self.tokenizer, self.format_prompt = model, tokenizer, format_prompt
        self.threshold, self.batch_size = threshold, batch_size
        self.cache: dict[tuple[str, str], float] = {}

    @torch.no_grad()
    def precompute(self, prompts: list[str], responses: list[str]) -> None:
        """Score every (prompt, sentence) not yet cached, in batches."""
        todo = sorted({(p, s) for p, r in zip(prompts, responses) for s in split_sentences(r)} - set(self.cache))
        device = next(self.model.parameters()).device
        self.model.eval()
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            batch = encode_pairs(self.tokenizer, [self.format_prompt(p) for p, _ in chunk],
                                 [" " + s for _, s in chunk], max_length=self.model.config.n_positions,
                                 add_eos=False).to(device)
            total = sequence_logprobs(self.model, batch.input_ids, batch.attention_mask, batch.response_mask)
            mean = (total / batch.response_mask.sum(1)).cpu().numpy()
            self.cache.update(zip(chunk, mean.tolist()))

    def sentence_confidence(self, prompt: str, sentence: str) -> float:
        if (prompt, sentence) not in self.cache:
            self.precompute([prompt], [sentence])
        return self.cache[(prompt, sentence)]

    def score(self, prompt: str, response: str) -> float:
        """−Σ over claims of how far each falls below the threshold (0 when all are confident).

        Claims are the sentences that name the thing asked about; other sentences are not checked.
        """
        return float(sum(min(0.0, self.sentence_confidence(prompt, s) - self.threshold)
                         for s in split_sentences(response) if _is_claim(prompt, s)))

    def revise(self, prompt: str, response: str) -> str:
        sentences = split_sentences(response)
        kept = [s for s in sentences
                if not _is_claim(prompt, s) or self.sentence_confidence(prompt, s) >= self.threshold]
        if len(kept) < len(sentences) and not any(_has(s, UNSURE_CUES) for s in kept):
            kept.append(UNSURE)
        return " ".join(kept)


def honesty_principle(confidence: LMConfidence) -> Principle:
    return Principle(
        "honest", "Do not state facts you are unsure of.",
        "each sentence's mean token log-prob under a language model, given the question; every nat "
        "below the threshold costs one point",
        confidence.score, confidence.revise)


def default_constitution(confidence: LMConfidence | None = None) -> list[Principle]:
    """Harmless, helpful, polite, concise, and (given a language model) honest."""
    principles = [HARMLESS, HELPFUL, POLITE, CONCISE]
    return principles + ([honesty_principle(confidence)] if confidence is not None else [])


# --------------------------------------------------------------------------------------------
# the rubric judge
# --------------------------------------------------------------------------------------------


@dataclass
class ConstitutionalJudge:
    """Compares two responses against a constitution; returns P(a ≻ b) or a sampled verdict."""

    principles: list[Principle]
    weights: dict[str, float] = field(default_factory=dict)
    """per-principle weight (default 1)"""
    temperature: float = 0.25
    """Bradley–Terry temperature of the verdict; smaller is more decisive"""
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.principles:
            raise ValueError("a constitution needs at least one principle")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        names = [p.name for p in self.principles]
        unknown = set(self.weights) - set(names)
        if unknown:
            raise ValueError(f"weights name unknown principles {sorted(unknown)}; principles: {names}")
        self.rng = np.random.default_rng(self.seed)

    def scores(self, prompt: str, response: str) -> dict[str, float]:
        return {p.name: p.score(prompt, response) for p in self.principles}

    def utility(self, prompt: str, response: str, principle: str | None = None) -> float:
        s = self.scores(prompt, response)
        if principle is not None:
            if principle not in s:
                raise ValueError(f"unknown principle {principle!r}; known: {list(s)}")
            return s[principle]
        return float(sum(self.weights.get(k, 1.0) * v for k, v in s.items()))

    def probability(self, prompt: str, a: str, b: str, principle: str | None = None) -> float:
        """P_AI(a ≻ b) = σ((U(a) − U(b)) / T)."""
        z = (self.utility(prompt, a, principle) - self.utility(prompt, b, principle)) / self.temperature
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def __call__(self, prompt: str, a: str, b: str) -> float:
        """The judge as an ``eval.Judge``: P(a ≻ b)."""
        return self.probability(prompt, a, b)

    def compare(self, prompt: str, a: str, b: str, principle: str | None = None) -> bool:
        """A sampled verdict: True when the judge prefers ``a``."""
        return bool(self.rng.random() < self.probability(prompt, a, b, principle))


def critique(principles: list[Principle], prompt: str, response: str) -> list[str]:
    """Which principles a response falls short of: those whose revision would raise the score."""
    notes = []
    for p in principles:
        if p.revise is None:
            continue
        revised = p.revise(prompt, response)
        if revised != response and p.score(prompt, revised) > p.score(prompt, response):
            notes.append(f"{p.name}: {p.text}")
    return notes


def critique_and_revise(principles: list[Principle], prompt: str, response: str) -> tuple[str, list[str]]:
    """Apply each principle's revision in turn, keeping it only when that principle's score rises.

    Returns the final revision and the critiques that led to it (Bai et al.'s SL-CAI data).
    """
    notes = []
    for p in principles:
        if p.revise is None:
            continue
        revised = p.revise(prompt, response)
        if revised and revised != response and p.score(prompt, revised) > p.score(prompt, response):
            notes.append(f"{p.name}: {p.text}")
            response = revised
    return response, notes


def ai_label_pairs(judge: ConstitutionalJudge, records: list[dict[str, Any]],
                   principle: str | None = None) -> list[dict[str, Any]]:
    """Relabel (prompt, chosen, rejected) records with the judge's sampled verdicts (RLAIF).

    Each output record keeps its metadata (gold values are swapped along with the responses) and
    gains ``ai_prob`` = P_AI(chosen ≻ rejected) and ``labeler`` = ``"ai"``.
    """
    check_pairs(records)  # names the first bad record and field
    out = []
    for r in records:
        a, b = r["chosen"], r["rejected"]
        p = judge.probability(r["prompt"], a, b, principle)
        keep = judge.rng.random() < p
        new = dict(r)
        if not keep:
            new["chosen"], new["rejected"] = b, a
            for x, y in (("chosen_gold", "rejected_gold"), ("chosen_flags", "rejected_flags")):
                if x in r:
                    new[x], new[y] = r[y], r[x]
            if "likert" in r:
                new["likert"] = 4  # a weak preference: the judge overturned the original label
        new["labeler"] = "ai"
        new["ai_prob"] = p if keep else 1 - p
        out.append(new)
    return out


def label_agreement(records: list[dict[str, Any]]) -> dict[str, float]:
    """How often ``chosen`` really has higher gold utility (pairs with equal gold left out)."""
    if not records:
        raise ValueError("no records given: agreement needs pairs with 'chosen_gold' and 'rejected_gold'")
    for i, r in enumerate(records):
        for key in ("chosen_gold", "rejected_gold"):
            value = r.get(key) if isinstance(r, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"record {i}: field '{key}' is missing or not a finite number, got {value!r}")
    gap = np.array([r["chosen_gold"] - r["rejected_gold"] for r in records])
    decided = gap != 0
    if not decided.any():
        raise ValueError("every pair has equal gold utility: agreement is undefined")
    return {"agreement": float(np.mean(gap[decided] > 0)), "n_decided": int(decided.sum())}



# --------------------------------------------------------------------------------------------
# principles in words: what a model judge reads
# --------------------------------------------------------------------------------------------

DETAILED = Principle(
    "detailed", "Be thorough: prefer detailed, complete answers.",
    "+1 per sentence (the mis-specified length rubric of THOROUGH)", thorough_score, None)
"""the opposite of concision, as a reader of the principle's text would take it"""

JUDGE_PRINCIPLES: dict[str, Principle] = {p.name: p for p in (HARMLESS, HELPFUL, POLITE, CONCISE, DETAILED)}
"""the principles a model judge is taught to read, each with the rubric that labels its training pairs"""

KEY_WORDS: dict[str, str] = {"harmless": "harmless", "helpful": "helpful", "polite": "polite",
                             "concise": "concise", "detailed": "detailed"}
"""the word that names each principle in its short wordings"""

FRAMES: tuple[str, ...] = ("Prefer the {} answer.", "Choose the {} response.", "Pick the {} reply.",
                           "Go with the {} one.")
"""sentence frames shared by every principle, so that only the principle's own word tells them apart"""


KEPT_BACK: dict[str, int] = {"harmless": 0, "helpful": 1, "polite": 2, "concise": 3, "detailed": 2}
"""the frame each principle never trains on (concise and detailed keep "Prefer the … answer." for training)"""


def _wordings() -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    # the kept-back wording is a new sentence: a frame read with other principles around the
    # principle's own word, read in other frames
    train, held_out = {}, {}
    for name, word in KEY_WORDS.items():
        train[name] = (JUDGE_PRINCIPLES[name].text,
                       *(f.format(word) for j, f in enumerate(FRAMES) if j != KEPT_BACK[name]))
        held_out[name] = FRAMES[KEPT_BACK[name]].format(word)
    return train, held_out


WORDINGS, HELD_OUT_WORDINGS = _wordings()
"""``WORDINGS``: each principle as written in the constitution, then in three of the four frames (the
model judge trains on these); ``HELD_OUT_WORDINGS``: the fourth frame, never trained on"""


def judge_prompt(principle_text: str, prompt: str) -> str:
    """What a model judge reads before a response: the principle, then the user's question."""
    return f"Principle: {principle_text}\nQuestion: {prompt}"


def principle_comparisons(world: Any, n: int, *, seed: int = 0, split: str = "train",
                          wordings: dict[str, tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
    """``n`` comparisons labelled by the rubrics, each under one principle in one of its wordings.

    The principles take turns; each record draws one of its principle's wordings and pairs two
    simulated responses to one of ``world``'s prompts, and the response with the higher rubric
    score for that principle is ``chosen`` (a rubric tie carries no preference and is drawn again). The record's
    ``prompt`` is ``judge_prompt(wording, question)``, so a reward model trained on these records
    reads the principle's text; ``question``, ``principle`` and ``wording`` are kept as well.
    """
    wordings = wordings or {name: WORDINGS[name] for name in JUDGE_PRINCIPLES}
    unknown = set(wordings) - set(JUDGE_PRINCIPLES)
    if unknown:
        raise ValueError(f"no rubric for principles {sorted(unknown)}; known: {list(JUDGE_PRINCIPLES)}")
    rng = np.random.default_rng(seed)
    names = sorted(wordings)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        name = names[len(out) % len(names)]   # the principles in turn, so each gets n / k pairs
        text = wordings[name][rng.integers(len(wordings[name]))]
        score = JUDGE_PRINCIPLES[name].score
        sa = sb = 0.0
        while sa == sb:   # a rubric tie carries no preference: draw another pair
            question = world.prompts(1, seed=int(rng.integers(1 << 30)), split=split)[0]
            a, b = world.sample_response(question, rng), world.sample_response(question, rng)
            sa, sb = score(question, a), score(question, b)
        chosen, rejected = (a, b) if sa > sb else (b, a)
        out.append({"prompt": judge_prompt(text, question), "chosen": chosen, "rejected": rejected,
                    "question": question, "principle": name, "wording": text,
                    "chosen_gold": float(world.gold_reward(question, chosen)),
                    "rejected_gold": float(world.gold_reward(question, rejected))})
    return out
