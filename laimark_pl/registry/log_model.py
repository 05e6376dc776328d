"""Log a LoRA adapter as an MLflow pyfunc model (a "model from code", see `pyfunc_model`).

The logged model holds the adapter directory (peft format, normally with its tokenizer) as the
``adapter`` artifact, optionally a separate ``tokenizer`` artifact, a copy of the ``laimark_pl``
package as code (so a served model imports the code it was logged with), and a `ModelConfig`
(base model, system prompt, answer mode, generation defaults, policy loading settings). Its
signature takes a list of prompts or chat messages with params ``max_new_tokens``,
``temperature``, ``top_p`` and ``seed`` and returns code strings.

Example:
    >>> with mlflow.start_run():                                          # doctest: +SKIP
    ...     info = log_adapter_model("adapter/", ModelConfig(base_model="Qwen/Qwen3-8B"))
    >>> mlflow.pyfunc.load_model(info.model_uri).predict(["def add(a, b):"])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import laimark_pl

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
DEFAULT_ARTIFACT_NAME = "model"
# Settings of PolicyConfig that matter for inference and travel with the model.
INFERENCE_POLICY_FIELDS = ("dtype", "load_in_4bit", "enable_thinking", "attn_implementation", "trust_remote_code",
                           "generation_batch_size")
# Distributions the served model imports (pinned to the versions that logged it).
RUNTIME_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "peft", "tokenizers", "safetensors", "accelerate",
                         "lightning", "tqdm", "numpy", "pandas")


class AdapterDirError(ValueError):
    """The adapter directory is missing or not a peft adapter."""


@dataclass
class ModelConfig:
    """Everything besides the adapter weights that the served model needs.

    Args:
        base_model: hub id, local directory, ``.gguf`` file or ``"tiny"`` the adapter was trained on.
        system_prompt: system message used when a request brings none (the evolved prompt).
        answer_mode: ``"full"`` (write the whole function) or ``"body"`` for signature prompts.
        max_new_tokens: default completion length (a request's params override it).
        temperature: default sampling temperature; 0 is greedy.
        top_p: default nucleus threshold.
        policy: further `PolicyConfig` settings for loading (e.g. ``dtype``, ``load_in_4bit``).
    """

    base_model: str
    system_prompt: str | None = None
    answer_mode: str = "full"
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    policy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_model:
            raise ValueError("ModelConfig.base_model must name the base model the adapter belongs to")
        if self.answer_mode not in ("full", "body"):
            raise ValueError(f"ModelConfig.answer_mode must be 'full' or 'body', got {self.answer_mode!r}")

    def to_dict(self) -> dict[str, Any]:
        """The MLflow ``model_config`` (plain JSON/YAML types)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_policy(cls, policy_config: Any, **kwargs: Any) -> ModelConfig:
        """Config for an adapter trained with ``policy_config`` (a `PolicyConfig`)."""
        policy = {name: getattr(policy_config, name) for name in INFERENCE_POLICY_FIELDS
                  if hasattr(policy_config, name)}
        return cls(base_model=policy_config.model, policy=policy, **kwargs)


def check_adapter_dir(adapter_dir: str | Path) -> Path:
    """``adapter_dir`` as a Path if it holds a peft adapter (``adapter_config.json``), else `AdapterDirError`."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise AdapterDirError(f"adapter directory not found: {path}")
    if not (path / "adapter_config.json").is_file():
        raise AdapterDirError(f"{path} is not a peft adapter directory (no adapter_config.json)")
    return path


def params_schema(config: ModelConfig):
    """The signature's params (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``), defaults from ``config``."""
    from mlflow.types import DataType, ParamSchema, ParamSpec

    return ParamSchema([
        ParamSpec("max_new_tokens", DataType.long, int(config.max_new_tokens)),
        ParamSpec("temperature", DataType.double, float(config.temperature)),
        ParamSpec("top_p", DataType.double, float(config.top_p)),
        ParamSpec("seed", DataType.long, None),
    ])


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the served model, from the installed distributions
    (laimark_pl itself travels as code)."""
    requirements = []
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            requirements.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return requirements


def _package_copy(dest: Path) -> Path:
    """A copy of the ``laimark_pl`` package without caches, for ``code_paths``."""
    source = Path(laimark_pl.__file__).parent
    target = dest / "laimark_pl"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return target


def log_adapter_model(
    adapter_dir: str | Path,
    config: ModelConfig,
    *,
    tokenizer_dir: str | Path | None = None,
    name: str = DEFAULT_ARTIFACT_NAME,
    metadata: dict[str, Any] | None = None,
):
    """Log the adapter as a pyfunc model in the active MLflow run; returns MLflow's ``ModelInfo``.

    The signature's params are written after logging: MLflow only derives params from an input
    example, and an example would make it load the base model while logging.
    """
    import mlflow

    adapter = check_adapter_dir(adapter_dir)
    artifacts = {"adapter": str(adapter)}
    if tokenizer_dir is not None:
        tokenizer = Path(tokenizer_dir)
        if not (tokenizer / "tokenizer_config.json").is_file():
            raise AdapterDirError(f"{tokenizer} is not a tokenizer directory (no tokenizer_config.json)")
        artifacts["tokenizer"] = str(tokenizer)
    with tempfile.TemporaryDirectory(prefix="laimark-code-") as tmp, warnings.catch_warnings():
        # No input example on purpose: MLflow would load the base model to run it while logging.
        warnings.filterwarnings("ignore", message=r".*input example was not provided")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts=artifacts,
            model_config=config.to_dict(),
            code_paths=[str(_package_copy(Path(tmp)))],
            pip_requirements=pip_requirements(),
            metadata={"laimark_version": laimark_pl_version(), **(metadata or {})},
        )
    signature = info.signature
    signature.params = params_schema(config)
    mlflow.models.set_signature(info.model_uri, signature)
    return info


def laimark_pl_version() -> str:
    """The installed laimark_pl version (``"unknown"`` when running from a bare checkout)."""
    try:
        return importlib.metadata.version("laimark_pl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
