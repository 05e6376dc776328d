"""The MLflow config saver in a real LightningCLI run against a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel
from mlflow import MlflowClient
from registry_helpers import sqlite_uri

from laimark_pl.registry.config_saver import MLflowSaveConfigCallback
from laimark_pl.registry.tracking import ensure_experiment


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _cli(tmp_path: Path, uri: str, extra: list[str]) -> LightningCLI:
    args = ["fit", "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}", *extra]
    return LightningCLI(BoringModel, BoringDataModule, args=args, save_config_callback=MLflowSaveConfigCallback,
                        save_config_kwargs={"overwrite": True}, seed_everything_default=0)


def test_config_saver_logs_yaml_and_params_to_the_mlflow_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = sqlite_uri(tmp_path)
    ensure_experiment("cfg", uri)
    cli = _cli(tmp_path, uri, ["--trainer.logger=lightning.pytorch.loggers.MLFlowLogger",
                               f"--trainer.logger.tracking_uri={uri}", "--trainer.logger.experiment_name=cfg"])
    run_id = cli.trainer.logger.run_id
    client = MlflowClient(uri)
    params = client.get_run(run_id).data.params
    assert params["config.trainer.max_steps"] == "1"
    assert params["config.seed_everything"] == "0"
    text = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / "dl"))).read_text()
    assert "max_steps: 1" in text and "MLFlowLogger" in text
    stray = [p for p in tmp_path.rglob("config.yaml") if not {"dl", "artifacts"} & set(p.relative_to(tmp_path).parts)]
    assert stray == []  # no local copy in the shared store or the working directory


def test_config_saver_keeps_lightnings_local_file_for_local_loggers(tmp_path):
    cli = _cli(tmp_path, "", ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                              f"--trainer.logger.save_dir={tmp_path}"])
    saved = Path(cli.trainer.log_dir) / "config.yaml"
    assert saved.is_file() and "max_steps: 1" in saved.read_text()
