"""`laimark register | promote | serve` through Typer, against real SQLite stores and tiny adapters."""

from __future__ import annotations

import time

import pytest
import typer
from mlflow import MlflowClient
from registry_helpers import free_port, make_tiny_adapter, sqlite_uri
from typer.testing import CliRunner

from laimark_pl.registry.cli import register


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_tiny_adapter(tmp_path_factory.mktemp("adapter") / "adapter", seed=4)


def _run(app, *args: str):
    env = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "COLUMNS": "200"}  # no line-wrapped messages
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_register_then_promote_prints_the_table(tmp_path, app, adapter):
    uri = sqlite_uri(tmp_path)
    for score in ("0.25", "0.75"):
        result = _run(app, "register", "--adapter", adapter, "--base-model", "tiny", "--pass-at-1", score,
                      "--tracking-uri", uri)
        assert result.exit_code == 0, result.output
    assert "registered laimark version 2" in result.output
    result = _run(app, "promote", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert "laimark: champion -> version 2" in result.output and "0.7500" in result.output
    assert "laimark@champion -> version 2 (set)" in result.output
    again = _run(app, "promote", "--tracking-uri", uri)
    assert "(unchanged)" in again.output
    version = MlflowClient(uri, registry_uri=uri).get_model_version("laimark", "1")
    assert version.tags["humaneval_pass_at_1"] == "0.25" and version.tags["humaneval_samples"] == "1"


def test_register_reads_the_base_model_from_the_adapter_and_warns_without_score(tmp_path, app, adapter):
    uri = sqlite_uri(tmp_path)
    result = _run(app, "register", "--adapter", adapter, "--name", "other", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert "no humaneval_pass_at_1: `promote` will skip it" in result.output
    version = MlflowClient(uri, registry_uri=uri).get_model_version("other", "1")
    assert version.tags["base_model"].endswith("tiny-0")  # peft's base_model_name_or_path
    result = _run(app, "promote", "--name", "other", "--tracking-uri", uri)
    assert result.exit_code == 1 and "error:" in result.output and "--version N" in result.output


def test_register_evaluate_scores_on_humaneval(tmp_path, app, adapter):
    uri = sqlite_uri(tmp_path)
    result = _run(app, "register", "--adapter", adapter, "--base-model", "tiny", "--evaluate", "--limit", "2",
                  "--max-new-tokens", "8", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    assert "HumanEval pass@1 0.0% (0/2)" in result.output  # a random tiny model solves nothing
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("laimark", "1")
    assert version.tags["humaneval_pass_at_1"] == "0.0" and version.tags["humaneval_mode"] == "full"
    assert client.get_run(version.run_id).data.metrics["humaneval_pass_at_1"] == 0.0
    [results] = client.list_artifacts(version.run_id, "humaneval")
    assert results.path == "humaneval/humaneval_results.jsonl"


def test_register_reads_the_system_prompt_from_a_file(tmp_path, app, adapter):
    import mlflow

    uri = sqlite_uri(tmp_path)
    prompt = tmp_path / "best_prompt.txt"  # what `laimark evolve-prompt --out` writes
    prompt.write_text("Think, then write the function.\n", encoding="utf-8")
    result = _run(app, "register", "--adapter", adapter, "--base-model", "tiny", "--system-prompt", f"@{prompt}",
                  "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info("models:/laimark/1")
    assert info.flavors["python_function"]["config"]["system_prompt"] == "Think, then write the function."


def test_clear_errors(tmp_path, app, adapter):
    uri = sqlite_uri(tmp_path)
    result = _run(app, "register", "--adapter", tmp_path, "--base-model", "tiny", "--tracking-uri", uri)
    assert result.exit_code == 1 and "not a peft adapter directory" in result.output
    result = _run(app, "register", "--adapter", adapter, "--evaluate", "--pass-at-1", "0.5", "--tracking-uri", uri)
    assert result.exit_code != 0 and "not both" in result.output
    result = _run(app, "promote", "--tracking-uri", uri)
    assert result.exit_code == 1 and "no registered model named 'laimark'" in result.output
    result = _run(app, "serve", "--tracking-uri", uri, "--alias", "nowhere")
    assert result.exit_code == 1 and "no registered model named 'laimark'" in result.output

    start = time.monotonic()
    result = _run(app, "promote", "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1 and "is not reachable" in result.output
    assert time.monotonic() - start < 15


def test_serve_refuses_an_alias_that_points_nowhere(tmp_path, app, adapter):
    uri = sqlite_uri(tmp_path)
    assert _run(app, "register", "--adapter", adapter, "--base-model", "tiny", "--tracking-uri", uri).exit_code == 0
    result = _run(app, "serve", "--tracking-uri", uri, "--alias", "champion")
    assert result.exit_code == 1
    assert "alias 'champion' of registered model 'laimark' points nowhere" in result.output
    assert "laimark promote" in result.output
