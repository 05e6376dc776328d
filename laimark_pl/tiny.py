"""A tiny random-weight Qwen2 chat model, made on the fly, for tests and the smoke config.

`build_tiny_model(dest)` writes a ~140k-parameter ``Qwen2ForCausalLM`` (hidden 64, 2 layers,
4 attention heads, 2 key/value heads, so ``q_proj``/``v_proj`` exist for LoRA) and a small
byte-level BPE tokenizer with a Qwen-style chat template. The directory loads through the
ordinary ``AutoModelForCausalLM.from_pretrained(dest)`` / ``AutoTokenizer.from_pretrained(dest)``
path, so every code path that serves a real model serves this one too. The tokenizer
(1024 tokens) ships in ``laimark_pl/data/tiny_tokenizer``; `train_tiny_tokenizer` regenerates
it from a few standard-library modules.

Example:
    >>> path = resolve_model("tiny")  # builds once into $LAIMARK_CACHE/tiny-0  # doctest: +SKIP
    >>> resolve_model("Qwen/Qwen3-8B")         # anything else passes through unchanged
    'Qwen/Qwen3-8B'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TINY_TOKENIZER_FILE = Path(__file__).parent / "data" / "tiny_tokenizer" / "tokenizer.json"
# Wider than the usual 0.02 so the random model is not near-uniform: its next-token distribution is
# peaked enough, and movable enough by a LoRA adapter, for GRPO tests to show learning.
INITIALIZER_RANGE = 0.3
# Bump when the built model changes, so cached builds (`resolve_model`) are rebuilt.
TINY_BUILD_VERSION = "2"
WEIGHTS_FILE = "model.safetensors"
BUILD_MARKER = "laimark_tiny_build.txt"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen-style ChatML. ``enable_thinking`` is accepted (any value) and ignored: the tiny model
# never thinks, but callers pass the Qwen3 kwarg unconditionally.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def cache_dir() -> Path:
    """Where built tiny models live: ``$LAIMARK_CACHE`` or ``~/.cache/laimark``."""
    return Path(os.environ.get("LAIMARK_CACHE") or Path.home() / ".cache" / "laimark")


def tiny_tokenizer():
    """The shipped tiny tokenizer as a ``PreTrainedTokenizerFast`` with chat template and pad token."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(TINY_TOKENIZER_FILE),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(dest: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random-weight Qwen2 causal LM and its tokenizer to ``dest``; return the path.

    Deterministic given ``seed`` (same weights, same files). Takes well under a second.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    dest = Path(dest)
    tokenizer = tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        initializer_range=INITIALIZER_RANGE,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    devices = []  # fork_rng without CUDA devices: seeding must not touch global RNG state
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    dest.mkdir(parents=True, exist_ok=True)
    # Not `model.save_pretrained`: once torch.distributed is initialised (every DDP rank resolves
    # "tiny" in `configure_model`), transformers writes model files on global rank 0 only, and
    # every rank, on every node, needs its own complete build.
    model.config.save_pretrained(dest)
    model.generation_config.save_pretrained(dest)
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()
               if name != "lm_head.weight"}  # tied to the input embeddings (tie_word_embeddings)
    save_file(weights, str(dest / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(dest)
    return dest


def resolve_model(spec: str) -> str:
    """Turn ``"tiny"`` / ``"tiny:<seed>"`` into the path of a built tiny model; pass others through.

    The model is built once into ``cache_dir()/tiny-<seed>`` (rebuilt when an older build of a
    different `TINY_BUILD_VERSION` is found). Building happens in a temporary directory that is
    renamed into place, so concurrent processes never see a half-written model.
    """
    if spec != "tiny" and not spec.startswith("tiny:"):
        return spec
    seed_text = spec.partition(":")[2] or "0"
    try:
        seed = int(seed_text)
    except ValueError as exc:
        raise ValueError(f"model spec {spec!r}: expected 'tiny' or 'tiny:<integer seed>'") from exc
    target = cache_dir() / f"tiny-{seed}"
    if _is_current(target):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tiny-{seed}-", dir=target.parent))
    stale = target.parent / f"{staging.name}-stale"
    try:
        build_tiny_model(staging, seed=seed)
        staging.chmod(0o755)
        (staging / BUILD_MARKER).write_text(TINY_BUILD_VERSION)
        try:
            staging.rename(target)
        except OSError:
            if not _is_current(target):  # an outdated build: move it aside, then take its place
                target.rename(stale)
                staging.rename(target)
    except OSError:
        if not _is_current(target):  # not a lost race with another builder: a real error
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    return str(target)


def _is_current(path: Path) -> bool:
    marker = path / BUILD_MARKER
    complete = (path / "config.json").is_file() and (path / WEIGHTS_FILE).is_file()
    return complete and marker.is_file() and marker.read_text() == TINY_BUILD_VERSION


def train_tiny_tokenizer(out: str | os.PathLike = TINY_TOKENIZER_FILE, vocab_size: int = 1024) -> Path:
    """Regenerate the shipped byte-level BPE tokenizer from a few standard-library modules.

    Only needed when changing the tokenizer; `build_tiny_model` uses the shipped file.
    """
    import bisect
    import collections
    import difflib
    import fractions
    import functools
    import heapq
    import inspect
    import json.decoder
    import json.encoder
    import statistics
    import string
    import textwrap

    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    modules = [textwrap, functools, heapq, bisect, statistics, string, fractions, collections, difflib,
               json.encoder, json.decoder]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([  # Qwen2's split, as transformers' Qwen2Tokenizer
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator([inspect.getsource(m) for m in modules], trainer=trainer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    return out
