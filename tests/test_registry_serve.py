"""`laimark serve`: the server command line, and a real server process answering a real request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import pytest
from registry_helpers import free_port, make_tiny_adapter, sqlite_uri

from laimark_pl.registry.log_model import ModelConfig
from laimark_pl.registry.serve import ServeConfig, serve_command, serve_environment
from laimark_pl.registry.versions import promote, register_adapter, score_tags

SIGNATURE = 'def add(a, b):\n    """Return a + b."""\n'


def test_server_command_uses_the_local_environment_and_a_long_timeout(tmp_path):
    config = ServeConfig(name="m", alias="best", port=6123, timeout_s=1800, tracking_uri=f"sqlite:///{tmp_path}/m.db")
    command = serve_command(config)
    assert command[:5] == [sys.executable, "-m", "mlflow", "models", "serve"]
    pairs = dict(zip(command[5::2], command[6::2], strict=True))
    assert pairs == {"--model-uri": "models:/m@best", "--host": "127.0.0.1", "--port": "6123",
                     "--env-manager": "local", "--timeout": "1800", "--workers": "1"}
    env = serve_environment(config)
    assert env["MLFLOW_TRACKING_URI"] == config.tracking_uri
    assert env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] == "1800"


def test_serve_config_rejects_bad_values():
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=0)
    with pytest.raises(ValueError, match="timeout_s"):
        ServeConfig(timeout_s=0)


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_a_real_server_answers_with_code_from_the_tiny_model(tmp_path):
    uri = sqlite_uri(tmp_path)
    adapter = make_tiny_adapter(tmp_path / "adapter", seed=3)
    register_adapter(adapter, ModelConfig(base_model="tiny", max_new_tokens=8), tracking_uri=uri,
                     tags=score_tags(0.5, base_model="tiny"))
    promote(uri)
    port = free_port()
    env = dict(os.environ, MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    server = subprocess.Popen(
        [sys.executable, "-m", "laimark_pl.registry.cli", "serve", "--tracking-uri", uri, "--port", str(port),
         "--timeout", "120"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read().decode(errors="replace") if server.poll() is not None else ""
                pytest.fail(f"server did not come up (exit {server.poll()}):\n{output[-3000:]}")
            time.sleep(0.5)
        params = {"max_new_tokens": 8, "temperature": 1.0, "seed": 11}
        status, body = _post(base + "/invocations", {"inputs": [SIGNATURE], "params": params})
        assert status == 200, body
        [code] = body["predictions"]
        assert code.startswith(SIGNATURE.rstrip("\n")) and len(code) > len(SIGNATURE)
        mlflow.set_tracking_uri(uri)
        local = mlflow.pyfunc.load_model("models:/laimark@champion")
        assert local.predict([SIGNATURE], params=params) == [code]  # the same model, the same sample

        status, body = _post(base + "/invocations", {"inputs": [[{"role": "assistant", "content": "x"}]]})
        assert status >= 400 and "role 'assistant' is not supported" in json.dumps(body)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
