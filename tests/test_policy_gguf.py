"""The policy loaded from a local ``.gguf`` file (transformers' GGUF loader), on a tiny GGUF
written on the fly from the tiny Qwen2 model: same logits, same tokenizer and chat template,
same greedy generations, and a LoRA adapter that saves and loads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laimark_pl.modules.policy import PolicyConfig, load_policy
from laimark_pl.tiny import build_tiny_model

gguf = pytest.importorskip("gguf", reason="the gguf package is needed to write and load GGUF files "
                                          "(pip install 'laimark_pl[gguf]')")

PROMPTS = ["def add(a, b):", "Write a function that reverses a list."]

# transformers' Qwen2 parameter name (within a layer) -> llama.cpp's GGUF tensor name.
LAYER_TENSOR_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
GGUF_CONTROL_TOKEN = 3
GGUF_NORMAL_TOKEN = 1


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of a Qwen2ForCausalLM parameter; ``None`` for the tied ``lm_head``."""
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return None  # tied to token_embd: a GGUF without output.weight means tie_word_embeddings
    prefix, _, rest = hf_name.removeprefix("model.layers.").partition(".")
    if not hf_name.startswith("model.layers.") or rest not in LAYER_TENSOR_NAMES:
        raise KeyError(f"no GGUF name for parameter {hf_name!r}")
    return f"blk.{prefix}.{LAYER_TENSOR_NAMES[rest]}"


def write_qwen2_gguf(model_dir: Path, dest: Path) -> Path:
    """Write the (float32, tied-embedding) Qwen2 model and tokenizer in ``model_dir`` as an F32 GGUF."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    assert config.tie_word_embeddings, "the writer leaves out output.weight, so it needs tied embeddings"
    writer = gguf.GGUFWriter(dest, "qwen2")
    writer.add_name("laimark-tiny")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([GGUF_CONTROL_TOKEN if i in special else GGUF_NORMAL_TOKEN for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    for hf_name, tensor in model.state_dict().items():
        name = gguf_tensor_name(hf_name)
        if name is not None:
            writer.add_tensor(name, tensor.detach().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def gguf_file(tiny_dir, tmp_path_factory) -> Path:
    return write_qwen2_gguf(tiny_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


@pytest.fixture(scope="module")
def gguf_policy(gguf_file):
    return load_policy(PolicyConfig(model=str(gguf_file), dtype="float32", trainable=False, lora_r=4,
                                    device="cpu"))


@pytest.fixture(scope="module")
def dir_policy(tiny_dir):
    return load_policy(PolicyConfig(model=str(tiny_dir), dtype="float32", trainable=False, lora_r=4,
                                    device="cpu"))


def test_gguf_logits_equal_the_original_model(gguf_policy, tiny_dir):
    original = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 300, 2, 1, 99, 1023, 64]])
    with torch.no_grad():
        expected = original(ids).logits
        with gguf_policy.model.disable_adapter():
            base = gguf_policy.model(input_ids=ids).logits
        adapted = gguf_policy.model(input_ids=ids).logits  # a fresh LoRA adapter is the identity
    assert gguf_policy.model.base_model.model.config.tie_word_embeddings
    assert expected.std() > 0.1  # the tiny model's logits are not flat, so equality means something
    torch.testing.assert_close(base, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapted, expected, rtol=1e-5, atol=1e-5)


def test_gguf_tokenizer_and_chat_template_match(gguf_policy, dir_policy):
    text = gguf_policy.chat_prompt(PROMPTS[0], system_prompt="Be brief.")
    assert text == dir_policy.chat_prompt(PROMPTS[0], system_prompt="Be brief.")
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n")
    sample = text + "    return [x ** 2 for x in range(10)]  # café\n"
    assert gguf_policy.tokenizer(sample)["input_ids"] == dir_policy.tokenizer(sample)["input_ids"]
    assert gguf_policy.tokenizer.eos_token == "<|im_end|>"
    assert gguf_policy.tokenizer.pad_token == "<|endoftext|>"
    assert gguf_policy.stop_token_ids == dir_policy.stop_token_ids


def test_gguf_generate_text_matches_the_directory_model(gguf_policy, dir_policy):
    got = gguf_policy.generate_text(PROMPTS, max_new_tokens=12, system_prompt="Be brief.")
    expected = dir_policy.generate_text(PROMPTS, max_new_tokens=12, system_prompt="Be brief.")
    assert got == expected
    assert [len(samples) for samples in got] == [1, 1]
    assert any(text for samples in got for text in samples)


def test_gguf_lora_adapter_trains_saves_and_loads_back(gguf_file, tmp_path):
    torch.manual_seed(0)
    policy = load_policy(PolicyConfig(model=str(gguf_file), dtype="float32", trainable=True, lora_r=4,
                                      device="cpu"))
    trainable = [name for name, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert any("q_proj" in name for name in trainable) and any("v_proj" in name for name in trainable)
    with torch.no_grad():  # move the adapter away from the identity so saving/loading is visible
        for param in policy.trainable_parameters():
            param.add_(torch.randn_like(param) * 0.5)
    ids = torch.tensor([[3, 40, 500, 7]])
    policy.model.eval()
    with torch.no_grad():
        adapted = policy.model(input_ids=ids).logits
        with policy.model.disable_adapter():
            base = policy.model(input_ids=ids).logits
    assert not torch.allclose(adapted, base, atol=1e-3)

    saved = policy.save_adapter(tmp_path / "adapter")
    adapter_config = json.loads((saved / "adapter_config.json").read_text())
    assert (saved / "adapter_model.safetensors").is_file()
    assert adapter_config["base_model_name_or_path"] == str(gguf_file)

    reloaded = load_policy(PolicyConfig(model=str(gguf_file), dtype="float32", trainable=False,
                                        adapter=str(saved), device="cpu"))
    assert reloaded.num_trainable() == 0
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(input_ids=ids).logits, adapted, rtol=1e-5, atol=1e-5)
