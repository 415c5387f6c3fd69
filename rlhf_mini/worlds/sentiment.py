"""Sentiment continuation: the control task of the PPO and DPO papers, with a gold scorer.

Prompts are review openings (``Review: The movie was``); the policy continues them. The gold
scorer is a lexicon with negation ("not good" is negative), averaged over sentences so that
length alone earns nothing, minus penalties for repeated or garbled sentences, so that
"great great great" does not score.
"""

from __future__ import annotations

import re

import numpy as np

from rlhf_mini.worlds.base import World, repeated_count, split_sentences

SUBJECTS = ["movie", "film", "book", "restaurant", "hotel", "album", "game", "show"]
PARTS = {"movie": ["story", "acting", "ending"], "film": ["music", "plot", "cast"],
         "book": ["writing", "story", "ending"], "restaurant": ["food", "service", "pasta"],
         "hotel": ["room", "staff", "view"], "album": ["songs", "voice", "lyrics"],
         "game": ["levels", "graphics", "controls"], "show": ["jokes", "cast", "pace"]}
POSITIVE_ADJ = ["great", "wonderful", "amazing", "excellent", "delightful", "brilliant", "lovely", "fun"]
NEGATIVE_ADJ = ["terrible", "awful", "boring", "dull", "bad", "disappointing", "horrible", "bland"]
NEUTRAL_ADJ = ["long", "short", "loud", "quiet", "new", "simple", "different", "busy"]
POSITIVE_VERB = ["loved", "enjoyed", "liked"]
NEGATIVE_VERB = ["hated", "disliked", "regretted"]
NEUTRAL_VERB = ["watched", "noticed", "remember"]
OPENINGS = ["Review: The {s} was", "Review: I thought the {s} was", "Review: Honestly, the {s} was",
            "Review: My friend said the {s} was", "Review: Overall the {s} was"]

_ADJ = "|".join(POSITIVE_ADJ + NEGATIVE_ADJ + NEUTRAL_ADJ)
_VERB = "|".join(POSITIVE_VERB + NEGATIVE_VERB + NEUTRAL_VERB)
_NOUN = "|".join(sorted({p for ps in PARTS.values() for p in ps} | set(SUBJECTS)))
SENTENCE_PATTERNS = [
    re.compile(rf"^(?:Review: )?(?:The|I thought the|Honestly, the|My friend said the|Overall the) "
               rf"(?:{_NOUN}) (?:was|is) (not )?(?:very )?({_ADJ})\.$"),
    re.compile(rf"^I (didn't |did not )?({_VERB}) the (?:{_NOUN})\.$"),
    re.compile(r"^I would (not )?(recommend) it\.$"),
    re.compile(rf"^It was (not )?(?:very )?({_ADJ})\.$"),
]


def word_polarity(word: str) -> int:
    if word in POSITIVE_ADJ or word in POSITIVE_VERB or word == "recommend":
        return 1
    if word in NEGATIVE_ADJ or word in NEGATIVE_VERB:
        return -1
    return 0


def sentence_sentiment(sentence: str) -> float | None:
    """+1, -1 or 0 for a well-formed sentence (negation flips it); None when it is garbled."""
    for pattern in SENTENCE_PATTERNS:
        m = pattern.match(sentence)
        if m:
            negated, word = m.group(1), m.group(2)
            polarity = word_polarity(word)
            return float(-polarity if negated else polarity)
    return None


class SentimentWorld(World):
    """Review continuation scored by a gold sentiment lexicon; see the module docstring."""

    name = "sentiment"
    gold_weights = {"sentiment": 1.0, "repeated_frac": -1.0, "garbled_frac": -1.0}

    def prompts(self, n: int, seed: int = 0, split: str = "train") -> list[str]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rng = np.random.default_rng(seed + (0 if split == "train" else 10_000))
        return [str(rng.choice(OPENINGS)).format(s=rng.choice(SUBJECTS)) for _ in range(n)]

    def _review_body(self, subject: str, stars: int, rng: np.random.Generator, n: int) -> list[str]:
        lean = (stars - 3) / 2  # -1 … 1
        out = []
        for _ in range(n):
            r = rng.random()
            pos = rng.random() < 0.5 + 0.45 * lean
            kind = rng.random()
            if kind < 0.15:
                out.append(f"It was {rng.choice(NEUTRAL_ADJ)}.")
            elif r < 0.45:
                adj = rng.choice(POSITIVE_ADJ if pos else NEGATIVE_ADJ)
                out.append(f"The {rng.choice(PARTS[subject])} was {adj}.")
            elif r < 0.7:
                verb = rng.choice(POSITIVE_VERB if pos else NEGATIVE_VERB)
                out.append(f"I {verb} the {rng.choice(PARTS[subject])}.")
            elif r < 0.85:
                # negation: "not bad" leans positive
                adj = rng.choice(NEGATIVE_ADJ if pos else POSITIVE_ADJ)
                out.append(f"It was not {adj}.")
            else:
                out.append("I would recommend it." if pos else "I would not recommend it.")
        return out

    def sample_response(self, prompt: str, rng: np.random.Generator, style: str = "any") -> str:
        subject = next((s for s in SUBJECTS if f" {s} " in prompt + " "), "movie")
        stars = int(rng.integers(1, 6))
        first_pos = rng.random() < 0.5 + 0.45 * (stars - 3) / 2
        first = f" {rng.choice(POSITIVE_ADJ if first_pos else NEGATIVE_ADJ)}."
        body = self._review_body(subject, stars, rng, int(rng.integers(1, 4)))
        return first + " " + " ".join(body)

    def features(self, prompt: str, response: str) -> dict[str, float]:
        """Mean sentence sentiment of prompt + continuation, and the degenerate fractions."""
        sentences = split_sentences(prompt + response)
        if not sentences:
            return {"sentiment": 0.0, "repeated_frac": 0.0, "garbled_frac": 1.0}
        scores = [sentence_sentiment(s) for s in sentences]
        good = [s for s in scores if s is not None]
        return {
            "sentiment": float(np.mean(good)) if good else 0.0,
            "repeated_frac": repeated_count(sentences) / len(sentences),
            "garbled_frac": sum(s is None for s in scores) / len(sentences),
        }

    def corpus(self, n_docs: int, rng: np.random.Generator) -> list[str]:
        docs = []
        for _ in range(n_docs):
            subject = str(rng.choice(SUBJECTS))
            opening = str(rng.choice(OPENINGS)).format(s=subject)
            docs.append(opening + self.sample_response(opening, rng))
        return docs
