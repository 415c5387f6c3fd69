import numpy as np
import pytest
import torch
from transformers import GPT2Config

from rlhf_mini.models import EOS_TOKEN, ScalarHeadModel, train_tokenizer
from rlhf_mini.prm import (
    VerifierConfig,
    best_of_n_accuracy,
    encode_solutions,
    majority_vote,
    miscopying_solution,
    parity_balanced,
    sample_solutions,
    solution_labels,
    solution_scores,
    step_end_chars,
    step_end_positions,
    step_probabilities,
    train_verifier,
)
from rlhf_mini.training import lr_at
from rlhf_mini.worlds import get_world
from rlhf_mini.worlds.arithmetic import (
    STEP_RE,
    parse_problem,
    solve_steps,
    split_steps,
    step_labels,
)


@pytest.fixture(scope="module")
def world():
    return get_world("arithmetic")


@pytest.fixture(scope="module")
def tokenizer(world):
    rng = np.random.default_rng(0)
    return train_tokenizer(world.corpus(300, rng), vocab_size=300)


def tiny_verifier(tokenizer, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=128,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return ScalarHeadModel(config)


def test_step_end_chars_hand_made():
    r = " 4 * 2 = 8. 3 + 8 = 11. Answer: 11"
    assert [r[i] for i in step_end_chars(r)] == [".", "."]
    assert step_end_chars(" 4 * 2 = 8. 3 + 8 = 1") == [10, len(" 4 * 2 = 8. 3 + 8 = 1") - 1]
    assert step_end_chars(" 4 * 2 = 8.. Answer: 8") == [10]  # empty pieces are not steps
    assert step_end_chars("") == []


def test_step_label_alignment(world, tokenizer):
    """Each label is read at the '.' token of its step; the answer label at the EOS."""
    prompt = "Q: 3 + 4 * 2 - 1 = ?"
    cases = {
        " 4 * 2 = 8. 3 + 8 = 11. 11 - 1 = 10. Answer: 10": [1, 1, 1, 1],
        " 4 * 2 = 9. 3 + 9 = 12. 12 - 1 = 11. Answer: 11": [0, 0, 0, 0],  # first step slips
        " 4 * 2 = 8. 3 + 8 = 12. 12 - 1 = 11. Answer: 11": [1, 0, 0, 0],
        " 4 * 2 = 8. 3 + 8 = 11. 11 - 1 = 10. Answer: 9": [1, 1, 1, 0],  # wrong final answer only
        " 4 * 2 = 8. 3 + 8 = 11": [1, 1, 0],  # cut short: no answer
    }
    for response, expected in cases.items():
        labels = solution_labels(world, prompt, response)
        assert labels == expected, response
        positions = step_end_positions(tokenizer, response)
        assert len(positions) == len(labels)
        ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        tokens = [tokenizer.decode([ids[j]]) for j in positions]
        assert tokens[-1] == EOS_TOKEN
        if "Answer" in response:
            assert all("." in t for t in tokens[:-1]), tokens
    # in a padded batch, the positions point at the same tokens
    responses = list(cases)
    batch = encode_solutions(tokenizer, world, [prompt] * len(responses), responses)
    for i, response in enumerate(responses):
        k = int(batch.label_mask[i].sum())
        picked = batch.input_ids[i, batch.label_positions[i, :k]].tolist()
        assert picked[-1] == tokenizer.eos_token_id
        assert batch.labels[i, :k].tolist() == cases[response]


def test_scores_and_majority():
    probs = [np.array([0.9, 0.2, 0.8]), np.array([0.6, 0.7, 0.5])]
    assert solution_scores(probs, "prm", "min").tolist() == pytest.approx([0.2, 0.5])
    assert solution_scores(probs, "prm", "prod").tolist() == pytest.approx([0.144, 0.21])
    assert solution_scores(probs, "orm").tolist() == pytest.approx([0.8, 0.5])
    rng = np.random.default_rng(0)
    assert majority_vote([3, 5, 3, None], rng) == 3
    assert majority_vote([None], rng) is None
    with pytest.raises(ValueError, match="aggregate"):
        solution_scores(probs, "prm", "mean")


def test_bad_input(world, tokenizer):
    with pytest.raises(ValueError, match="kind"):
        VerifierConfig(kind="rm")
    with pytest.raises(ValueError, match="prompts"):
        encode_solutions(tokenizer, world, ["Q: 1 + 2 = ?"], [])
    with pytest.raises(ValueError, match="not an arithmetic prompt"):
        encode_solutions(tokenizer, world, ["hello"], [" 1 + 2 = 3. Answer: 3"])
    with pytest.raises(ValueError, match="solution 1 has no step probabilities"):
        solution_scores([np.array([0.5]), np.array([])], "prm")
    prompts = world.prompts(2, seed=0)
    cands = [[world.sample_response(p, np.random.default_rng(i)) for i in range(3)] for p in prompts]
    with pytest.raises(ValueError, match="need prompts"):
        best_of_n_accuracy(world, [], [], {}, ns=[1])
    with pytest.raises(ValueError, match=r"scores\['prm'\] has shape \(2, 2\), expected \(2, 3\)"):
        best_of_n_accuracy(world, prompts, cands, {"prm": np.zeros((2, 2))}, ns=[1])
    with pytest.raises(ValueError, match="NaN"):
        best_of_n_accuracy(world, prompts, cands, {"orm": np.full((2, 3), np.nan)}, ns=[1])


def _data(world, n=64, seed=0):
    rng = np.random.default_rng(seed)
    prompts = world.prompts(n, seed=seed)
    return prompts, [world.sample_response(p, rng) for p in prompts]


def test_prm_learns_and_reranks(world, tokenizer):
    prompts, responses = _data(world)
    cfg = VerifierConfig(kind="prm", max_steps=40, batch_size=16, learning_rate=3e-3, warmup_steps=1)
    result = train_verifier(cfg, tiny_verifier(tokenizer), tokenizer, world, prompts, responses, progress=False)
    losses = [m["loss"] for m in result.metrics]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    probs = step_probabilities(result.model, tokenizer, world, prompts[:4], responses[:4])
    assert [len(p) for p in probs] == [len(solution_labels(world, p, r)) for p, r in zip(prompts[:4], responses[:4])]
    # best_of_n_accuracy with a perfect scorer: accuracy is 1 whenever one candidate is right
    cands = [[world.sample_response(p, np.random.default_rng(i)) for i in range(4)] for p in prompts[:8]]
    oracle = np.array([[float(world.final_answer(r) == world.answer(p)) for r in c] for p, c in zip(prompts, cands)])
    table = best_of_n_accuracy(world, prompts[:8], cands, {"oracle": oracle}, ns=[1, 4], n_subsets=3)
    at4 = table[(table.method == "oracle") & (table.n == 4)].accuracy.item()
    assert at4 == pytest.approx(oracle.max(1).mean())


def test_resume_gives_same_next_loss(world, tokenizer, tmp_path):
    prompts, responses = _data(world, n=32)
    full = train_verifier(VerifierConfig(kind="orm", max_steps=6, batch_size=8, warmup_steps=1),
                          tiny_verifier(tokenizer), tokenizer, world, prompts, responses, progress=False)
    cfg = VerifierConfig(kind="orm", max_steps=3, batch_size=8, warmup_steps=1, output_dir=str(tmp_path))
    train_verifier(cfg, tiny_verifier(tokenizer), tokenizer, world, prompts, responses, progress=False)
    resumed = train_verifier(VerifierConfig(kind="orm", max_steps=6, batch_size=8, warmup_steps=1),
                             tiny_verifier(tokenizer, seed=5), tokenizer, world, prompts, responses,
                             resume_from=tmp_path, progress=False)
    assert resumed.metrics[3]["loss"] == pytest.approx(full.metrics[3]["loss"], rel=1e-5)
    assert len(resumed.metrics) == 6


def test_parity_balanced(world):
    """Kept solutions: right ones, and wrong ones whose answer has the right answer's parity."""
    prompt = "Q: 3 + 4 * 2 - 1 = ?"  # answer 10
    responses = [" 4 * 2 = 8. 3 + 8 = 11. 11 - 1 = 10. Answer: 10",  # right
                 " 4 * 2 = 8. 3 + 8 = 12. 12 - 1 = 11. Answer: 11",  # off by 1: parity gives it away
                 " 4 * 2 = 8. 3 + 8 = 13. 13 - 1 = 12. Answer: 12",  # off by 2: kept
                 " 4 * 2 = 8. 3 + 8 = 11"]  # no answer
    assert parity_balanced(world, [prompt] * 4, responses) == [0, 2]
    prompts, responses = _data(world, n=400)
    keep = parity_balanced(world, prompts, responses)
    right = np.array([world.final_answer(responses[i]) == world.answer(prompts[i]) for i in keep])
    even = np.array([world.final_answer(responses[i]) % 2 == 0 for i in keep])
    assert (~right).sum() > 20
    # on training problems answer parity no longer separates right from wrong
    assert abs(even[right].mean() - even[~right].mean()) < 0.15


def test_learning_rate_schedule():
    constant = VerifierConfig(max_steps=100, learning_rate=1e-3, warmup_steps=10)
    cosine = VerifierConfig(max_steps=100, learning_rate=1e-3, warmup_steps=10, schedule="cosine")
    def lr(config, step):
        return lr_at(step, learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                     max_steps=config.max_steps, schedule=config.schedule)

    assert lr(constant, 0) == pytest.approx(1e-4)
    assert lr(constant, 99) == pytest.approx(1e-3)
    assert lr(cosine, 10) == pytest.approx(1e-3)
    assert lr(cosine, 55) == pytest.approx(5e-4)
    assert lr(cosine, 99) < 1e-5
    with pytest.raises(ValueError, match="schedule"):
        VerifierConfig(schedule="linear")


def test_miscopying_solution(world):
    """A miscopy writes one operand off by 1 or 2 and computes right from it; it is labelled wrong."""
    prompts = world.prompts(40, seed=5)
    rng = np.random.default_rng(0)
    for prompt in prompts:
        canonical = " " + ". ".join(f"{a} {op} {b} = {c}" for a, op, b, c in solve_steps(parse_problem(prompt)))
        assert miscopying_solution(prompt, rng, rate=0.0) == canonical + f". Answer: {world.answer(prompt)}"
        slipped = miscopying_solution(prompt, rng, rate=1.0)
        assert step_labels(prompt, slipped)[0] == 0 and world.final_answer(slipped) is not None
        a, op, b, c = STEP_RE.match(split_steps(slipped)[0][0]).groups()
        assert int(c) == solve_steps([int(a), op, int(b)])[0][3]  # the arithmetic itself is right
        right_a, _, right_b, _ = solve_steps(parse_problem(prompt))[0]
        offsets = sorted([abs(int(a) - right_a), abs(int(b) - right_b)])
        assert offsets[0] == 0 and offsets[1] in (1, 2)  # exactly one operand miscopied
    with pytest.raises(ValueError, match="mistakes must be one of"):
        sample_solutions(world, prompts[:2], 2, mistakes="typo")
    with pytest.raises(ValueError, match="makes its own mistakes"):
        sample_solutions(world, prompts[:2], 2, model=object(), mistakes="miscopy")
    by_kind = {m: sample_solutions(world, prompts, 4, seed=1, mistakes=m) for m in ("miscalculation", "miscopy")}
    assert by_kind["miscalculation"] == sample_solutions(world, prompts, 4, seed=1)  # the default is unchanged
    assert by_kind["miscalculation"] != by_kind["miscopy"]


def test_both_verifier_kinds_share_one_cached_training_set(world, isolated_cache):
    from rlhf_mini.config import get_profile
    from rlhf_mini.prm import VerifierDataConfig
    from rlhf_mini.zoo.prm import training_solutions, training_solutions_path

    profile = get_profile("cpu")
    folder = training_solutions_path(profile, "world", "miscopy")
    assert training_solutions_path(profile, "world", "miscopy") == folder  # loaded, not drawn again
    prompts, responses = training_solutions(profile, "world", "miscopy")
    config = VerifierDataConfig.from_profile(profile, mistakes="miscopy")
    assert 0.5 * config.n_prompts * config.samples_per_prompt < len(prompts) < config.n_prompts * config.samples_per_prompt
    # parity-balanced: every kept answer has the right answer's parity, and some are wrong
    answers = [world.final_answer(r) for r in responses]
    assert all((a - world.answer(p)) % 2 == 0 for p, a in zip(prompts, answers))
    assert 0.2 < np.mean([a != world.answer(p) for p, a in zip(prompts, answers)]) < 0.8
    with pytest.raises(ValueError, match="the SFT policy makes its own"):
        training_solutions_path(profile, "sft", "miscopy")
    with pytest.raises(ValueError, match="source must be"):
        training_solutions_path(profile, "human", "miscopy")
