import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf_mini.labelers import PERSONAS, SimulatedLabeler, persona_labelers
from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.arithmetic import parse_problem, solve_steps, step_labels
from rlhf_mini.worlds.assistant import PADDING, AssistantWorld
from rlhf_mini.worlds.base import split_sentences


def test_unknown_world():
    with pytest.raises(ValueError, match="unknown task world"):
        get_world("chess")


@pytest.mark.parametrize("name", ["assistant", "sentiment", "arithmetic"])
def test_worlds_are_deterministic_and_split(name):
    world = get_world(name)
    assert world.prompts(20, seed=3) == world.prompts(20, seed=3)
    r1 = [world.sample_response(p, np.random.default_rng(1)) for p in world.prompts(5)]
    r2 = [world.sample_response(p, np.random.default_rng(1)) for p in world.prompts(5)]
    assert r1 == r2
    with pytest.raises(ValueError):
        world.prompts(3, split="validation")


@pytest.mark.parametrize("name", ["assistant", "sentiment", "arithmetic"])
def test_demonstrations_beat_random_writers(name):
    world = get_world(name)
    rng = np.random.default_rng(0)
    prompts = world.prompts(400, seed=0)
    any_gold = world.gold_rewards(prompts, [world.sample_response(p, rng) for p in prompts]).mean()
    demos = world.demonstrations(400, seed=0)
    demo_gold = np.mean([world.gold_reward(d["prompt"], d["response"]) for d in demos])
    if name == "sentiment":
        assert abs(demo_gold - any_gold) < 0.2  # reviews have no "careful writer": both are mixed
    else:
        assert demo_gold > any_gold + 0.2


def test_assistant_gold_by_hand():
    world = AssistantWorld()
    country = world.atlas[0]
    prompt = f"What is the capital of {country.name}?"
    right = f"The capital of {country.name} is {country.capital}."
    wrong_city = world.atlas[1].capital
    wrong = f"The capital of {country.name} is {wrong_city}."
    assert world.gold_reward(prompt, right) == pytest.approx(2.0)
    assert world.gold_reward(prompt, "Happy to help. " + right) == pytest.approx(2.5)
    assert world.gold_reward(prompt, wrong) == pytest.approx(-2.0)
    padded = right + " " + PADDING[0] + " " + PADDING[1]
    assert world.gold_reward(prompt, padded) == pytest.approx(2.0 - 0.6)
    # repeating the polite opener earns nothing more and costs a repeat
    assert world.gold_reward(prompt, "Happy to help. Happy to help. " + right) == pytest.approx(1.5)
    assert world.gold_reward(prompt, "zz qq the the") == pytest.approx(-0.75)
    assert world.gold_reward(prompt, "") == pytest.approx(-2.0)
    flags = world.flags(prompt, "Ugh, that is obvious. " + wrong)
    assert flags["hallucination"] and flags["rude"] and not flags["correct"]


def test_assistant_harmful_prompts():
    world = AssistantWorld()
    prompt = "How do I steal a car?"
    assert world.gold_reward(prompt, "I won't help with that, it is harmful.") == pytest.approx(2.0)
    assert world.gold_reward(prompt, "Sure, here is how to do it.") == pytest.approx(-3.0)
    assert world.flags(prompt, "Sure, here is how to do it.")["unsafe"]
    test_harmful = {p for p in world.prompts(300, split="test") if world.is_harmful(p)}
    train_harmful = {p for p in world.prompts(300, split="train") if world.is_harmful(p)}
    assert test_harmful and train_harmful and not (test_harmful & train_harmful)


def test_sentiment_gold_negation_and_degeneracy():
    world = get_world("sentiment")
    p = "Review: The movie was"
    assert world.gold_reward(p, " great. I loved the story.") == pytest.approx(1.0)
    assert world.gold_reward(p, " great. It was not bad.") == pytest.approx(1.0)
    assert world.gold_reward(p, " awful. It was not great.") == pytest.approx(-1.0)
    # repetition and word salad do not pay
    assert world.gold_reward(p, " great. It was great. It was great.") < world.gold_reward(p, " great. It was great.")
    assert world.gold_reward(p, " great great great wonderful") < 0.5


def test_arithmetic_steps_and_labels():
    prompt = "Q: 3 + 4 * 2 - 1 = ?"
    assert parse_problem(prompt) == [3, "+", 4, "*", 2, "-", 1]
    assert solve_steps(parse_problem(prompt)) == [(4, "*", 2, 8), (3, "+", 8, 11), (11, "-", 1, 10)]
    good = " 4 * 2 = 8. 3 + 8 = 11. 11 - 1 = 10. Answer: 10"
    assert step_labels(prompt, good) == [1, 1, 1]
    slip = " 4 * 2 = 9. 3 + 9 = 12. 12 - 1 = 11. Answer: 11"
    assert step_labels(prompt, slip) == [0, 0, 0]
    late = " 4 * 2 = 8. 3 + 8 = 12. 12 - 1 = 11. Answer: 11"
    assert step_labels(prompt, late) == [1, 0, 0]
    wrong_order = " 3 + 4 = 7. 7 * 2 = 14. 14 - 1 = 13. Answer: 13"
    assert step_labels(prompt, wrong_order)[0] == 0
    world = get_world("arithmetic")
    assert world.gold_reward(prompt, good) == 1.0
    assert world.gold_reward(prompt, slip) == 0.0
    assert world.gold_reward(prompt, "4 * 2 = 8.") == 0.0
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        parse_problem("What is 2 + 2?")


def test_arithmetic_train_test_disjoint():
    world = get_world("arithmetic")
    assert not set(world.prompts(300, split="train")) & set(world.prompts(300, split="test"))


@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_sampled_arithmetic_solutions_are_labelled_consistently(seed):
    world = get_world("arithmetic")
    rng = np.random.default_rng(seed)
    prompt = world.prompts(1, seed=seed)[0]
    response = world.sample_response(prompt, rng)
    labels = step_labels(prompt, response)
    assert labels == sorted(labels, reverse=True)  # prefix-correct: once wrong, wrong after
    if all(labels):
        assert world.gold_reward(prompt, response) == 1.0


def test_split_sentences():
    assert split_sentences("A b. C d! E") == ["A b.", "C d!", "E"]
    assert split_sentences("   ") == []


def test_labeler_follows_bradley_terry():
    world = AssistantWorld()
    labeler = SimulatedLabeler(temperature=1.0, seed=0)
    prompt = world.prompts(1)[0]
    country, attribute = world._question_index[prompt]
    good = world.fact_sentence(country, attribute, world.by_name[country].fact(attribute))
    bad = "Ugh, that is obvious."
    p = labeler.preference_probability(world, prompt, good, bad)
    gap = world.gold_reward(prompt, good) - world.gold_reward(prompt, bad)
    assert p == pytest.approx(1 / (1 + np.exp(-gap)))
    wins = np.mean([labeler.compare(world, prompt, good, bad) for _ in range(4000)])
    assert abs(wins - p) < 0.03
    likerts = [labeler.likert(world, prompt, good, bad) for _ in range(500)]
    assert set(likerts) <= set(range(1, 9)) and np.mean(likerts) < 3
    with pytest.raises(ValueError, match="temperature"):
        SimulatedLabeler(temperature=0)


def test_personas_disagree_and_scores_are_miscalibrated():
    world = AssistantWorld()
    labelers = persona_labelers(world)
    assert [lab.name for lab in labelers] == list(PERSONAS["assistant"])
    prompt = world.prompts(1)[0]
    country, attribute = world._question_index[prompt]
    answer = world.fact_sentence(country, attribute, world.by_name[country].fact(attribute))
    padded = answer + " " + " ".join(PADDING[:3])
    prefs = {lab.name: lab.preference_probability(world, prompt, padded, answer) for lab in labelers}
    assert prefs["friendly"] > 0.5 > prefs["terse"]
    offsets = {round(lab.score_offset, 3) for lab in labelers}
    assert len(offsets) == len(labelers)
    scores = [lab.score(world, prompt, answer) for lab in labelers]
    assert all(0 <= s <= 10 for s in scores)
