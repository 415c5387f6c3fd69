"""Task worlds with a known gold reward: the teaching device of the course.

Each world generates prompts, responses of varied quality, a pretraining corpus and
demonstrations, and scores any text with a hidden gold utility. Because the truth is known,
every chapter can measure real quality, over-optimization and reward hacking.

    world = get_world("assistant")
    prompt = world.prompts(1, seed=0)[0]
    world.gold_reward(prompt, "Happy to help. The capital of Dorvia is Kelmar.")
"""

from __future__ import annotations

from rlhf_mini.worlds.arithmetic import ArithmeticWorld
from rlhf_mini.worlds.assistant import AssistantWorld
from rlhf_mini.worlds.base import World
from rlhf_mini.worlds.sentiment import SentimentWorld

WORLDS: dict[str, type[World]] = {
    "assistant": AssistantWorld,
    "arithmetic": ArithmeticWorld,
    "sentiment": SentimentWorld,
}


class PlainText:
    """Not a world: text that is already model-ready (a user's own data, rendered by
    ``data.load_preferences``). Trainers format prompts through it unchanged; it has no gold reward."""

    name = "text"

    def format_prompt(self, prompt: str) -> str:
        """The prompt as it is."""
        return prompt


def get_world(name: str) -> World | PlainText:
    """The world called ``name`` (``assistant``, ``arithmetic`` or ``sentiment``), or ``"text"``
    for prompts that are already model-ready (``PlainText``)."""
    if name == PlainText.name:
        return PlainText()
    try:
        return WORLDS[name]()
    except KeyError:
        raise ValueError(f"unknown task world {name!r}; choose one of {sorted(WORLDS)}") from None


__all__ = ["World", "PlainText", "AssistantWorld", "ArithmeticWorld", "SentimentWorld", "WORLDS", "get_world"]
