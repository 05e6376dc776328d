"""The tiny offline model: real loading path, chat template, determinism, cached resolution."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laimark_pl.tiny import BUILD_MARKER, TINY_BUILD_VERSION, build_tiny_model, resolve_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_loads_through_auto_classes(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    names = {name for name, _ in model.named_modules()}
    assert any(name.endswith("q_proj") for name in names) and any(name.endswith("v_proj") for name in names)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert 512 <= len(tokenizer) <= 2000
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id


def test_weights_load_completely_with_the_head_tied(tiny_dir):
    model, info = AutoModelForCausalLM.from_pretrained(tiny_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_every_distributed_rank_writes_a_complete_build(tmp_path, monkeypatch):
    """transformers' `save_pretrained` writes model files on global rank 0 only; each rank (each
    node) needs its own build of "tiny"."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda group=None: 1)
    path = build_tiny_model(tmp_path / "rank1", seed=0)
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {p.name for p in path.iterdir()}
    monkeypatch.undo()
    AutoModelForCausalLM.from_pretrained(path)


def test_tokenizer_round_trips_code(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    text = "def f(xs):\n    # héllo 😀\n\treturn [x ** 2 for x in xs if x >= 2]\n"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids == tiny_tokenizer()(text)["input_ids"]  # saved tokenizer == shipped one
    assert len(ids) < len(text.encode())  # BPE merges actually happen


def test_chat_template_is_chatml(tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False)
    assert text == ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert no_prompt.endswith("<|im_end|>\n")
    special = tokenizer("<|im_start|>user\n")["input_ids"]
    assert special[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_generates_and_stops(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    ids = tokenizer(["def f(x):", "hello"], return_tensors="pt", padding=True)
    out = model.generate(**ids, max_new_tokens=5, do_sample=True)
    assert out.shape[0] == 2 and out.shape[1] <= ids["input_ids"].shape[1] + 5


def test_deterministic_given_seed(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    same = (again / "model.safetensors").read_bytes() == (tiny_dir / "model.safetensors").read_bytes()
    assert same
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()


def test_build_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tmp_path / "m", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_resolve_model_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path / "cache"))
    first = resolve_model("tiny")
    assert first == str(tmp_path / "cache" / "tiny-0")
    mtime = os.stat(Path(first) / "model.safetensors").st_mtime_ns
    assert resolve_model("tiny:0") == first
    assert os.stat(Path(first) / "model.safetensors").st_mtime_ns == mtime  # not rebuilt
    assert resolve_model("tiny:3").endswith("tiny-3")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny-0", "tiny-3"]  # no temp dirs left


def test_resolve_model_passes_other_specs_through():
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert resolve_model("/models/tinyllama") == "/models/tinyllama"
    with pytest.raises(ValueError, match="tiny:<integer seed>"):
        resolve_model("tiny:abc")


def _resolve_in_child(cache: str, queue) -> None:
    os.environ["LAIMARK_CACHE"] = cache
    queue.put(resolve_model("tiny:5"))


def test_resolve_model_survives_a_race(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_resolve_in_child, args=(str(tmp_path), queue)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    results = {queue.get(timeout=5), queue.get(timeout=5)}
    assert results == {str(tmp_path / "tiny-5")}
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-5"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "tiny-5")


def test_resolve_model_rebuilds_an_outdated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path))
    old = tmp_path / "tiny-0"
    old.mkdir()
    (old / "config.json").write_text("{}")  # an earlier build, without the current marker
    path = Path(resolve_model("tiny"))
    assert (path / BUILD_MARKER).read_text() == TINY_BUILD_VERSION
    AutoModelForCausalLM.from_pretrained(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-0"]


def test_resolve_model_rebuilds_an_incomplete_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path))
    broken = tmp_path / "tiny-0"  # what a non-zero DDP rank used to leave: tokenizer and marker only
    broken.mkdir()
    (broken / BUILD_MARKER).write_text(TINY_BUILD_VERSION)
    (broken / "tokenizer.json").write_text("{}")
    path = Path(resolve_model("tiny"))
    assert (path / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(path)
