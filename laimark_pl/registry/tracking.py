"""Where runs are recorded: the MLflow tracking URI, a fast reachability check, experiments, and
helpers to log a flattened config as params (the LightningCLI saver itself is in
`laimark_pl.registry.config_saver`).

Without configuration, runs go to an embedded store: a SQLite database ``mlruns/mlflow.db`` with
artifacts in ``mlruns/artifacts`` (MLflow's plain file store is deprecated and refuses to start in
current releases). ``$MLFLOW_TRACKING_URI`` or an explicit URI (a remote ``mlflow server``,
another database) takes precedence.

Example:
    >>> uri = default_tracking_uri(root="/tmp/laimark-runs")   # doctest: +SKIP
    >>> check_tracking_reachable(uri)                           # raises within seconds if it is not
    >>> experiment_id = ensure_experiment("laimark", uri)
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DEFAULT_ROOT = "mlruns"
DEFAULT_EXPERIMENT = "laimark"
DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "artifacts"


class TrackingUnreachableError(RuntimeError):
    """The tracking store cannot be used; the message says which URI and what to do."""


def default_tracking_uri(root: str | os.PathLike = DEFAULT_ROOT) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return "sqlite:///" + str((Path(root) / DB_FILENAME).resolve())


def resolve_tracking_uri(uri: str | None = None, root: str | os.PathLike = DEFAULT_ROOT) -> str:
    """``uri`` if given, else `default_tracking_uri`."""
    return uri.strip() if uri and uri.strip() else default_tracking_uri(root)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a local ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def default_artifact_location(uri: str) -> str | None:
    """For a local SQLite store, the ``artifacts`` directory next to the database (MLflow would
    otherwise put artifacts under ``./mlruns`` of whatever directory a process runs in); None for
    other stores, which choose their own."""
    db = sqlite_path(uri)
    return (db.parent / ARTIFACTS_DIRNAME).resolve().as_uri() if db else None


@contextlib.contextmanager
def fast_failing_http(timeout_s: float = 5.0) -> Iterator[None]:
    """Make MLflow's REST client give up after one short attempt (unless the user configured
    retries/timeouts explicitly) for the duration of the block."""
    overrides = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s))),
    }
    saved = {key: os.environ.get(key) for key in overrides}
    for key, value in overrides.items():
        if saved[key] is None:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def check_tracking_reachable(uri: str | None = None, timeout_s: float = 5.0) -> str:
    """Fail fast, with a clear message, if the tracking store at ``uri`` cannot be used.

    HTTP(S) servers are probed at ``/health`` with a ``timeout_s`` timeout and then queried once
    without retries; a local SQLite database gets its directory created and its schema checked.
    Returns the resolved URI. Raises `TrackingUnreachableError`.
    """
    uri = resolve_tracking_uri(uri)
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("http", "https"):
        _probe_health(uri, timeout_s)
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnreachableError(
                f"MLflow tracking store {uri}: cannot create directory {db.parent}: {exc}") from exc
    from mlflow import MlflowClient

    try:
        with fast_failing_http(timeout_s):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnreachableError(
            f"MLflow tracking store {uri} is not usable: {_first_line(exc)}\n"
            f"{_HINT}") from exc
    return uri


_HINT = (
    "Fix MLFLOW_TRACKING_URI (or trainer.logger.init_args.tracking_uri / --tracking-uri), start the server, "
    "or unset it to record runs in a local SQLite store (./mlruns/mlflow.db)."
)


def _probe_health(uri: str, timeout_s: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):  # noqa: S310 (a user-given URI)
            pass
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # auth-protected health endpoint: the server is up; the API call decides
            return
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri}: GET /health returned HTTP {exc.code}.\n{_HINT}") from exc
    except OSError as exc:  # URLError, timeouts, refused connections
        reason = getattr(exc, "reason", exc)
        raise TrackingUnreachableError(
            f"MLflow tracking server {uri} is not reachable ({reason}; waited at most {timeout_s:g} s).\n"
            f"{_HINT}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, uri: str | None = None) -> str:
    """The id of experiment ``name``, creating it (artifacts next to a local SQLite database)
    if missing."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=default_artifact_location(uri))
    except Exception:
        experiment = client.get_experiment_by_name(name)  # created concurrently
        if experiment is None:
            raise
        return experiment.experiment_id


def prepare_tracking(uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT,
                     timeout_s: float = 5.0) -> tuple[str, str]:
    """`check_tracking_reachable` then `ensure_experiment`; returns ``(uri, experiment_id)``.
    Call it before training so that the first failure costs seconds, not a training run."""
    uri = check_tracking_reachable(uri, timeout_s)
    return uri, ensure_experiment(experiment_name, uri)


@contextlib.contextmanager
def attached_run(run_id: str, uri: str) -> Iterator[Any]:
    """Make ``run_id`` (on ``uri``) the active fluent-API run for the block, then restore the
    previous tracking URI and the run's previous status (an MLFlowLogger run stays RUNNING,
    a finished one stays FINISHED)."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    previous_status = client.get_run(run_id).info.status
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id and mlflow.get_tracking_uri() == uri:
        yield active
        return
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id, nested=active is not None) as run:
            yield run
        if previous_status == "RUNNING":
            client.update_run(run_id, status="RUNNING")
        elif previous_status != "FINISHED":
            client.set_terminated(run_id, status=previous_status)
    finally:
        mlflow.set_tracking_uri(previous_uri)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings/lists to ``{"a.b.0.c": value}`` (empty containers are kept as ``{}``/``[]``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name + ".") if value else {name: "{}"})
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            flat.update(flatten_config({str(i): v for i, v in enumerate(value)}, name + "."))
        else:
            flat[name] = value
    return flat


def mlflow_params(flat: Mapping[str, Any]) -> dict[str, str]:
    """Stringify and fit keys/values to MLflow's limits (long values are truncated with a marker)."""
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

    marker = "...[truncated]"
    params: dict[str, str] = {}
    for key, value in flat.items():
        safe_key = "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(key))[:MAX_ENTITY_KEY_LENGTH]
        text = "None" if value is None else str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - len(marker)] + marker
        params[safe_key] = text
    return params


def log_params_batched(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Log ``params`` in batches of MLflow's maximum size. Keys the run already has are skipped
    (params are immutable; a resumed run re-logs its config), with a warning if the value differs."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

    existing = client.get_run(run_id).data.params
    conflicts = {k for k, v in params.items() if k in existing and existing[k] != v}
    if conflicts:
        shown = ", ".join(sorted(conflicts)[:5])
        warnings.warn(f"MLflow run {run_id} already has different values for params {shown}"
                      f"{' ...' if len(conflicts) > 5 else ''}; keeping the old values (see the config artifact)",
                      stacklevel=2)
    todo = [Param(k, v) for k, v in params.items() if k not in existing]
    for start in range(0, len(todo), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=todo[start:start + MAX_PARAMS_TAGS_PER_BATCH])
