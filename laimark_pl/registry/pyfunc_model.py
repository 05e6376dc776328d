r"""The MLflow model of a laimark adapter, written as an MLflow "model from code".

`laimark_pl.registry.log_model` logs this file as ``python_model``; MLflow executes it when the
model is loaded (no pickles). ``load_context`` loads the base model named in the model config with
the logged LoRA adapter through `laimark_pl.modules.policy.load_policy`; ``predict`` turns each
input into code:

* a string containing a function signature (``def name(...)`` + docstring): the model is asked to
  implement it (``answer_mode`` full or body, as in training) and the answer is returned as a
  complete program (preamble + function), read with `laimark_pl.prompts.extract_code`;
* any other string: a free-form request; the first Python code block of the reply (or the reply);
* chat messages ``[{"role": "system"|"user", "content": ...}, ...]`` or ``{"messages": [...]}``:
  one user message, optionally a system message replacing the model's system prompt; the first
  code block of the reply (or the reply).

Params (per request): ``max_new_tokens``, ``temperature`` (0 = greedy), ``top_p``, ``seed`` (sampling
reproducibility).

Example request to a served model::

    {"inputs": ["def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n"], "params": {"max_new_tokens": 128}}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

from laimark_pl.problems import Problem
from laimark_pl.prompts import code_blocks, extract_code, induction_prompt, strip_thinking

GENERATION_PARAMS = ("max_new_tokens", "temperature", "top_p", "seed")
_LAST_DEF = re.compile(r"^(?:async\s+)?def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


class ModelInputError(ValueError):
    """A request item the model cannot interpret; the message names the item."""


@dataclass(frozen=True)
class CodeRequest:
    """One normalised input: the user message to send, its system prompt, and how to read the reply."""

    user_message: str
    system_prompt: str | None
    signature: str | None = None  # the function header/docstring to complete, if any
    entry_point: str | None = None

    def code_from(self, completion: str) -> str:
        """The code in ``completion``: a full program for a signature request, else the first code block."""
        if self.signature is not None and self.entry_point is not None:
            return extract_code(completion, self.signature, self.entry_point)
        text = strip_thinking(completion)
        blocks = code_blocks(text)
        return blocks[0] if blocks else text.strip()


def entry_point_of(text: str) -> str | None:
    """Name of the last top-level ``def`` in ``text`` (HumanEval-style prompts put helpers first)."""
    names = _LAST_DEF.findall(text)
    return names[-1] if names else None


def parse_request(item: Any, index: int, *, system_prompt: str | None, answer_mode: str) -> CodeRequest:
    """Normalise one input item (see the module docstring); raises `ModelInputError`."""
    if isinstance(item, Mapping):
        if "messages" in item:
            return _chat_request(item["messages"], index, system_prompt)
        if "prompt" in item:
            return parse_request(item["prompt"], index, system_prompt=system_prompt, answer_mode=answer_mode)
        raise ModelInputError(f"input {index}: a mapping must have 'messages' or 'prompt', got keys {sorted(item)}")
    if isinstance(item, str):
        if not item.strip():
            raise ModelInputError(f"input {index}: empty prompt")
        entry_point = entry_point_of(item)
        if entry_point is None:
            return CodeRequest(item, system_prompt)
        problem = Problem(prompt=item, tests="", entry_point=entry_point)
        return CodeRequest(induction_prompt(problem, answer_mode), system_prompt, item, entry_point)  # type: ignore[arg-type]
    if isinstance(item, Sequence):
        return _chat_request(item, index, system_prompt)
    raise ModelInputError(f"input {index}: expected a prompt string or chat messages, got {type(item).__name__}")


def _chat_request(messages: Any, index: int, default_system: str | None) -> CodeRequest:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ModelInputError(f"input {index}: 'messages' must be a non-empty list of {{role, content}} objects")
    system, users = default_system, []
    for position, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("content"), str):
            raise ModelInputError(f"input {index}, message {position}: expected {{'role': ..., 'content': str}}")
        role = message.get("role")
        if role == "system":
            system = message["content"]
        elif role == "user":
            users.append(message["content"])
        else:
            raise ModelInputError(
                f"input {index}, message {position}: role {role!r} is not supported (one 'user' message, "
                "optionally one 'system' message; multi-turn conversations are not)")
    if len(users) != 1:
        raise ModelInputError(f"input {index}: expected exactly one 'user' message, got {len(users)}")
    return CodeRequest(users[0], system)


def generation_settings(defaults: Mapping[str, Any], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per-request generation settings: model-config defaults overridden by request params."""
    settings = {name: defaults[name] for name in GENERATION_PARAMS if name in defaults}
    for name, value in (params or {}).items():
        if name in GENERATION_PARAMS and value is not None:
            settings[name] = value
    settings["max_new_tokens"] = int(settings.get("max_new_tokens", 512))
    settings["temperature"] = float(settings.get("temperature", 0.0))
    settings["top_p"] = float(settings.get("top_p", 1.0))
    settings["seed"] = None if settings.get("seed") is None else int(settings["seed"])
    if settings["max_new_tokens"] < 1:
        raise ModelInputError(f"max_new_tokens must be >= 1, got {settings['max_new_tokens']}")
    if settings["temperature"] < 0 or not 0 < settings["top_p"] <= 1:
        raise ModelInputError(f"need temperature >= 0 and 0 < top_p <= 1, got {settings}")
    return settings


class LaimarkCodeModel(PythonModel):
    """Base model + laimark LoRA adapter that answers prompts with code."""

    def load_context(self, context) -> None:
        from laimark_pl.modules.policy import PolicyConfig, load_policy

        config = dict(context.model_config or {})
        base = config.get("base_model")
        if not base:
            raise mlflow.exceptions.MlflowException("laimark model config has no 'base_model'")
        self.config = config
        overrides = dict(config.get("policy") or {})
        try:
            policy_config = PolicyConfig(model=base, adapter=context.artifacts["adapter"], trainable=False,
                                         **overrides)
        except TypeError as exc:
            raise mlflow.exceptions.MlflowException(
                f"laimark model config 'policy' has settings PolicyConfig does not accept: {exc}") from exc
        try:
            self.policy = load_policy(policy_config)
        except Exception as exc:
            raise mlflow.exceptions.MlflowException(
                f"cannot load base model {base!r} with the logged adapter: {type(exc).__name__}: {exc}. "
                "The base model must be a Hugging Face hub id reachable from here (or in the local HF cache), "
                "a local model directory, or 'tiny'.") from exc
        tokenizer_dir = _tokenizer_dir(context.artifacts)
        if tokenizer_dir is not None:
            self.policy.tokenizer = _load_tokenizer(tokenizer_dir, self.policy.tokenizer, overrides)

    def predict(self, context, model_input: list[Any], params: dict[str, Any] | None = None) -> list[str]:
        requests = [
            parse_request(item, i, system_prompt=self.config.get("system_prompt"),
                          answer_mode=self.config.get("answer_mode", "full"))
            for i, item in enumerate(_as_items(model_input))
        ]
        settings = generation_settings(self.config, params)
        outputs: list[str | None] = [None] * len(requests)
        by_system: dict[str | None, list[int]] = {}
        for i, request in enumerate(requests):
            by_system.setdefault(request.system_prompt, []).append(i)
        for system_prompt, indices in by_system.items():
            completions = self.policy.generate_text(
                [requests[i].user_message for i in indices], num_samples=1, system_prompt=system_prompt,
                **settings)
            for i, samples in zip(indices, completions, strict=True):
                outputs[i] = requests[i].code_from(samples[0])
        return [out or "" for out in outputs]


def _tokenizer_dir(artifacts: Mapping[str, str]) -> str | None:
    """The logged tokenizer: the ``tokenizer`` artifact, else the one saved with the adapter."""
    if "tokenizer" in artifacts:
        return artifacts["tokenizer"]
    adapter = Path(artifacts["adapter"])
    return str(adapter) if (adapter / "tokenizer_config.json").is_file() else None


def _load_tokenizer(path: str, base_tokenizer: Any, overrides: Mapping[str, Any]) -> Any:
    """The tokenizer trained with the adapter (its chat template), set up for left-padded generation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(overrides.get("trust_remote_code")))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or base_tokenizer.pad_token
    tokenizer.padding_side = "left"
    return tokenizer


def _as_items(model_input: Any) -> list[Any]:
    """Accept a list, a single prompt, or a pandas DataFrame/Series (one item per row)."""
    if isinstance(model_input, (str, Mapping)):
        return [model_input]
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with mlflow
        pd = None
    if pd is not None and isinstance(model_input, pd.DataFrame):
        if "messages" in model_input.columns:
            return [{"messages": list(m)} for m in model_input["messages"]]
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return list(model_input[column])
    if pd is not None and isinstance(model_input, pd.Series):
        return list(model_input)
    return list(model_input)


mlflow.models.set_model(LaimarkCodeModel())
