"""The policy: a causal LM with a LoRA adapter, its tokenizer, and batched chat generation.

`load_policy(PolicyConfig(...))` loads the base model (hub id, local directory, local ``.gguf``
file or ``"tiny"``), optionally in 4 bits (QLoRA), wraps it in a peft LoRA adapter (new, or an
existing one to continue training or to evaluate) and returns a `Policy`. `Policy` implements
`laimark_pl.generation.TextGenerator` and `sample`, which returns the token-level `Rollout`
GRPO trains on. Gradient checkpointing, when configured, is on for training forwards and
switched off around every generation call.

Example:
    >>> policy = load_policy(PolicyConfig(model="tiny", lora_r=4))  # doctest: +SKIP
    >>> texts = policy.generate_text(["def add(a, b):"], num_samples=2, max_new_tokens=8)  # doctest: +SKIP
    >>> len(texts[0])  # doctest: +SKIP
    2
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class PolicyConfig:
    """How to load the policy model and its LoRA adapter.

    Args:
        model: hub id (``Qwen/Qwen3-8B``), local model directory, local ``.gguf`` file
            (dequantised by transformers' GGUF loader; needs the ``gguf`` package), or
            ``"tiny"`` / ``"tiny:<seed>"`` for the random-weight test model.
        dtype: weight dtype; ``"auto"`` is bfloat16 on a CUDA device that supports it,
            float32 otherwise.
        load_in_4bit: load the base in 4-bit NF4 (bitsandbytes, CUDA) for QLoRA.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names that get LoRA adapters.
        adapter: directory of an existing peft adapter to continue training from or to
            evaluate; ``None`` starts a fresh adapter.
        trainable: whether the adapter's weights can be trained (``False`` for evaluation).
        gradient_checkpointing: recompute activations in the training backward pass (never
            during sampling).
        enable_thinking: the Qwen3 chat-template switch; off as in the study.
        device: ``"auto"`` (CUDA if available, else CPU), or a torch device string.
        attn_implementation: e.g. ``"sdpa"``, ``"flash_attention_2"``; ``None`` lets
            transformers choose.
        trust_remote_code: allow model repositories that ship their own code.
        generation_batch_size: most sequences (prompts x samples) per ``generate`` call.
    """

    model: str = "tiny"
    dtype: DType = "auto"
    load_in_4bit: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    adapter: str | None = None
    trainable: bool = True
    gradient_checkpointing: bool = False
    enable_thinking: bool = False
    device: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    generation_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"PolicyConfig.dtype: expected auto|float32|bfloat16|float16, got {self.dtype!r}")
        if self.lora_r < 1:
            raise ValueError(f"PolicyConfig.lora_r must be >= 1, got {self.lora_r}")
        if self.generation_batch_size < 1:
            raise ValueError(f"PolicyConfig.generation_batch_size must be >= 1, got {self.generation_batch_size}")


@dataclass
class Rollout:
    """One batched sampling round: ``num_prompts * num_generations`` rows, grouped by prompt.

    Rows ``g * num_generations ... (g + 1) * num_generations - 1`` belong to prompt ``g``
    (``group_index[row] == g``). Prompts are left-padded, completions right-padded;
    ``completion_mask`` covers the generated tokens up to and including the stop token.
    """

    prompt_ids: Tensor  # (rows, P) left-padded
    prompt_mask: Tensor  # (rows, P)
    completion_ids: Tensor  # (rows, C) right-padded
    completion_mask: Tensor  # (rows, C) 1 on real completion tokens (stop token included)
    texts: list[str]  # decoded completions, special tokens removed
    truncated: Tensor  # (rows,) bool: hit max_new_tokens without a stop token
    group_index: Tensor  # (rows,) long: which prompt each row answers
    num_generations: int

    @property
    def input_ids(self) -> Tensor:
        """Prompt and completion ids side by side, (rows, P + C)."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """Attention mask matching `input_ids` (padding and tokens after the stop are 0)."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def completion_lengths(self) -> Tensor:
        """Real completion tokens per row."""
        return self.completion_mask.sum(dim=1)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def select(self, rows: Tensor) -> Rollout:
        """The rollout restricted to ``rows`` (indices or a boolean mask), e.g. for dynamic sampling."""
        if rows.dtype == torch.bool:
            rows = rows.nonzero(as_tuple=True)[0]
        idx = rows.tolist()
        return Rollout(
            prompt_ids=self.prompt_ids[rows], prompt_mask=self.prompt_mask[rows],
            completion_ids=self.completion_ids[rows], completion_mask=self.completion_mask[rows],
            texts=[self.texts[i] for i in idx], truncated=self.truncated[rows],
            group_index=self.group_index[rows], num_generations=self.num_generations,
        )


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other strings as torch devices."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    """The torch dtype for a config value; ``auto`` is bf16 on capable CUDA devices, else fp32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def _pretrained_location(model: str) -> tuple[str, dict]:
    """``from_pretrained`` path and extra kwargs for a model spec (GGUF files load from their dir)."""
    from laimark_pl.tiny import resolve_model

    spec = resolve_model(model)
    path = Path(spec)
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"PolicyConfig.model: GGUF file not found: {spec}")
        return str(path.parent), {"gguf_file": path.name}
    return spec, {}


# Every attention kernel but cuDNN's: cuDNN builds an execution plan for each new
# (batch, length) shape, and decoding meets a new length at every token (~40 ms of plan
# building per step the first time a batch size is seen: 2.6x slower generation on an H200).
_ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_kernels() -> contextlib.AbstractContextManager[None]:
    """Scaled-dot-product attention without the cuDNN backend (shapes vary every step in RL)."""
    return sdpa_kernel(_ATTENTION_BACKENDS)


def _decoding_kwargs(temperature: float, top_p: float) -> dict:
    """Greedy for temperature 0, else pure temperature/top-p sampling (no hidden top-k default)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}


class ModelLoadError(OSError):
    """The base model or adapter named in the config cannot be loaded (the message names the field)."""


def load_policy(config: PolicyConfig, device: str | torch.device | None = None) -> Policy:
    """Load base model + tokenizer and wrap the model in a (new or existing) LoRA adapter.

    ``device`` overrides ``config.device`` (the Lightning module passes the trainer's device).
    """
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = torch.device(device) if device is not None else resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, target)
    location, extra = _pretrained_location(config.model)
    kwargs: dict = dict(extra, dtype=dtype, trust_remote_code=config.trust_remote_code)
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.load_in_4bit:
        from transformers import BitsAndBytesConfig

        if target.type != "cuda":
            raise ValueError("PolicyConfig.load_in_4bit needs a CUDA device (bitsandbytes NF4)")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16,
        )
    if target.type == "cuda":
        kwargs["device_map"] = {"": target}
    try:
        base = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except OSError as exc:  # not a directory, file or reachable hub id
        raise ModelLoadError(f"policy.model: cannot load {config.model!r}: {str(exc).splitlines()[0]}") from exc
    if "gguf_file" in extra:  # name the file, not its directory, as the adapter's base_model_name_or_path
        base.name_or_path = base.config.name_or_path = str(Path(location) / extra["gguf_file"])
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=config.trust_remote_code,
                                              **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if config.load_in_4bit:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if config.adapter:
        if not (Path(config.adapter) / "adapter_config.json").is_file():
            raise ModelLoadError(f"policy.adapter: no peft adapter (adapter_config.json) in {config.adapter!r}")
        model = PeftModel.from_pretrained(base, config.adapter, is_trainable=config.trainable)
    else:
        lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=list(config.target_modules), task_type="CAUSAL_LM")
        model = get_peft_model(base, lora)
        if not config.trainable:
            for param in model.parameters():
                param.requires_grad_(False)
    if target.type != "cuda":
        model.to(target)
    model.train(config.trainable)  # from_pretrained returns eval mode: LoRA dropout and checkpointing need train
    return Policy(model, tokenizer, config)


class Policy(nn.Module):
    """A peft model plus tokenizer that samples chat completions (a `TextGenerator`)."""

    def __init__(self, model: nn.Module, tokenizer, config: PolicyConfig):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self._training_checkpointing = False
        self._checkpointing_active = False
        self.set_gradient_checkpointing(config.gradient_checkpointing)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end a completion: the tokenizer's eos plus the model's generation eos."""
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(configured, int):
            ids.add(configured)
        elif configured:
            ids.update(configured)
        return sorted(i for i in ids if i is not None)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn gradient checkpointing for training forwards on or off."""
        self._training_checkpointing = enabled
        self._apply_checkpointing(enabled)

    def _apply_checkpointing(self, enabled: bool) -> None:
        new_api = hasattr(self.model, "activation_checkpointing_enable")  # transformers >= 5 name
        if enabled and not self._checkpointing_active:
            if new_api:
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif not enabled and self._checkpointing_active:
            if new_api:
                self.model.activation_checkpointing_disable()
            else:
                self.model.gradient_checkpointing_disable()
        self._checkpointing_active = enabled

    @property
    def checkpointing_active(self) -> bool:
        """Whether gradient checkpointing is switched on right now."""
        return self._checkpointing_active

    @contextlib.contextmanager
    def generation_mode(self) -> Iterator[None]:
        """Eval mode, no gradient checkpointing, no autograd, `attention_kernels`; restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        if self._training_checkpointing:
            self._apply_checkpointing(False)
        try:
            with torch.no_grad(), attention_kernels():
                yield
        finally:
            if self._training_checkpointing:
                self._apply_checkpointing(True)
            self.model.train(was_training)

    def chat_prompt(self, user: str, system_prompt: str | None = None) -> str:
        """The chat-templated text for one user message, ready for the assistant's reply."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=self.config.enable_thinking
        )

    def sample(
        self,
        prompts: Sequence[str],
        num_samples: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        system_prompt: str | None = None,
        seed: int | None = None,
        desc: str | None = None,
    ) -> Rollout:
        """Sample ``num_samples`` completions for every user prompt (one ``generate`` call when
        ``generation_batch_size`` allows). ``temperature == 0`` is greedy."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        texts = [self.chat_prompt(p, system_prompt) for p in prompts]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        rows = torch.arange(len(texts)).repeat_interleave(num_samples)
        prompt_ids, prompt_mask = enc["input_ids"][rows], enc["attention_mask"][rows]
        chunk = self.config.generation_batch_size
        rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []) \
            if seed is not None else contextlib.nullcontext()
        pieces: list[Tensor] = []
        with self.generation_mode(), rng:
            if seed is not None:
                torch.manual_seed(seed)
            starts = range(0, len(rows), chunk)
            for start in tqdm(starts, desc=desc, disable=desc is None, unit="batch"):
                ids = prompt_ids[start:start + chunk].to(self.device)
                mask = prompt_mask[start:start + chunk].to(self.device)
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                    eos_token_id=self.stop_token_ids, pad_token_id=self.tokenizer.pad_token_id,
                    **_decoding_kwargs(temperature, top_p),
                )
                pieces.append(out[:, ids.shape[1]:].cpu())
        return self._rollout(prompt_ids, prompt_mask, pieces, rows, num_samples)

    def _rollout(self, prompt_ids: Tensor, prompt_mask: Tensor, pieces: list[Tensor], rows: Tensor,
                 num_samples: int) -> Rollout:
        width = max(p.shape[1] for p in pieces)
        pad = self.tokenizer.pad_token_id
        completion_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        truncated = torch.zeros(len(rows), dtype=torch.bool)
        stops = torch.tensor(self.stop_token_ids)
        texts: list[str] = []
        row = 0
        for piece in pieces:
            is_stop = torch.isin(piece, stops)
            for seq, stop in zip(piece, is_stop, strict=True):
                hits = stop.nonzero()
                length = int(hits[0]) + 1 if len(hits) else seq.shape[0]
                truncated[row] = len(hits) == 0
                completion_ids[row, :length] = seq[:length]
                completion_mask[row, :length] = 1
                text_ids = seq[: length - 1] if len(hits) else seq[:length]
                texts.append(self.tokenizer.decode(text_ids, skip_special_tokens=True))
                row += 1
        return Rollout(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                       completion_mask=completion_mask, texts=texts, truncated=truncated,
                       group_index=rows.clone(), num_generations=num_samples)

    def generate_text(
        self,
        prompts: Sequence[str],
        *,
        num_samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        system_prompt: str | None = None,
        seed: int | None = None,
        desc: str | None = None,
    ) -> list[list[str]]:
        """`TextGenerator.generate_text`: ``num_samples`` decoded completions per prompt."""
        if not prompts:
            return []
        rollout = self.sample(prompts, num_samples=num_samples, temperature=temperature, top_p=top_p,
                              max_new_tokens=max_new_tokens, system_prompt=system_prompt, seed=seed,
                              desc=desc)
        return [rollout.texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapter parameters the optimizer updates."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def save_adapter(self, path: str | Path) -> Path:
        """Write the adapter (standard peft format) and the tokenizer to ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    def num_trainable(self) -> int:
        """Count of trainable parameters."""
        return sum(math.prod(p.shape) for p in self.trainable_parameters())
