"""`HumanEvalCallback`: HumanEval pass@1 of the trained policy, at the end of training.

Uses the same harness as ``laimark evaluate`` (`evaluate_generator`), so the trained adapter's
score is comparable with the base model's.

Example (YAML for ``laimark fit``)::

    trainer:
      callbacks:
        - class_path: laimark_pl.callbacks.humaneval.HumanEvalCallback
          init_args: {mode: full, max_new_tokens: 512}
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

from laimark_pl.evaluation.humaneval import EvalReport, evaluate_generator
from laimark_pl.prompts import ANSWER_MODES, AnswerMode

METRIC_PREFIX = "humaneval_pass_at_"
STAGES = ("fit", "validate", "test")


class HumanEvalCallback(pl.Callback):
    """Scores ``pl_module.policy`` on HumanEval when training ends (and, if asked, after
    ``validate``/``test``), with ``pl_module.system_prompt`` as the system message.

    Logs ``humaneval_pass_at_1`` (and ``humaneval_pass_at_<k>`` when sampling) to every logger
    and to ``trainer.callback_metrics``; writes per-problem results as JSONL under the log dir
    (or ``results_dir``) and keeps the path in ``results_path`` (the registry callback uploads
    it) and the score in ``pass_at_1``. The sandbox is ``pl_module.sandbox`` when the module has
    one, else a ``backend`` sandbox made for the evaluation. Runs on global rank zero only.

    Args:
        mode: answer style asked for, "full" (whole function) or "body" (continue it).
        samples: samples per problem; above 1 needs ``temperature > 0`` and gives pass@k.
        temperature: 0 is greedy decoding.
        top_p: nucleus sampling threshold.
        max_new_tokens: completion length limit.
        limit: only the first ``limit`` problems (quick checks); None is all 164.
        seed: sampling seed.
        stages: when to evaluate: any of "fit" (at the end of fit), "validate", "test".
        backend: sandbox backend used when the module has no sandbox.
        timeout_s: per-program time limit of a sandbox made here.
        results_dir: where the JSONL goes; default: the trainer's log dir.
        progress: show progress bars.
    """

    def __init__(
        self,
        mode: AnswerMode = "full",
        samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 512,
        limit: int | None = None,
        seed: int | None = None,
        stages: Sequence[str] = ("fit",),
        backend: str = "process",
        timeout_s: float = 5.0,
        results_dir: str | None = None,
        progress: bool = True,
    ) -> None:
        if mode not in ANSWER_MODES:
            raise ValueError(f"mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"stages must be among {', '.join(STAGES)}, got {unknown}")
        if samples > 1 and temperature <= 0:
            raise ValueError("samples > 1 needs temperature > 0")
        self.mode: AnswerMode = mode
        self.samples = samples
        self.temperature = temperature
        self.top_p = top_p
        self.max_new_tokens = max_new_tokens
        self.limit = limit
        self.seed = seed
        self.stages = tuple(stages)
        self.backend = backend
        self.timeout_s = timeout_s
        self.results_dir = results_dir
        self.progress = progress
        self.pass_at_1: float | None = None
        self.results_path: Path | None = None
        self.report: EvalReport | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_end, not on_fit_end: by on_fit_end the strategy has moved the model to the CPU
        if "fit" in self.stages:
            self._evaluate(trainer, pl_module, "fit")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "validate" in self.stages and trainer.state.fn == "validate":
            self._evaluate(trainer, pl_module, "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" in self.stages:
            self._evaluate(trainer, pl_module, "test")

    def _results_file(self, trainer: pl.Trainer, stage: str) -> Path:
        if self.results_dir is not None:
            base = Path(self.results_dir)
        else:
            from lightning.pytorch.loggers import MLFlowLogger

            log_dir = trainer.log_dir  # collective: every rank calls it
            mlflow_first = bool(trainer.loggers) and isinstance(trainer.loggers[0], MLFlowLogger)
            base = Path(trainer.default_root_dir if mlflow_first or not log_dir else log_dir)
        name = "humaneval_results.jsonl" if stage == "fit" else f"humaneval_results_{stage}.jsonl"
        return base / name

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        path = self._results_file(trainer, stage)
        if not trainer.is_global_zero:
            return
        policy = getattr(pl_module, "policy", None)
        if policy is None:
            raise AttributeError(f"{type(pl_module).__name__} has no 'policy' to evaluate on HumanEval")
        was_training = pl_module.training
        pl_module.eval()
        try:
            with ExitStack() as stack, torch.no_grad():
                sandbox = getattr(pl_module, "sandbox", None)
                if sandbox is None:
                    from laimark_pl.sandbox import create

                    sandbox = stack.enter_context(create(self.backend, timeout_s=self.timeout_s))
                report = evaluate_generator(
                    policy, sandbox, mode=self.mode, samples=self.samples,
                    temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                    system_prompt=getattr(pl_module, "system_prompt", None), limit=self.limit,
                    seed=self.seed, progress=self.progress)
        finally:
            pl_module.train(was_training)
        self.report = report
        self.pass_at_1 = report.pass_at_1
        self.results_path = report.write_jsonl(path)
        metrics = {f"{METRIC_PREFIX}{k}": float(v) for k, v in report.pass_at_k.items()}
        self._publish(trainer, metrics)
        rank_zero_info(f"HumanEval ({self.mode}, {stage}): pass@1 {100 * report.pass_at_1:.1f}% "
                       f"({report.passed}/{report.total}); results in {self.results_path}")

    @staticmethod
    def _publish(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        callback_metrics: dict[str, Any] = trainer.callback_metrics
        callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
