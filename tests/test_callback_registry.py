"""`RegistryCallback` at the end of real tiny GRPO fits logging to a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from mlflow import MlflowClient
from registry_helpers import sqlite_uri

from laimark_pl.callbacks.humaneval import HumanEvalCallback
from laimark_pl.callbacks.registry import RegistryCallback
from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.modules.grpo import GRPOModule, SamplingConfig, SandboxConfig
from laimark_pl.modules.policy import PolicyConfig
from laimark_pl.problems import builtin_curriculum_path, read_problems, write_problems
from laimark_pl.registry.tracking import ensure_experiment

SYSTEM_PROMPT = "Write careful Python."


def _fit(tmp_path: Path, callbacks: list[pl.Callback], logger) -> tuple[pl.Trainer, GRPOModule]:
    module = GRPOModule(policy=PolicyConfig(model="tiny", lora_r=4),
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=8),
                        sandbox=SandboxConfig(workers=1), system_prompt=SYSTEM_PROMPT)
    calibrated = [p.with_calibration(rate, 8, (0.2, 0.8))
                  for p, rate in zip(read_problems(builtin_curriculum_path()), (0.25, 0.5), strict=False)]
    write_problems(tmp_path / "pool.jsonl", calibrated)
    datamodule = CurriculumDataModule(path=str(tmp_path / "pool.jsonl"), batch_size=1)
    trainer = pl.Trainer(max_steps=1, logger=logger, callbacks=callbacks, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0, accelerator="cpu", log_every_n_steps=1)
    trainer.fit(module, datamodule=datamodule)
    return trainer, module


def _logger(uri: str) -> MLFlowLogger:
    ensure_experiment("fit", uri)
    return MLFlowLogger(experiment_name="fit", tracking_uri=uri)


def test_fit_end_registers_a_scored_version_in_the_training_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = sqlite_uri(tmp_path)
    humaneval = HumanEvalCallback(limit=2, max_new_tokens=8, progress=False, results_dir=str(tmp_path))
    registry = RegistryCallback(name="laimark", max_new_tokens=16)
    trainer, module = _fit(tmp_path, [humaneval, registry], _logger(uri))

    run_id = trainer.logger.run_id
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("laimark", "1")
    assert registry.model_version.version == version.version and version.run_id == run_id
    assert float(version.tags["humaneval_pass_at_1"]) == humaneval.pass_at_1
    assert version.tags["humaneval_mode"] == "full" and version.tags["humaneval_samples"] == "1"
    assert version.tags["base_model"] == "tiny" and version.tags["curriculum_size"] == "2"
    assert version.tags["run_id"] == run_id and "final curriculum: 2 problems" in version.description

    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # the logger finalised the run after the callback
    assert "humaneval_pass_at_1" in run.data.metrics
    paths = {a.path for folder in ("", "humaneval", "plots") for a in client.list_artifacts(run_id, folder or None)}
    assert {"system_prompt.txt", "humaneval/humaneval_results.jsonl", "plots/reward.png", "plots/pass_rate.png",
            "plots/learnability.png"} <= paths
    assert client.download_artifacts(run_id, "system_prompt.txt", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "system_prompt.txt").read_text() == SYSTEM_PROMPT

    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"models:/laimark/{version.version}")
    local = mlflow.artifacts.download_artifacts(f"models:/laimark/{version.version}", dst_path=str(tmp_path / "m"))
    adapter = Path(local) / "artifacts" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert (adapter / "adapter_model.safetensors").read_bytes() == (
        Path(module.final_adapter_dir) / "adapter_model.safetensors").read_bytes()
    assert {p.name: p.default for p in info.signature.params}["max_new_tokens"] == 16
    model = mlflow.pyfunc.load_model(f"models:/laimark/{version.version}")
    assert model.unwrap_python_model().config["system_prompt"] == SYSTEM_PROMPT


class _EvolvePrompt(pl.Callback):
    """Replaces the module's system prompt during training, as `PromptEvolutionCallback` does."""

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.system_prompt = "An evolved prompt."


def test_an_evolved_prompt_is_the_registered_models_param_and_the_first_one_stays(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = sqlite_uri(tmp_path)
    trainer, _ = _fit(tmp_path, [_EvolvePrompt(), RegistryCallback(name="laimark", max_new_tokens=16)], _logger(uri))
    params = MlflowClient(uri).get_run(trainer.logger.run_id).data.params
    assert params["initial_system_prompt"] == SYSTEM_PROMPT
    assert params["system_prompt"] == "An evolved prompt."  # the registered model's config, logged by MLflow
    assert params["sampling/num_generations"] == "2" and params["base_model"] == "tiny"
    assert "Failed to log model config" not in caplog.text


def test_without_a_score_the_version_is_registered_unscored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = sqlite_uri(tmp_path)
    with pytest.warns(UserWarning, match="no 'humaneval_pass_at_1' in trainer.callback_metrics"):
        trainer, _ = _fit(tmp_path, [RegistryCallback(name="unscored", plots=False)], _logger(uri))
    version = MlflowClient(uri, registry_uri=uri).get_model_version("unscored", "1")
    assert "humaneval_pass_at_1" not in version.tags and "not scored" in version.description
    assert version.run_id == trainer.logger.run_id


def test_an_mlflow_logger_is_required_before_training_starts(tmp_path):
    with pytest.raises(ValueError, match="RegistryCallback needs an MLFlowLogger"):
        _fit(tmp_path, [RegistryCallback()], CSVLogger(tmp_path))


def test_register_needs_a_logged_model():
    with pytest.raises(ValueError, match="register=True needs log_model=True"):
        RegistryCallback(register=True, log_model=False)
