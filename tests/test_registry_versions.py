"""Registering real tiny adapters as versions, promoting the best one, and the clear errors."""

from __future__ import annotations

import logging

import mlflow
import pytest
from mlflow import MlflowClient
from registry_helpers import make_tiny_adapter, sqlite_uri

from laimark_pl.registry.log_model import ModelConfig
from laimark_pl.registry.tracking import ensure_experiment
from laimark_pl.registry.versions import (
    RegistryError,
    describe,
    promote,
    register_adapter,
    resolve_alias,
    score_tags,
    versions_table,
)

CONFIG = ModelConfig(base_model="tiny", max_new_tokens=8)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_tiny_adapter(tmp_path_factory.mktemp("adapter") / "adapter", seed=2)


def _register(uri, adapter, score, name="laimark", total=None, **kwargs):
    tags = score_tags(score, base_model="tiny", mode="full", samples=1, total=total, curriculum_size=22)
    return register_adapter(adapter, CONFIG, tracking_uri=uri, name=name, tags=tags,
                            description=describe("tiny", score, mode="full", samples=1), **kwargs)


def test_promote_picks_the_best_and_moves_only_for_a_better_version(tmp_path, adapter):
    uri = sqlite_uri(tmp_path)
    assert [str(_register(uri, adapter, s).version) for s in (0.3, 0.5)] == ["1", "2"]
    first = promote(uri)
    assert (first.version, first.score, first.previous, first.moved) == ("2", 0.5, None, True)
    again = promote(uri)
    assert (again.version, again.moved) == ("2", False)  # idempotent

    _register(uri, adapter, 0.5)  # a tie is not an improvement
    assert (promote(uri).version, promote(uri).moved) == ("2", False)
    _register(uri, adapter, 0.6)
    better = promote(uri)
    assert (better.version, better.previous, better.moved) == ("4", "2", True)
    assert [(v.version, v.score) for v in better.versions] == [("1", 0.3), ("2", 0.5), ("3", 0.5), ("4", 0.6)]
    assert next(v for v in better.versions if v.version == "4").aliases == ("champion",)

    version = MlflowClient(uri, registry_uri=uri).get_model_version("laimark", "4")
    assert version.tags["humaneval_pass_at_1"] == "0.6" and version.tags["base_model"] == "tiny"
    assert version.tags["curriculum_size"] == "22" and version.tags["run_id"] == version.run_id
    assert "humaneval_pass_at_1 = 0.6000 (full answers, 1 sample(s)/problem)" in version.description

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/laimark@champion")
    answer = model.predict(['def inc(x):\n    """Add one."""\n'], params={"max_new_tokens": 4})
    assert len(answer) == 1 and answer[0].startswith("def inc(x):")


def test_scores_on_fewer_problems_are_not_ranked_against_full_evaluations(tmp_path, adapter, caplog):
    uri = sqlite_uri(tmp_path)
    _register(uri, adapter, 0.40, total=164)
    _register(uri, adapter, 0.90, total=10)  # a `limit`ed evaluation: higher, but not comparable
    with caplog.at_level("WARNING"):
        result = promote(uri)
    assert result.version == "1"
    assert "scored on 10 problems only" in caplog.text
    version = MlflowClient(uri, registry_uri=uri).get_model_version("laimark", "2")
    assert version.tags["humaneval_total"] == "10"


def test_an_explicit_version_and_versions_without_score(tmp_path, adapter, caplog):
    uri = sqlite_uri(tmp_path)
    _register(uri, adapter, None)
    with pytest.raises(RegistryError, match="no version of 'laimark' has a 'humaneval_pass_at_1' tag"):
        promote(uri)
    _register(uri, adapter, 0.1)
    with caplog.at_level(logging.WARNING):
        result = promote(uri)
    assert result.version == "2" and result.skipped == ["1"]
    assert "version 1 has no numeric 'humaneval_pass_at_1' tag" in caplog.text
    forced = promote(uri, version=1)
    assert (forced.version, forced.previous, forced.score) == ("1", "2", None)
    with pytest.raises(RegistryError, match=r"has no version 9 \(versions: 1, 2\)"):
        promote(uri, version=9)
    assert "(unchanged)" in versions_table(promote(uri, version=1)).title


def test_clear_errors_for_missing_models_versions_and_aliases(tmp_path, adapter):
    uri = sqlite_uri(tmp_path)
    with pytest.raises(RegistryError, match="no registered model named 'ghost'"):
        promote(uri, name="ghost")
    MlflowClient(uri, registry_uri=uri).create_registered_model("empty")
    with pytest.raises(RegistryError, match="'empty' has no versions to promote"):
        promote(uri, name="empty")
    with pytest.raises(RegistryError, match="alias 'champion' of registered model 'empty' points nowhere"):
        resolve_alias(uri, "empty", "champion")
    with pytest.raises(RegistryError, match="no registered model named 'ghost'"):
        resolve_alias(uri, "ghost")


def test_registering_into_an_existing_run_keeps_it_running(tmp_path, adapter):
    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("train", uri)).info.run_id
    results = tmp_path / "humaneval_results.jsonl"
    results.write_text('{"task_id": "HumanEval/0", "passed": true}\n')
    version = _register(uri, adapter, 0.25, run_id=run_id, artifacts={"humaneval": results},
                        metrics={"humaneval_pass_at_1": 0.25})
    run = client.get_run(run_id)
    assert version.run_id == run_id and run.info.status == "RUNNING"
    assert run.data.metrics["humaneval_pass_at_1"] == 0.25
    assert [a.path for a in client.list_artifacts(run_id, "humaneval")] == ["humaneval/humaneval_results.jsonl"]


def test_score_tags_and_description():
    assert score_tags(0.5, mode="body", samples=None, run_id="r") == {
        "humaneval_pass_at_1": "0.5", "humaneval_mode": "body", "run_id": "r"}
    assert score_tags(None) == {}
    assert describe("Qwen/Qwen3-8B", None, curriculum_size=3) == (
        "LoRA adapter for Qwen/Qwen3-8B, trained by laimark; not scored (humaneval_pass_at_1 unknown); "
        "final curriculum: 3 problems.")
