"""The `laimark` command: Typer commands, LightningCLI hand-off, and the smoke config end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from laimark_pl.cli import app

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


def _laimark(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "laimark_pl.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("fit", "validate", "test", "evaluate", "generate", "calibrate", "evolve-prompt", "sandbox",
                    "register", "promote", "serve"):
        assert command in result.output


def test_fit_help_and_print_config_come_from_lightning(tmp_path):
    help_out = _laimark("fit", "--help", cwd=tmp_path, timeout=120)
    assert help_out.returncode == 0, help_out.stderr
    assert "--model.sampling.num_generations" in help_out.stdout and "--data.batch_size" in help_out.stdout
    printed = _laimark("fit", "--config", str(SMOKE), "--model.sampling.num_generations", "8", "--print_config",
                       cwd=tmp_path, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "num_generations: 8" in printed.stdout and "model: tiny" in printed.stdout


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    result = _laimark("fit", "--config", str(SMOKE), "--trainer.logger.init_args.tracking_uri",
                      "http://127.0.0.1:9/", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert "not reachable" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing was trained


def test_malformed_curriculum_is_reported_with_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "def f(x):", "tests": "assert f(1) == 1", "entry_point": "f"}\n{"prompt": 3}\n')
    result = _laimark("fit", "--config", str(SMOKE), "--data.path", str(bad), "--trainer.logger.init_args.tracking_uri",
                      f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert f"{bad}:2: field 'prompt'" in result.stderr


def test_test_subcommand_scores_humaneval_problems(tmp_path):
    """`laimark test` runs the module's greedy evaluation on the datamodule's HumanEval problems."""
    result = _laimark("test", "--config", str(SMOKE), "--data.eval_limit", "4", "--data.eval_batch_size", "4",
                      "--trainer.limit_test_batches", "1.0", "--trainer.callbacks", "[]", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "humaneval_pass_at_1" in result.stdout


@pytest.mark.parametrize(("override", "message"), [
    (("--model.sampling.num_generations", "1"), "sampling.num_generations must be >= 2"),
    (("--model.policy.model", "./no-such-model"), "policy.model: cannot load './no-such-model'"),
])
def test_bad_config_values_get_one_clear_line(tmp_path, override, message):
    result = _laimark("fit", "--config", str(SMOKE), *override, "--trainer.logger.init_args.tracking_uri",
                      f"sqlite:///{tmp_path}/mlflow.db", "--trainer.callbacks", "[]", cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_fit_on_two_ranks_relaunches_the_same_command(tmp_path):
    """Lightning's DDP launcher starts rank 1 by re-running the command line: `laimark fit` must leave
    it intact (it used to hand rank 1 a bare `laimark`, which printed the usage and killed the run)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = _laimark("fit", "--config", str(SMOKE), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                      "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.callbacks", "[]",
                      "--trainer.logger.init_args.tracking_uri", uri, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stderr and "Usage:" not in result.stdout
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("laimark-smoke").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2


@pytest.mark.slow
def test_smoke_config_end_to_end_registers_a_scored_version(tmp_path):
    """The README's main job: GRPO, refresh, prompt evolution, HumanEval, registry, on a real store."""
    result = _laimark("fit", "--config", str(SMOKE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/runs/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("laimark-smoke").experiment_id])
    metrics = run.data.metrics
    for key in ("train/reward_mean", "train/zero_variance_group_share", "train/kl", "time/generation_s",
                "curriculum/funnel/proposed", "humaneval_pass_at_1"):
        assert key in metrics, key
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) == 6  # 2 epochs x 3 steps, every step logged
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "humaneval", "curriculum", "plots"} <= artifacts
    [version] = client.search_model_versions("name='laimark'")
    assert float(version.tags["humaneval_pass_at_1"]) == metrics["humaneval_pass_at_1"]
    assert version.tags["base_model"] == "tiny" and version.run_id == run.info.run_id
    adapter = tmp_path / "runs" / "smoke" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    results = (tmp_path / "runs" / "smoke" / "humaneval_results.jsonl").read_text().splitlines()
    assert len(results) == 164
