"""Serve a registered adapter over HTTP with ``mlflow models serve``.

``models:/<name>@<alias>`` is checked first (a clear error if the alias points nowhere), then
MLflow's scoring server runs in the current Python environment (``--env-manager local``) with a
long request timeout, since generation on a large model takes minutes. Requests::

    curl -s http://127.0.0.1:5000/invocations -H 'Content-Type: application/json' \\
      -d '{"inputs": ["def add(a, b):\\n    \\"\\"\\"Return a + b.\\"\\"\\"\\n"], "params": {"max_new_tokens": 256}}'
    # -> {"predictions": ["def add(a, b):\\n    ...\\n"]}
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from laimark_pl.registry.tracking import resolve_tracking_uri
from laimark_pl.registry.versions import DEFAULT_ALIAS, DEFAULT_MODEL_NAME, resolve_alias

DEFAULT_PORT = 5000
DEFAULT_REQUEST_TIMEOUT_S = 3600


@dataclass
class ServeConfig:
    """How to serve a registered model.

    Args:
        name: registered model name.
        alias: alias of the version to serve.
        host: interface to bind (``127.0.0.1`` keeps it local; ``0.0.0.0`` exposes it).
        port: TCP port.
        timeout_s: per-request timeout of the scoring server.
        workers: uvicorn workers (each loads its own copy of the model).
        tracking_uri: tracking/registry URI; default: ``$MLFLOW_TRACKING_URI`` or the local SQLite store.
    """

    name: str = DEFAULT_MODEL_NAME
    alias: str = DEFAULT_ALIAS
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    timeout_s: int = DEFAULT_REQUEST_TIMEOUT_S
    workers: int = 1
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"ServeConfig.port must be in 1..65535, got {self.port}")
        if self.timeout_s < 1 or self.workers < 1:
            raise ValueError(f"ServeConfig.timeout_s and workers must be >= 1, got {self.timeout_s}, {self.workers}")

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def serve_command(config: ServeConfig) -> list[str]:
    """The ``mlflow models serve`` command line for ``config``."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve",
        "--model-uri", config.model_uri,
        "--host", config.host,
        "--port", str(config.port),
        "--env-manager", "local",
        "--timeout", str(config.timeout_s),
        "--workers", str(config.workers),
    ]


def serve_environment(config: ServeConfig) -> dict[str, str]:
    """The environment of the server process: the resolved tracking/registry URI and request timeout."""
    uri = resolve_tracking_uri(config.tracking_uri)
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = uri
    env["MLFLOW_REGISTRY_URI"] = uri  # the same store `serve` resolved the alias in
    env["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(config.timeout_s)
    return env


def serve(config: ServeConfig) -> None:
    """Check that ``models:/<name>@<alias>`` resolves, then replace this process with the server."""
    version = resolve_alias(config.tracking_uri, config.name, config.alias)
    print(f"serving {config.model_uri} (version {version.version}) at http://{config.host}:{config.port}/invocations",
          file=sys.stderr, flush=True)
    command = serve_command(config)
    os.execve(command[0], command, serve_environment(config))
