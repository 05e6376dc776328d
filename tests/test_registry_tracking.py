"""Tracking URI resolution, the fail-fast reachability check, experiments and run attachment,
against real SQLite stores and real HTTP servers."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from mlflow import MlflowClient
from registry_helpers import free_port, sqlite_uri

from laimark_pl.registry.tracking import (
    TrackingUnreachableError,
    attached_run,
    check_tracking_reachable,
    default_artifact_location,
    default_tracking_uri,
    ensure_experiment,
    flatten_config,
    log_params_batched,
    mlflow_params,
    prepare_tracking,
)


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_default_uri_is_sqlite_under_mlruns_unless_env_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert default_tracking_uri(root=tmp_path / "x") == f"sqlite:///{tmp_path.resolve()}/x/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert default_tracking_uri() == "http://tracking.example:5000"
    assert not (tmp_path / "mlruns").exists()  # resolving a URI creates nothing


def test_sqlite_store_is_created_and_experiments_keep_artifacts_next_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path.resolve()}/store/mlflow.db"  # directory does not exist yet
    assert check_tracking_reachable(uri) == uri
    assert (tmp_path / "store" / "mlflow.db").is_file()
    first = ensure_experiment("laimark", uri)
    assert ensure_experiment("laimark", uri) == first
    experiment = MlflowClient(uri).get_experiment(first)
    assert experiment.artifact_location == default_artifact_location(uri)
    assert experiment.artifact_location == (tmp_path / "store" / "artifacts").resolve().as_uri()
    client = MlflowClient(uri)
    run = client.create_run(first)
    client.log_text(run.info.run_id, "hello", "note.txt")
    assert list((tmp_path / "store" / "artifacts").rglob("note.txt"))
    assert not (tmp_path / "mlruns").exists()


def test_dead_http_server_fails_within_seconds_with_a_clear_message():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingUnreachableError, match="not reachable") as err:
        check_tracking_reachable(uri, timeout_s=2.0)
    assert time.monotonic() - start < 10
    assert uri in str(err.value) and "MLFLOW_TRACKING_URI" in str(err.value)


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server API)
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_server_that_is_not_mlflow_is_reported():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TrackingUnreachableError, match="HTTP 404"):
            check_tracking_reachable(f"http://127.0.0.1:{server.server_port}", timeout_s=2.0)
    finally:
        server.shutdown()
        server.server_close()


def test_deprecated_file_store_is_reported_clearly(tmp_path):
    with pytest.raises(TrackingUnreachableError, match="not usable") as err:
        check_tracking_reachable((tmp_path / "mlruns").as_uri())
    assert "sqlite" in str(err.value)


@pytest.mark.slow
def test_a_real_mlflow_server_is_reachable_and_gets_experiments(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", sqlite_uri(tmp_path), "--default-artifact-root", (tmp_path / "art").as_uri()],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        resolved, experiment_id = prepare_tracking(uri, "remote-laimark")
        assert resolved == uri
        assert MlflowClient(uri).get_experiment_by_name("remote-laimark").experiment_id == experiment_id
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_flatten_and_fit_params_to_mlflow_limits():
    flat = flatten_config({"model": {"lr": 0.1, "layers": [1, 2]}, "trainer": {"callbacks": [
        {"class_path": "A", "init_args": {"x": None}}]}, "empty": {}})
    assert flat == {"model.lr": 0.1, "model.layers": [1, 2], "trainer.callbacks.0.class_path": "A",
                    "trainer.callbacks.0.init_args.x": None, "empty": "{}"}
    params = mlflow_params({"prompt": "x" * 10_000, "bad key!": 1})
    assert len(params["prompt"]) == 6000 and params["prompt"].endswith("[truncated]")
    assert params["bad key_"] == "1"


def test_params_already_logged_are_skipped_and_conflicts_warn(tmp_path):
    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("p", uri)).info.run_id
    log_params_batched(client, run_id, {f"k{i}": str(i) for i in range(150)})  # more than one batch
    log_params_batched(client, run_id, {"k1": "1"})
    with pytest.warns(UserWarning, match="k2"):
        log_params_batched(client, run_id, {"k2": "changed", "new": "v"})
    params = client.get_run(run_id).data.params
    assert len(params) == 151 and params["k2"] == "2" and params["new"] == "v"


def test_attached_run_restores_status_and_tracking_uri(tmp_path):
    import mlflow

    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("a", uri)).info.run_id
    before = mlflow.get_tracking_uri()
    with attached_run(run_id, uri):
        assert mlflow.active_run().info.run_id == run_id
        mlflow.log_param("inside", "yes")
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == before
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.params["inside"] == "yes"
