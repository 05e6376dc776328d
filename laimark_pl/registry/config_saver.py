"""The LightningCLI config saver that records the resolved config in the MLflow run."""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger

from laimark_pl.registry.tracking import flatten_config, log_params_batched, mlflow_params


class MLflowSaveConfigCallback(SaveConfigCallback):
    """LightningCLI config saver that records the resolved config in the MLflow run.

    Logs the YAML as the artifact ``config.yaml`` and every leaf setting as a param prefixed with
    ``config.`` (values cut to MLflow's length limit) in the run of the trainer's `MLFlowLogger`.
    The local copy in ``trainer.log_dir`` that Lightning's saver writes is kept only when that
    directory is local and not shared between runs: with an MLflow logger first (whose "log dir"
    is the shared store, or nothing at all for a database/remote URI) the artifact is the record.
    Use with ``LightningCLI(save_config_callback=MLflowSaveConfigCallback)``.
    """

    param_prefix = "config."

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        requested = self.save_to_log_dir
        self.save_to_log_dir = requested and _private_local_log_dir(trainer)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.save_to_log_dir = requested

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                self._log_to_mlflow(logger)

    def _log_to_mlflow(self, logger: MLFlowLogger) -> None:
        client, run_id = logger.experiment, logger.run_id
        text = self.parser.dump(self.config, skip_none=False)
        client.log_text(run_id, text, self.config_filename)
        flat = flatten_config(self.config.as_dict() if hasattr(self.config, "as_dict") else dict(self.config))
        params = mlflow_params({self.param_prefix + k: v for k, v in flat.items()})
        log_params_batched(client, run_id, params)


def _private_local_log_dir(trainer: Trainer) -> bool:
    """Whether ``trainer.log_dir`` is a local directory that belongs to this run."""
    if trainer.loggers and isinstance(trainer.loggers[0], MLFlowLogger):
        return False
    log_dir = trainer.log_dir
    if log_dir is None:
        return False
    from lightning.fabric.utilities.cloud_io import get_filesystem

    protocol = get_filesystem(log_dir).protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))
