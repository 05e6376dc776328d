"""`CurriculumRefresh`: the policy rewrites its own curriculum between epochs.

Every ``every_n_epochs`` epochs (and at fit start when the pool is empty) it runs the five
curriculum stages with the CURRENT policy (`laimark_pl.curriculum.pipeline.run_round`), then
merges: pool problems still inside the learnability window (re-calibrated in the same batch)
stay, mastered (and now too hard) ones retire, accepted new ones join, and the type mix is
capped. The DataModule's next train dataloader serves the new pool (set
``trainer.reload_dataloaders_every_n_epochs: 1``).

A refresh that fails (nothing new accepted, or an exception) keeps the previous pool, logs the
reason (a warning and ``curriculum/refresh_failed = 1``) and training goes on.

Logged per refresh: funnel counts, rejections per rule, seconds per stage, pool changes, type
mix and a pass-rate histogram as metrics; a histogram PNG, the funnel and the accepted problems
(a JSON table) as files under ``<output_dir>/refresh_<n>/``, uploaded as artifacts when an
MLflow logger is attached.

Example (YAML for ``laimark fit``)::

    trainer:
      reload_dataloaders_every_n_epochs: 1
      callbacks:
        - class_path: laimark_pl.callbacks.curriculum_refresh.CurriculumRefresh
          init_args: {every_n_epochs: 1, num_candidates: 32, samples: 8, lo: 0.2, hi: 0.8}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from laimark_pl.curriculum.calibrate import Calibration, CalibrationConfig, pass_rate_histogram
from laimark_pl.curriculum.dedup import Decontaminator
from laimark_pl.curriculum.pipeline import RoundConfig, run_round
from laimark_pl.curriculum.propose import DEFAULT_DIFFICULTIES, DEFAULT_TOPICS, ProposeConfig
from laimark_pl.curriculum.task_types import cap_type_mix, type_mix
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import Problem, problem_from_record, read_problems

PREFIX = "curriculum/"
HISTOGRAM_BINS = 5


class CurriculumRefresh(pl.Callback):
    """Refresh ``trainer.datamodule.pool`` with problems the current policy writes and can learn from.

    Needs a module with ``.policy`` (a `TextGenerator`), ``.system_prompt`` and ``.sandbox``
    (`GRPOModule` has them) and a datamodule with ``.pool`` and ``.set_pool`` (`CurriculumDataModule`);
    a datamodule restricted to some ``problem_types`` only receives problems of those types.

    Args:
        every_n_epochs: refresh after every N-th training epoch (0: only the fit-start bootstrap).
        num_candidates: proposals per refresh.
        samples: calibration samples per problem (K).
        lo: lowest pass rate kept.
        hi: highest pass rate kept; pool problems above it are retired as mastered.
        harder_share: share of proposals that ask for a harder variant of a pool problem.
        max_type_share: no problem type above this share of the pool.
        propose_temperature: sampling temperature of proposals.
        calibrate_temperature: sampling temperature of calibration.
        max_new_tokens: length limit of proposals and calibration answers.
        topics: topics of fresh proposals (default: ~20 from the study).
        difficulties: difficulty labels drawn for fresh proposals.
        dedup_threshold: docstring word-trigram Jaccard above which a candidate is a duplicate.
        decontaminate: reject candidates close to HumanEval.
        derive_types: add deduction/abduction tasks derived from verified problems.
        recalibrate_pool: re-measure the pool's pass rates (and retire what left the window).
        max_pool_size: keep at most this many problems (those nearest pass rate 0.5).
        bootstrap: at fit start, refresh once if the pool is empty (a run may start from nothing).
        seed: base seed (refresh ``n`` uses ``seed + n``); ``None``: the run's ``seed_everything``.
        output_dir: where refresh files go (default ``<default_root_dir>/curriculum``).
        reserved: JSONL of problems never to admit (the ``PromptEvolution`` held-out set): new
            candidates that duplicate them are rejected like duplicates of the pool.
        generator: write and calibrate with this model instead of ``pl_module.policy`` (the
            study used a separate deployment model; the default, the policy, is what it should
            have done).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_candidates: int = 32,
        samples: int = 8,
        lo: float = 0.2,
        hi: float = 0.8,
        harder_share: float = 0.5,
        max_type_share: float = 0.5,
        propose_temperature: float = 0.9,
        calibrate_temperature: float = 0.7,
        max_new_tokens: int = 1024,
        topics: Sequence[str] | None = None,
        difficulties: Sequence[str] | None = None,
        dedup_threshold: float = 0.6,
        decontaminate: bool = True,
        derive_types: bool = True,
        recalibrate_pool: bool = True,
        max_pool_size: int | None = None,
        bootstrap: bool = True,
        seed: int | None = None,
        output_dir: str | None = None,
        reserved: str | None = None,
        generator: TextGenerator | None = None,
    ) -> None:
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}")
        if max_pool_size is not None and max_pool_size < 1:
            raise ValueError(f"max_pool_size must be >= 1, got {max_pool_size}")
        self.every_n_epochs = every_n_epochs
        self.round_config = RoundConfig(
            num_candidates=num_candidates,
            propose=ProposeConfig(topics=tuple(topics or DEFAULT_TOPICS),
                                  difficulties=tuple(difficulties or DEFAULT_DIFFICULTIES),
                                  harder_share=harder_share, temperature=propose_temperature,
                                  max_new_tokens=max_new_tokens),
            calibration=CalibrationConfig(samples=samples, temperature=calibrate_temperature,
                                          max_new_tokens=max_new_tokens, lo=lo, hi=hi),
            dedup_threshold=dedup_threshold, decontaminate=decontaminate, derive_types=derive_types,
            max_type_share=max_type_share)
        self.recalibrate_pool = recalibrate_pool
        self.max_pool_size = max_pool_size
        self.bootstrap = bootstrap
        self.seed = seed
        self.output_dir = output_dir
        self.reserved: list[Problem] = read_problems(reserved) if reserved else []
        self.generator = generator
        self.refreshes = 0
        self.history: list[dict[str, Any]] = []
        self._decontaminator: Decontaminator | None = None

    # ---------------------------------------------------------------- lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = _datamodule(trainer)
        if not trainer.reload_dataloaders_every_n_epochs:
            rank_zero_warn("CurriculumRefresh: set trainer.reload_dataloaders_every_n_epochs=1, otherwise the "
                           "refreshed pool is not served until the next fit")
        if self.bootstrap and not datamodule.pool:
            self.refresh(trainer, pl_module, trigger="bootstrap")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        if last_epoch:
            return  # nothing would train on it (the next round's fit bootstraps its own)
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.refresh(trainer, pl_module, trigger=f"epoch {trainer.current_epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.refreshes = int(state_dict.get("refreshes", 0))

    # ---------------------------------------------------------------- the refresh
    def refresh(self, trainer: pl.Trainer, pl_module: pl.LightningModule, trigger: str = "manual") -> bool:
        """Run one refresh now; True when the pool was replaced. Runs on global rank zero; the
        new pool is broadcast to the other ranks."""
        datamodule = _datamodule(trainer)
        self.refreshes += 1
        outcome: dict[str, Any] | None = None
        if trainer.is_global_zero:
            outcome = self._compute(trainer, pl_module, list(datamodule.pool), trigger)
        outcome = trainer.strategy.broadcast(outcome, src=0)
        assert outcome is not None
        if outcome["pool"] is not None:
            datamodule.set_pool([problem_from_record(r) for r in outcome["pool"]])
        return outcome["pool"] is not None

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, pool: list[Problem],
                 trigger: str) -> dict[str, Any]:
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        record: dict[str, Any] = {"refresh": self.refreshes, "trigger": trigger, "epoch": trainer.current_epoch}
        new_pool: list[Problem] | None = None
        files: dict[str, Any] = {}
        was_training = pl_module.training
        pl_module.eval()
        try:
            generator = self.generator or getattr(pl_module, "policy", None)
            sandbox = getattr(pl_module, "sandbox", None)
            if generator is None or sandbox is None:
                raise AttributeError(f"{type(pl_module).__name__} needs .policy and .sandbox for CurriculumRefresh")
            if self._decontaminator is None and self.round_config.decontaminate:
                self._decontaminator = Decontaminator()
            mode = getattr(pl_module, "answer_mode", self.round_config.calibration.answer_mode)
            config = replace(self.round_config, calibration=replace(self.round_config.calibration, answer_mode=mode))
            with torch.no_grad():
                result, old = run_round(
                    generator, sandbox, pool, config,
                    system_prompt=getattr(pl_module, "system_prompt", None),
                    seed=run_seed(self.seed) + self.refreshes,
                    decontaminator=self._decontaminator, recalibrate=pool if self.recalibrate_pool else (),
                    reserved=self.reserved)
            allowed = getattr(_datamodule(trainer), "problem_types", None)
            accepted = [p for p in result.accepted if not allowed or p.problem_type in allowed]
            metrics.update(result.funnel.as_metrics(PREFIX))
            metrics.update({f"{PREFIX}seconds/{k}": v for k, v in result.seconds.items()})
            files = {"funnel": result.funnel.to_dict(), "seconds": result.seconds,
                     "accepted": [_row(p) for p in accepted],
                     "rates": result.calibration.pass_rates}
            if not accepted:
                raise RefreshFailed("nothing accepted: " + _top_reasons(result.funnel.reasons))
            new_pool = self._merge(pool, old, accepted, metrics)
            metrics.update({f"{PREFIX}pass_rate_hist/bin{i}": n for i, n in
                            enumerate(pass_rate_histogram(result.calibration.pass_rates, HISTOGRAM_BINS))})
            metrics[f"{PREFIX}refresh_failed"] = 0.0
            record.update(status="ok", pool_size=len(new_pool), accepted=len(accepted))
            rank_zero_info(f"curriculum refresh {self.refreshes} ({trigger}): {len(accepted)} accepted, "
                           f"pool {len(pool)} -> {len(new_pool)}")
        except Exception as exc:  # a failed refresh must never stop training
            why = str(exc) if isinstance(exc, RefreshFailed) else f"{type(exc).__name__}: {exc}"
            metrics[f"{PREFIX}refresh_failed"] = 1.0
            metrics[f"{PREFIX}pool_size"] = len(pool)
            record.update(status="failed", reason=why)
            rank_zero_warn(f"curriculum refresh {self.refreshes} ({trigger}) failed, keeping the previous pool "
                           f"of {len(pool)} problems: {why}")
        finally:
            pl_module.train(was_training)
        metrics[f"{PREFIX}refresh_seconds"] = time.perf_counter() - start
        record["metrics"] = metrics
        self.history.append(record)
        publish_metrics(trainer, metrics)
        self._write_files(trainer, record, files)
        return {"pool": [p.to_record() for p in new_pool] if new_pool is not None else None}

    def _merge(self, pool: list[Problem], recalibrated: Calibration, accepted: list[Problem],
               metrics: dict[str, float]) -> list[Problem]:
        """Pool problems still in the window + the accepted ones, type mix capped, size capped."""
        kept = recalibrated.result.kept if self.recalibrate_pool else pool
        retired = recalibrated.result.counts
        merged = cap_type_mix(list(kept) + accepted, self.round_config.max_type_share)
        if self.max_pool_size is not None and len(merged) > self.max_pool_size:
            merged = sorted(merged, key=_informativeness)[: self.max_pool_size]
        in_pool = {p.uid for p in merged}
        metrics.update({
            f"{PREFIX}pool_size": len(merged), f"{PREFIX}previous_pool_size": len(pool),
            f"{PREFIX}kept": sum(p.uid in in_pool for p in kept),
            f"{PREFIX}added": sum(p.uid in in_pool for p in accepted),
            f"{PREFIX}retired_mastered": retired.get("calibrate:too_easy", 0),
            f"{PREFIX}retired_too_hard": retired.get("calibrate:too_hard", 0),
        })
        metrics.update({f"{PREFIX}type_share/{t}": s for t, s in type_mix(merged).items()})
        return merged

    def _write_files(self, trainer: pl.Trainer, record: dict[str, Any], files: dict[str, Any]) -> None:
        base = Path(self.output_dir or Path(trainer.default_root_dir) / "curriculum") / f"refresh_{self.refreshes:03d}"
        base.mkdir(parents=True, exist_ok=True)
        paths = [base / "refresh.json"]
        paths[0].write_text(json.dumps({**record, "funnel": files.get("funnel"), "seconds": files.get("seconds")},
                                       indent=1, default=str))
        if "accepted" in files:
            paths.append(base / "accepted.json")
            paths[-1].write_text(json.dumps(files["accepted"], indent=1))
        if files.get("rates"):
            paths.append(histogram_png(files["rates"], base / "pass_rates.png",
                                       title=f"pass rates, refresh {self.refreshes}"))
        log_artifacts(trainer, paths, f"curriculum/refresh_{self.refreshes:03d}")


class RefreshFailed(RuntimeError):
    """A refresh produced nothing usable."""


def _datamodule(trainer: pl.Trainer) -> Any:
    dm = trainer.datamodule
    if dm is None or not hasattr(dm, "pool") or not hasattr(dm, "set_pool"):
        raise TypeError("CurriculumRefresh needs a datamodule with .pool and .set_pool (CurriculumDataModule)")
    return dm


def _informativeness(problem: Problem) -> float:
    return abs(problem.pass_rate - 0.5) if problem.pass_rate is not None else 1.0


def _top_reasons(reasons: Any, n: int = 3) -> str:
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{r} x{c}" for r, c in top) or "no candidates"


def _row(problem: Problem) -> dict[str, Any]:
    """One row of the accepted-problems table."""
    return {"uid": problem.uid, "type": problem.problem_type, "entry_point": problem.entry_point,
            "pass_rate": problem.pass_rate, "topic": problem.topic, "difficulty": problem.difficulty,
            "source": problem.source, "seed_id": problem.seed_id, "record": problem.to_record()}


# ---------------------------------------------------------------- logging helpers
def run_seed(seed: int | None) -> int:
    """``seed``, else the run's ``seed_everything`` value (so one seed reaches every sampler)."""
    return seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))


def publish_metrics(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Send ``metrics`` to every logger (at the current global step) and to ``callback_metrics``."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in metrics.items()})


def log_artifacts(trainer: pl.Trainer, paths: Sequence[Path], artifact_path: str) -> None:
    """Upload files to the run of every MLflow logger (other loggers keep the local files)."""
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger):
            for path in paths:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path)


def histogram_png(rates: Sequence[float], path: Path, title: str, bins: int = 10) -> Path:
    """A bar chart of pass rates over [0, 1] (matplotlib's object API: no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(list(rates), bins=bins, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    ax.set_xlabel("pass rate under the current policy")
    ax.set_ylabel("problems")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
