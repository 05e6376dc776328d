"""`RegistryCallback`: at the end of fit, record the trained adapter in MLflow and register it.

Into the run of the trainer's `MLFlowLogger` it logs the system prompt in use, the HumanEval
per-problem results, plots (reward / pass-rate curves, learnability histogram) and the adapter
as a pyfunc model, which it registers as a new version of ``name`` tagged with the HumanEval
score. Put it after `HumanEvalCallback` (which sets ``trainer.callback_metrics[metric]``); it
runs in ``on_fit_end``, after every ``on_train_end``, on global rank zero only.

Example (YAML for ``laimark fit``)::

    trainer:
      callbacks:
        - class_path: laimark_pl.callbacks.humaneval.HumanEvalCallback
        - class_path: laimark_pl.callbacks.registry.RegistryCallback
          init_args: {name: laimark}
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from laimark_pl.registry.log_model import ModelConfig
from laimark_pl.registry.plots import LEARNABILITY_WINDOW, log_run_plots
from laimark_pl.registry.versions import DEFAULT_METRIC, DEFAULT_MODEL_NAME, describe, register_adapter, score_tags


class RegistryCallback(pl.Callback):
    """Logs the final adapter as an MLflow model in the training run and registers a version.

    Args:
        name: registered model name.
        register: register a model version (False: only log the model, prompt, results, plots).
        metric: ``trainer.callback_metrics`` key holding the score, also the version tag name.
        log_model: log the adapter as a model (False: only prompt, results and plots).
        plots: log reward / pass-rate curves and the learnability histogram.
        learnability_window: the pass-rate window shaded in the histogram.
        max_new_tokens: the served model's default completion length.
        temperature: the served model's default temperature (0 = greedy).
    """

    def __init__(
        self,
        name: str = DEFAULT_MODEL_NAME,
        register: bool = True,
        metric: str = DEFAULT_METRIC,
        log_model: bool = True,
        plots: bool = True,
        learnability_window: tuple[float, float] = LEARNABILITY_WINDOW,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
    ) -> None:
        if register and not log_model:
            raise ValueError("RegistryCallback: register=True needs log_model=True")
        self.name = name
        self.register = register
        self.metric = metric
        self.log_model = log_model
        self.plots = plots
        self.learnability_window = tuple(learnability_window)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.model_version: Any = None  # the registered ModelVersion, once done

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and _mlflow_logger(trainer) is None:
            raise ValueError("RegistryCallback needs an MLFlowLogger among the trainer's loggers "
                             "(trainer.logger: class_path lightning.pytorch.loggers.MLFlowLogger)")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logger = _mlflow_logger(trainer)
        assert logger is not None  # checked in setup
        client, run_id = logger.experiment, logger.run_id
        uri = client.tracking_uri
        system_prompt = getattr(pl_module, "system_prompt", None)
        if system_prompt:
            client.log_text(run_id, system_prompt, "system_prompt.txt")
        humaneval = _humaneval_callback(trainer)
        if humaneval is not None and getattr(humaneval, "results_path", None):
            client.log_artifact(run_id, str(humaneval.results_path), "humaneval")
        pool = getattr(getattr(trainer, "datamodule", None), "pool", None)
        if self.plots:
            rates = [getattr(p, "pass_rate", None) for p in pool] if pool is not None else None
            log_run_plots(client, run_id, pass_rates=rates, window=self.learnability_window)  # type: ignore[arg-type]
        if not self.log_model:
            return
        score = _metric_value(trainer.callback_metrics.get(self.metric))
        if score is None and self.register:
            rank_zero_warn(f"RegistryCallback: no {self.metric!r} in trainer.callback_metrics (is HumanEvalCallback "
                           "configured before it?); registering the version without a score")
        config = self._model_config(pl_module)
        info = {
            "mode": getattr(humaneval, "mode", None) if score is not None else None,
            "samples": getattr(humaneval, "samples", None) if score is not None else None,
            "total": _evaluated_total(humaneval) if score is not None else None,
            "curriculum_size": len(pool) if pool is not None else None,
            "run_id": run_id,
        }
        with tempfile.TemporaryDirectory(prefix="laimark-adapter-") as tmp:
            adapter = _final_adapter(pl_module, Path(tmp))
            if not self.register:
                from laimark_pl.registry.log_model import log_adapter_model
                from laimark_pl.registry.tracking import attached_run

                with attached_run(run_id, uri):
                    log_adapter_model(adapter, config)
                return
            self.model_version = register_adapter(
                adapter, config, tracking_uri=uri, name=self.name, run_id=run_id,
                tags=score_tags(score, self.metric, base_model=config.base_model, **info),
                description=describe(config.base_model, score, self.metric, **info))
        rank_zero_info(f"Registered {self.name} version {self.model_version.version} "
                       f"({self.metric} = {score if score is not None else 'n/a'}); "
                       f"`laimark promote --name {self.name}` moves the champion alias")

    def _model_config(self, pl_module: pl.LightningModule) -> ModelConfig:
        policy_config = getattr(pl_module, "policy_config", None) or getattr(
            getattr(pl_module, "policy", None), "config", None)
        if policy_config is None:
            raise AttributeError(f"{type(pl_module).__name__} has no policy_config naming the base model")
        return ModelConfig.from_policy(
            policy_config, system_prompt=getattr(pl_module, "system_prompt", None),
            answer_mode=getattr(pl_module, "answer_mode", "full"), max_new_tokens=self.max_new_tokens,
            temperature=self.temperature)


def _mlflow_logger(trainer: pl.Trainer) -> MLFlowLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


def _humaneval_callback(trainer: pl.Trainer) -> Any:
    """The callback that produced the HumanEval score (it exposes ``results_path``), if any."""
    return next((cb for cb in trainer.callbacks if hasattr(cb, "results_path") and hasattr(cb, "pass_at_1")), None)


def _evaluated_total(humaneval: Any) -> int | None:
    """How many problems the HumanEval callback scored (its report's total)."""
    report = getattr(humaneval, "report", None)
    return getattr(report, "total", None)


def _metric_value(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _final_adapter(pl_module: pl.LightningModule, scratch: Path) -> Path:
    """``pl_module.final_adapter_dir`` when the module saved one, else the policy's adapter saved to ``scratch``."""
    final = getattr(pl_module, "final_adapter_dir", None)
    if final and (Path(final) / "adapter_config.json").is_file():
        return Path(final)
    policy = getattr(pl_module, "policy", None)
    if policy is None or not hasattr(policy, "save_adapter"):
        raise AttributeError(f"{type(pl_module).__name__} has neither final_adapter_dir nor policy.save_adapter")
    return Path(policy.save_adapter(scratch / "adapter"))
