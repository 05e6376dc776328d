"""The policy on the tiny model: generation, rollouts and their masks, adapters, checkpointing toggles."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from laimark_pl.modules.policy import PolicyConfig, load_policy
from laimark_pl.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


@pytest.fixture(scope="module")
def policy(tiny_dir):
    torch.manual_seed(0)
    return load_policy(PolicyConfig(model=tiny_dir, lora_r=4, device="cpu"))


@pytest.fixture(scope="module")
def stopping_policy(tiny_dir):
    """A policy whose eos logit is amplified, so some completions stop and others run out."""
    torch.manual_seed(0)
    pol = load_policy(PolicyConfig(model=tiny_dir, lora_r=4, device="cpu"))
    with torch.no_grad():
        pol.model.get_input_embeddings().weight[pol.tokenizer.eos_token_id] *= 4
    return pol


def test_config_defaults_match_the_study():
    cfg = PolicyConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules) == (16, 32, 0.05, ["q_proj", "v_proj"])
    assert cfg.enable_thinking is False and cfg.gradient_checkpointing is False


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="dtype"):
        PolicyConfig(dtype="fp8")
    with pytest.raises(ValueError, match="lora_r"):
        PolicyConfig(lora_r=0)


def test_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        load_policy(PolicyConfig(model=str(tmp_path / "missing.gguf")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_4bit_needs_cuda(tiny_dir):
    with pytest.raises(ValueError, match="CUDA"):
        load_policy(PolicyConfig(model=tiny_dir, load_in_4bit=True, device="cpu"))


def test_lora_wraps_the_target_modules(policy):
    trainable = [name for name, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("q_proj" in n for n in trainable) and any("v_proj" in n for n in trainable)
    assert not any("k_proj" in n for n in trainable)
    assert policy.num_trainable() == sum(p.numel() for p in policy.trainable_parameters())
    assert policy.model.training  # dropout active for the training forward


def test_generate_text_shapes(policy):
    out = policy.generate_text(["def add(a, b):", "Reverse a string.", "x"], num_samples=3, temperature=1.0,
                               max_new_tokens=5, seed=1)
    assert len(out) == 3 and all(len(samples) == 3 for samples in out)
    assert all(isinstance(text, str) for samples in out for text in samples)
    assert policy.generate_text([], num_samples=2) == []


def test_greedy_is_deterministic_and_independent_of_batching(policy):
    alone = policy.generate_text(["def f(x):"], max_new_tokens=8)
    batched = policy.generate_text(["def f(x):", "a much longer prompt that forces left padding of the first"],
                                   max_new_tokens=8)
    assert alone[0] == batched[0]
    assert policy.generate_text(["def f(x):"], max_new_tokens=8) == alone


def test_seeded_sampling_is_reproducible(policy):
    first = policy.generate_text(["def f(x):"], num_samples=4, temperature=1.0, max_new_tokens=8, seed=5)
    again = policy.generate_text(["def f(x):"], num_samples=4, temperature=1.0, max_new_tokens=8, seed=5)
    other = policy.generate_text(["def f(x):"], num_samples=4, temperature=1.0, max_new_tokens=8, seed=6)
    assert first == again and first != other


def test_seed_leaves_the_global_rng_alone(policy):
    torch.manual_seed(11)
    expected = torch.rand(2)
    torch.manual_seed(11)
    policy.generate_text(["x"], num_samples=2, temperature=1.0, max_new_tokens=3, seed=3)
    assert torch.equal(torch.rand(2), expected)


def test_system_prompt_reaches_the_chat_template(policy):
    text = policy.chat_prompt("Hi", system_prompt="Be terse.")
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert "system" not in policy.chat_prompt("Hi")


def test_rollout_masks_and_groups(stopping_policy):
    pol, tok = stopping_policy, stopping_policy.tokenizer
    rollout = pol.sample(["def add(a, b):", "Write code."], num_samples=8, temperature=1.0, max_new_tokens=6,
                         seed=0)
    assert len(rollout) == 16 and rollout.num_generations == 8
    assert rollout.group_index.tolist() == [0] * 8 + [1] * 8
    assert rollout.prompt_ids.shape[0] == rollout.completion_ids.shape[0] == 16
    assert rollout.input_ids.shape == rollout.attention_mask.shape
    assert rollout.truncated.any() and (~rollout.truncated).any()  # both kinds present
    for row in range(16):
        ids, mask = rollout.completion_ids[row], rollout.completion_mask[row]
        length = int(mask.sum())
        assert mask[:length].all() and not mask[length:].any()  # a prefix
        assert (ids[length:] == tok.pad_token_id).all()
        if rollout.truncated[row]:
            assert length == 6 and tok.eos_token_id not in ids.tolist()
            assert rollout.texts[row] == tok.decode(ids[:length], skip_special_tokens=True)
        else:
            assert ids[length - 1] == tok.eos_token_id  # the stop token is included...
            assert tok.eos_token_id not in ids[:length - 1].tolist()  # ...and it is the first one
            assert rollout.texts[row] == tok.decode(ids[:length - 1], skip_special_tokens=True)
    # prompts are left-padded: every row's prompt ends right before its completion
    assert rollout.prompt_mask[:, -1].all()


def test_rollout_select_keeps_rows_consistent(policy):
    rollout = policy.sample(["a", "b"], num_samples=2, temperature=1.0, max_new_tokens=3, seed=0)
    picked = rollout.select(torch.tensor([False, False, True, True]))
    assert picked.group_index.tolist() == [1, 1] and picked.texts == rollout.texts[2:]
    assert torch.equal(picked.completion_ids, rollout.completion_ids[2:])


def test_one_generate_call_per_chunk(tiny_dir):
    pol = load_policy(PolicyConfig(model=tiny_dir, lora_r=2, device="cpu", generation_batch_size=3))
    calls = []
    original = pol.model.generate

    def counting_generate(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    pol.model.generate = counting_generate
    try:
        rollout = pol.sample(["a", "b"], num_samples=4, temperature=1.0, max_new_tokens=3, seed=0)
    finally:
        pol.model.generate = original
    assert calls == [3, 3, 2] and len(rollout) == 8
    assert rollout.completion_ids.shape[1] <= 3


def test_gradient_checkpointing_is_off_while_sampling(tiny_dir):
    pol = load_policy(PolicyConfig(model=tiny_dir, lora_r=2, device="cpu", gradient_checkpointing=True))
    pol.model.train()
    layer = pol.model.get_base_model().model.layers[0]
    seen = []
    handle = layer.register_forward_pre_hook(
        lambda module, args: seen.append((module.gradient_checkpointing, module.training, torch.is_grad_enabled())))
    try:
        pol.sample(["def f(x):"], num_samples=2, temperature=1.0, max_new_tokens=3, seed=0)
    finally:
        handle.remove()
    assert seen and all(state == (False, False, False) for state in seen)
    assert layer.gradient_checkpointing and pol.model.training and pol.checkpointing_active  # restored


def test_sampling_never_uses_cudnn_attention(policy):
    """cuDNN attention re-plans for every new sequence length: decoding would be 2-3x slower."""
    layer = policy.model.get_base_model().model.layers[0]
    seen = []
    handle = layer.register_forward_pre_hook(
        lambda module, args: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        policy.sample(["def f(x):"], num_samples=2, temperature=1.0, max_new_tokens=3, seed=0)
    finally:
        handle.remove()
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before  # restored


def test_save_adapter_round_trips_through_peft(tmp_path, tiny_dir, policy):
    with torch.no_grad():
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    expected = policy.generate_text(["def f(x):"], max_new_tokens=8)
    path = policy.save_adapter(tmp_path / "adapter")
    assert (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file()
    assert (path / "tokenizer_config.json").is_file()
    AutoTokenizer.from_pretrained(path)

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    loaded = PeftModel.from_pretrained(base, path)
    for (name, a), b in zip(policy.model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name

    frozen = load_policy(PolicyConfig(model=tiny_dir, adapter=str(path), trainable=False, device="cpu"))
    assert frozen.num_trainable() == 0 and not frozen.model.training
    assert frozen.generate_text(["def f(x):"], max_new_tokens=8) == expected
    resumed = load_policy(PolicyConfig(model=tiny_dir, adapter=str(path), trainable=True, device="cpu"))
    assert resumed.num_trainable() == policy.num_trainable()
