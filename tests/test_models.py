import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf_mini.batch import encode_pairs, encode_prompts
from rlhf_mini.config import PROFILES, get_device, get_profile
from rlhf_mini.models import ScalarHeadModel, load_pretrained, make_config, reference_copy


def test_profiles(monkeypatch):
    monkeypatch.setenv("RLHF_MINI_PROFILE", "gpu")
    assert get_profile().n_layer == 12 and get_profile().n_embd == 768
    monkeypatch.setenv("RLHF_MINI_PROFILE", "cpu")
    assert get_profile().n_embd == 128
    monkeypatch.delenv("RLHF_MINI_PROFILE")
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert get_profile().name == expected
    assert get_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown profile 'tpu'"):
        get_profile("tpu")
    assert set(PROFILES) == {"cpu", "gpu"}


def test_fine_tuning_rates_follow_the_profile_width():
    from rlhf_mini.dpo import DPOConfig
    from rlhf_mini.ppo import PPOConfig
    from rlhf_mini.rejection_sampling import RSConfig
    from rlhf_mini.sft import SFTConfig
    from rlhf_mini.zoo.ppo import CHAPTER_RECIPE

    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    assert cpu.lr_scale == 1.0 and gpu.lr_scale == pytest.approx(gpu.pretrain_lr / cpu.pretrain_lr)
    # recipes are written for the cpu profile: used there exactly as written, scaled at GPT-2-small width
    assert PPOConfig.from_profile(cpu, **CHAPTER_RECIPE).learning_rate == CHAPTER_RECIPE["learning_rate"]
    assert PPOConfig.from_profile(gpu, **CHAPTER_RECIPE).learning_rate == pytest.approx(0.2 * CHAPTER_RECIPE["learning_rate"])
    assert PPOConfig.from_profile(gpu).learning_rate == pytest.approx(0.2 * PPOConfig.learning_rate)
    assert DPOConfig.from_profile(cpu).learning_rate == DPOConfig.learning_rate
    assert DPOConfig.from_profile(gpu, learning_rate=3e-4).learning_rate == pytest.approx(6e-5)
    assert RSConfig.from_profile(gpu).learning_rate == pytest.approx(0.2 * RSConfig.learning_rate)
    # the stages that follow pretrain_lr move by the same factor
    assert (SFTConfig.from_profile(gpu).learning_rate / SFTConfig.from_profile(cpu).learning_rate
            == pytest.approx(gpu.lr_scale))


def test_tokenizer_round_trip_and_special_tokens(tiny_tokenizer):
    text = "<|user|>What is the capital of Zorvia?\n<|assistant|>Happy to help."
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.pad_token_id != tiny_tokenizer.eos_token_id
    chat = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"}],
        tokenize=False, add_generation_prompt=True)
    assert chat == "<|system|>Be kind.\n<|user|>Hi?\n<|assistant|>"


def test_config_has_no_dropout(tiny_profile, tiny_tokenizer):
    cfg = make_config(tiny_profile, tiny_tokenizer)
    assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    assert cfg.eos_token_id == tiny_tokenizer.eos_token_id


def test_encode_pairs_masks_response_and_eos(tiny_tokenizer):
    batch = encode_pairs(tiny_tokenizer, ["Q: 1 + 2 = ?", "Review: The movie was"], [" 1 + 2 = 3. Answer: 3", " great."], 64)
    assert batch.input_ids.shape == batch.response_mask.shape
    for i in range(2):
        resp = batch.input_ids[i][batch.response_mask[i].bool()]
        assert resp[-1].item() == tiny_tokenizer.eos_token_id
        assert batch.attention_mask[i, -1] == 1  # left padded: every row ends at the last column
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        encode_pairs(tiny_tokenizer, ["a", "b"], ["c"], 64)
    with pytest.raises(ValueError, match="empty batch"):
        encode_prompts(tiny_tokenizer, [], 64)


def test_truncation_is_announced_and_max_length_checked(tiny_tokenizer):
    prompt, response = "Review: The movie was", " great. The actors were great. The plot was great."
    with pytest.warns(UserWarning, match="max_length = 8 tokens are being truncated"):
        batch = encode_pairs(tiny_tokenizer, [prompt], [response], 8)
    assert batch.input_ids.shape[1] == 8 and int(batch.response_mask.sum()) == 7
    with pytest.warns(UserWarning, match="losing their start"):
        assert encode_prompts(tiny_tokenizer, [prompt], 2).input_ids.shape == (1, 2)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        encode_pairs(tiny_tokenizer, [prompt], [response], 1)


def test_tokenizer_without_pad_is_a_clear_error(tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    with pytest.raises(ValueError, match="no pad token"):
        encode_pairs(tok, ["a"], ["b"], 16)


def test_scalar_head_reads_last_real_token_with_any_padding(tiny_profile, tiny_tokenizer):
    model = ScalarHeadModel(make_config(tiny_profile, tiny_tokenizer)).eval()
    left = encode_pairs(tiny_tokenizer, ["Q: 1 + 2 = ?", "Review: The movie was"], [" 3", " great. I loved it."], 64)
    scores = model.score(left.input_ids, left.attention_mask)
    alone = encode_pairs(tiny_tokenizer, ["Q: 1 + 2 = ?"], [" 3"], 64)
    assert torch.allclose(scores[0], model.score(alone.input_ids, alone.attention_mask)[0], atol=1e-5)
    # right padding: same sequence, padding moved to the end
    n = int(alone.attention_mask.sum())
    right_ids = torch.full((1, n + 3), tiny_tokenizer.pad_token_id)
    right_ids[0, :n] = alone.input_ids[0, -n:]
    right_mask = torch.zeros_like(right_ids)
    right_mask[0, :n] = 1
    assert torch.allclose(model.score(right_ids, right_mask)[0], scores[0], atol=1e-5)


def test_scalar_head_score_is_forward_at_the_last_token(tiny_profile, tiny_tokenizer):
    # score runs the last block at one position per row; forward runs it everywhere
    model = ScalarHeadModel(make_config(tiny_profile, tiny_tokenizer))
    batch = encode_pairs(tiny_tokenizer, ["Q: 1 + 2 = ?", "Review: The movie was", "Q: 7 - 4 = ?"],
                         [" 3", " great. I loved it.", " 3 because 7 - 4 = 3"], 64)
    blocks = model.transformer.h
    scores = model.score(batch.input_ids, batch.attention_mask)
    assert model.transformer.h is blocks and len(blocks) == tiny_profile.n_layer  # the model is restored
    last = batch.attention_mask.shape[1] - 1  # left padding: every row ends at the last column
    reference = model(batch.input_ids, batch.attention_mask)[:, last]
    assert torch.allclose(scores, reference, atol=1e-5), (scores, reference)
    weights = torch.tensor([1.0, -2.0, 0.5])
    fast = torch.autograd.grad((scores * weights).sum(), list(model.parameters()))
    slow = torch.autograd.grad((reference * weights).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_values_at_many_columns_is_forward_gathered(tiny_profile, tiny_tokenizer):
    # a PRM reads K columns per row: the padding column and the query's own, masked or not
    model = ScalarHeadModel(make_config(tiny_profile, tiny_tokenizer))
    batch = encode_pairs(tiny_tokenizer, ["Q: 1 + 2 = ?", "Review: The movie was", "Q: 7 - 4 = ?"],
                         [" 3", " great. I loved it.", " 3 because 7 - 4 = 3"], 64)
    width = batch.input_ids.shape[1]
    at = torch.tensor([[width - 1, width - 3, 0, width - 2], [width - 1, 5, width - 4, 1],
                       [2, width - 1, width - 1, width - 6]])
    values = model.values_at(batch.input_ids, batch.attention_mask, at)
    assert values.shape == (3, 4) and bool(torch.isfinite(values).all())
    reference = model(batch.input_ids, batch.attention_mask).gather(1, at)
    real = batch.attention_mask.gather(1, at).bool()  # a padding column's value is never read
    assert torch.allclose(values[real], reference[real], atol=1e-5), (values, reference)
    assert torch.allclose(model.values_at(batch.input_ids, batch.attention_mask, at[:, 0]), values[:, 0])
    weights = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * real
    fast = torch.autograd.grad((values * weights).sum(), list(model.parameters()))
    slow = torch.autograd.grad((reference * weights).sum(), list(model.parameters()))
    for (name, _), a, b in zip(model.named_parameters(), fast, slow):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name


def test_reward_model_from_language_model_copies_body(tiny_policy):
    rm = ScalarHeadModel.from_language_model(tiny_policy)
    for (name, p), (_, q) in zip(rm.transformer.named_parameters(), tiny_policy.transformer.named_parameters()):
        assert torch.equal(p, q), name


def test_reference_copy_is_frozen_and_independent(tiny_policy):
    ref = reference_copy(tiny_policy)
    assert not any(p.requires_grad for p in ref.parameters()) and not ref.training
    with torch.no_grad():
        next(tiny_policy.parameters()).add_(1.0)
    assert not torch.equal(next(tiny_policy.parameters()), next(ref.parameters()))


def test_load_pretrained_from_a_local_folder(tmp_path, tiny_policy, tiny_tokenizer):
    tiny_policy.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    model, tok = load_pretrained(tmp_path)
    assert isinstance(model, GPT2LMHeadModel)
    ids = torch.tensor([[3, 4, 5]])
    assert torch.allclose(model(ids).logits, tiny_policy(ids).logits, atol=1e-6)
    assert tok.pad_token_id == tiny_tokenizer.pad_token_id and tok.padding_side == "left"


def test_load_pretrained_gives_a_pad_token_when_missing(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    tok.save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tok), bos_token_id=0, eos_token_id=0)).save_pretrained(tmp_path)
    _, loaded = load_pretrained(tmp_path)
    assert loaded.pad_token == loaded.eos_token == "<|endoftext|>"
