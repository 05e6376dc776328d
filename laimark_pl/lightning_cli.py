"""`LaimarkCLI`: LightningCLI over `GRPOModule` + `CurriculumDataModule` with our defaults.

Defaults that differ from plain Lightning (all overridable in YAML or on the command line):

* MLflow tracking on a local SQLite store (or ``$MLFLOW_TRACKING_URI``), checked for reachability
  *before* any model is loaded;
* the resolved config is logged to MLflow as an artifact (Lightning's own saver writes to the
  log dir, which fails for non-file tracking URIs);
* dataloaders reload every epoch (curriculum refreshes reach the next epoch), no sanity
  validation, ``seed_everything: 0``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.modules.grpo import GRPOModule
from laimark_pl.modules.policy import ModelLoadError
from laimark_pl.problems import ProblemFileError
from laimark_pl.registry.config_saver import MLflowSaveConfigCallback
from laimark_pl.registry.tracking import (
    TrackingUnreachableError,
    default_tracking_uri,
    prepare_tracking,
)


class ConfigError(ValueError):
    """A config value was rejected when the classes were built (the message names it)."""


#: Errors caused by the user's input (config, files, models, servers): reported in one clear message.
UserInputError = (ConfigError, ModelLoadError, TrackingUnreachableError, ProblemFileError, FileNotFoundError)


def trainer_defaults() -> dict:
    """Trainer settings applied unless a config or flag says otherwise."""
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.MLFlowLogger",
            "init_args": {"experiment_name": "laimark", "tracking_uri": default_tracking_uri()},
        },
        "reload_dataloaders_every_n_epochs": 1,
        "num_sanity_val_steps": 0,
    }


class LaimarkCLI(LightningCLI):
    """LightningCLI with MLflow-first defaults and an early tracking-server check."""

    def before_instantiate_classes(self) -> None:
        """Fail fast on an unreachable tracking store, before any model is loaded, and create the
        experiment so that a local SQLite store keeps its artifacts next to the database."""
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        loggers = config.get("trainer", {}).get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            if hasattr(logger, "get") and str(logger.get("class_path", "")).endswith("MLFlowLogger"):
                init_args = logger.get("init_args") or {}
                uri = init_args.get("tracking_uri") or default_tracking_uri()
                prepare_tracking(uri, init_args.get("experiment_name") or "lightning_logs")

    def instantiate_classes(self) -> None:
        """Build the classes; a value their validation rejects becomes a one-line `ConfigError`."""
        try:
            super().instantiate_classes()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


def run_lightning_cli(args: Sequence[str]) -> LaimarkCLI:
    """Run ``fit``/``validate``/``test`` with ``args`` as on the command line.

    They are parsed from ``sys.argv`` (set to this command line meanwhile): Lightning's DDP launcher
    starts the other ranks by re-running ``sys.argv``."""
    saved = sys.argv
    sys.argv = [sys.argv[0], *args]
    try:
        return LaimarkCLI(
            GRPOModule,
            CurriculumDataModule,
            seed_everything_default=0,
            save_config_callback=MLflowSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=trainer_defaults(),
            parser_kwargs={"default_env": False},
            auto_configure_optimizers=False,
        )
    finally:
        sys.argv = saved
