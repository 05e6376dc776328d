"""The model registry side: register a logged adapter as a version, tag it with its score, and
point an alias (``champion``) at the best version. MLflow stages are deprecated; aliases are used.

Example:
    >>> version = register_adapter("adapter/", ModelConfig(base_model="tiny"), score=0.42,
    ...                            tracking_uri=uri)                       # doctest: +SKIP
    >>> promote(uri, name="laimark").version                               # doctest: +SKIP
    '1'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from laimark_pl.registry.log_model import DEFAULT_ARTIFACT_NAME, ModelConfig, log_adapter_model
from laimark_pl.registry.tracking import DEFAULT_EXPERIMENT, attached_run, ensure_experiment, resolve_tracking_uri

DEFAULT_MODEL_NAME = "laimark"
DEFAULT_METRIC = "humaneval_pass_at_1"
DEFAULT_ALIAS = "champion"

log = logging.getLogger(__name__)


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ScoredVersion:
    """One registered version and its score (None when the metric tag is missing or not a number)."""

    version: str
    score: float | None
    run_id: str | None
    aliases: tuple[str, ...]
    tags: Mapping[str, str]

    @property
    def number(self) -> int:
        return int(self.version)


@dataclass
class PromotionResult:
    """What `promote` did: the alias target before and after, and the versions it considered."""

    name: str
    alias: str
    metric: str
    version: str
    score: float | None
    previous: str | None
    versions: list[ScoredVersion] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def moved(self) -> bool:
        return self.previous != self.version


TOTAL_TAG = "humaneval_total"


def score_tags(score: float | None, metric: str = DEFAULT_METRIC, *, mode: str | None = None,
               samples: int | None = None, total: int | None = None, base_model: str | None = None,
               curriculum_size: int | None = None, run_id: str | None = None) -> dict[str, str]:
    """Version tags: the score under ``metric`` plus how it was obtained (None values are left out).
    ``total`` is the number of problems scored (164 for all of HumanEval)."""
    values = {
        metric: None if score is None else repr(float(score)),
        "humaneval_mode": mode,
        "humaneval_samples": samples,
        TOTAL_TAG: total,
        "base_model": base_model,
        "curriculum_size": curriculum_size,
        "run_id": run_id,
    }
    return {key: str(value) for key, value in values.items() if value is not None}


def describe(base_model: str, score: float | None, metric: str = DEFAULT_METRIC, *, mode: str | None = None,
             samples: int | None = None, total: int | None = None, curriculum_size: int | None = None,
             run_id: str | None = None) -> str:
    """A one-paragraph version description a person can read in the MLflow UI."""
    parts = [f"LoRA adapter for {base_model}, trained by laimark"]
    if run_id:
        parts[0] += f" (run {run_id})"
    if score is not None:
        how = ", ".join(x for x in (f"{mode} answers" if mode else "", f"{samples} sample(s)/problem"
                                    if samples else "", f"{total} problems" if total else "") if x)
        parts.append(f"{metric} = {score:.4f}" + (f" ({how})" if how else ""))
    else:
        parts.append(f"not scored ({metric} unknown)")
    if curriculum_size is not None:
        parts.append(f"final curriculum: {curriculum_size} problems")
    return "; ".join(parts) + "."


def register_adapter(
    adapter_dir: str | Path,
    config: ModelConfig,
    *,
    tracking_uri: str | None = None,
    name: str = DEFAULT_MODEL_NAME,
    run_id: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    tokenizer_dir: str | Path | None = None,
    artifacts: Mapping[str, str | Path] | None = None,
    metrics: Mapping[str, float] | None = None,
):
    """Log ``adapter_dir`` as a model in run ``run_id`` (a new run of ``experiment_name`` when None),
    register it as a new version of ``name``, tag and describe it; returns the ``ModelVersion``.

    ``artifacts`` (artifact subdirectory -> local file) and ``metrics`` are logged to the same run.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if run_id is None:
        run_id = client.create_run(ensure_experiment(experiment_name, uri), run_name="laimark-register").info.run_id
        client.set_terminated(run_id, "FINISHED")
    with attached_run(run_id, uri):
        for subdir, path in (artifacts or {}).items():
            mlflow.log_artifact(str(path), artifact_path=subdir or None)
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        info = log_adapter_model(adapter_dir, config, tokenizer_dir=tokenizer_dir, name=DEFAULT_ARTIFACT_NAME)
        # inside the block: MLflow resolves the models:/<model_id> source through the global tracking URI
        ensure_registered_model(client, name)
        return client.create_model_version(name, source=info.model_uri, run_id=run_id,
                                           tags={"run_id": run_id, **(tags or {})}, description=description,
                                           model_id=info.model_id)


def ensure_registered_model(client: Any, name: str) -> None:
    """Create registered model ``name`` unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="LoRA adapters trained by laimark, scored on HumanEval")
        except MlflowException:
            client.get_registered_model(name)  # created concurrently; anything else re-raises


def parse_score(value: str | None) -> float | None:
    """A tag value as a finite float, else None."""
    if value is None:
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def scored_versions(client: Any, name: str, metric: str = DEFAULT_METRIC) -> list[ScoredVersion]:
    """All versions of ``name`` with their ``metric`` tag scores, oldest first.

    Raises `RegistryError` if the model does not exist or has no versions.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r} in {client.tracking_uri}: "
                            "register an adapter first (`laimark fit` with the registry callback, or "
                            "`laimark register`)") from exc
    found = client.search_model_versions(f"name = '{_quote(name)}'")
    if not found:
        raise RegistryError(f"registered model {name!r} has no versions to promote")
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():  # search results do not carry aliases
        aliases.setdefault(str(number), []).append(alias)
    versions = [
        ScoredVersion(version=str(v.version), score=parse_score(v.tags.get(metric)), run_id=v.run_id,
                      aliases=tuple(sorted(aliases.get(str(v.version), ()))), tags=dict(v.tags))
        for v in found
    ]
    return sorted(versions, key=lambda v: v.number)


def comparable(versions: list[ScoredVersion]) -> tuple[list[ScoredVersion], list[ScoredVersion]]:
    """(versions whose scores can be ranked together, versions left out): scores measured on fewer
    problems (a ``limit``ed evaluation, tag ``humaneval_total``) than the largest evaluation among
    the versions are not comparable with it. Versions without the tag are kept."""
    totals = [int(v.tags[TOTAL_TAG]) for v in versions if str(v.tags.get(TOTAL_TAG, "")).isdigit()]
    if not totals:
        return versions, []
    largest = max(totals)
    keep = [v for v in versions if not str(v.tags.get(TOTAL_TAG, "")).isdigit() or int(v.tags[TOTAL_TAG]) == largest]
    return keep, [v for v in versions if v not in keep]


def choose_best(versions: list[ScoredVersion], current: str | None) -> ScoredVersion | None:
    """The highest-scoring version. Ties keep the current alias target (so the alias moves only
    when a strictly better version appears), else go to the oldest version with that score."""
    scored = [v for v in versions if v.score is not None]
    if not scored:
        return None
    best = max(v.score for v in scored)  # type: ignore[type-var]
    tied = [v for v in scored if v.score == best]
    for v in tied:
        if v.version == current:
            return v
    return min(tied, key=lambda v: v.number)


def alias_target(client: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when it points nowhere."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(
    tracking_uri: str | None = None,
    *,
    name: str = DEFAULT_MODEL_NAME,
    metric: str = DEFAULT_METRIC,
    alias: str = DEFAULT_ALIAS,
    version: str | int | None = None,
) -> PromotionResult:
    """Point ``alias`` at version ``version``, or at the best version by the ``metric`` tag.

    Idempotent: re-running without a better version leaves the alias where it is. Versions
    without the metric tag are skipped with a warning. Raises `RegistryError` when there is
    nothing to promote.
    """
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = scored_versions(client, name, metric)
    skipped = [v.version for v in versions if v.score is None]
    for number in skipped:
        log.warning("registered model %r version %s has no numeric %r tag; skipped", name, number, metric)
    previous = alias_target(client, name, alias)
    if version is not None:
        chosen = next((v for v in versions if v.version == str(version)), None)
        if chosen is None:
            known = ", ".join(v.version for v in versions)
            raise RegistryError(f"registered model {name!r} has no version {version} (versions: {known})")
    else:
        ranked, partial = comparable([v for v in versions if v.score is not None])
        for v in partial:
            log.warning("registered model %r version %s was scored on %s problems only; not ranked against "
                        "versions scored on more", name, v.version, v.tags.get(TOTAL_TAG))
        chosen = choose_best(ranked, previous)
        if chosen is None:
            raise RegistryError(
                f"no version of {name!r} has a {metric!r} tag to rank by ({len(versions)} version(s) skipped); "
                f"pass --version N, or register with a score (`laimark register --evaluate` or --pass-at-1)")
    if chosen.version != previous:
        client.set_registered_model_alias(name, alias, chosen.version)
    refreshed = scored_versions(client, name, metric)
    return PromotionResult(name=name, alias=alias, metric=metric, version=chosen.version, score=chosen.score,
                           previous=previous, versions=refreshed, skipped=skipped)


def resolve_alias(tracking_uri: str | None, name: str = DEFAULT_MODEL_NAME, alias: str = DEFAULT_ALIAS):
    """The ``ModelVersion`` behind ``models:/<name>@<alias>``; `RegistryError` naming what is missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise RegistryError(f"no registered model named {name!r} in {uri}") from exc
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(f"alias {alias!r} of registered model {name!r} points nowhere: run "
                            f"`laimark promote --name {name} --alias {alias}` first") from exc


def versions_table(result: PromotionResult):
    """A rich table of the versions, their scores and aliases, the alias target marked."""
    from rich.table import Table

    title = f"{result.name}: {result.alias} -> version {result.version}"
    title += "" if result.moved else " (unchanged)"
    table = Table(title=title)
    for column in ("version", result.metric, "base model", "run", "aliases"):
        table.add_column(column)
    for v in result.versions:
        marker = "*" if v.version == result.version else ""
        table.add_row(f"{v.version}{marker}", "-" if v.score is None else f"{v.score:.4f}",
                      v.tags.get("base_model", "-"), (v.run_id or "-")[:12], ", ".join(v.aliases) or "-")
    return table


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
