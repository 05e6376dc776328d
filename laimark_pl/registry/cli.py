"""``laimark register | promote | serve``: the MLflow model registry from the command line.

* ``register``: log an adapter trained elsewhere as a model version (optionally scoring it on
  HumanEval first), tagged like the versions ``laimark fit`` registers;
* ``promote``: point an alias (``champion``) at the best-scoring (or a given) version;
* ``serve``: serve ``models:/<name>@<alias>`` over HTTP (``POST /invocations``).

All take ``--tracking-uri`` (default: ``$MLFLOW_TRACKING_URI``, else ``./mlruns/mlflow.db``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.console import Console

from laimark_pl.cli_params import SYSTEM_PROMPT_HELP, answer_mode, resolve_system_prompt
from laimark_pl.registry.tracking import DEFAULT_EXPERIMENT, TrackingUnreachableError, check_tracking_reachable
from laimark_pl.registry.versions import DEFAULT_ALIAS, DEFAULT_METRIC, DEFAULT_MODEL_NAME, RegistryError

TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db)."


def register(app: typer.Typer) -> None:
    """Add the ``register``, ``promote`` and ``serve`` commands to ``app``."""
    app.command("register")(register_command)
    app.command("promote")(promote_command)
    app.command("serve")(serve_command)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


def _base_model_of(adapter: Path) -> str | None:
    try:
        return json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return None


def register_command(
    adapter: Path = typer.Option(..., "--adapter", "-a", help="peft adapter directory (adapter_config.json)."),
    base_model: str | None = typer.Option(None, "--base-model", "-m", help="Base model the adapter belongs "
                                          "to: hub id, local directory or 'tiny' (default: the adapter's "
                                          "base_model_name_or_path)."),
    name: str = typer.Option(DEFAULT_MODEL_NAME, "--name", help="Registered model name."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Score the adapter on HumanEval before registering."),
    pass_at_1: float | None = typer.Option(None, "--pass-at-1", min=0.0, max=1.0,
                                           help="Known HumanEval pass@1 (0-1) to tag the version with."),
    mode: str = typer.Option("full", "--mode", callback=answer_mode,
                             help="Answer style: 'full' or 'body' (evaluation and serving)."),
    samples: int = typer.Option(1, "--samples", min=1, help="Samples per problem the score is based on."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N problems."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Generation length (eval, serving)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", callback=resolve_system_prompt,
                                             help="System message the adapter was trained with; "
                                             + SYSTEM_PROMPT_HELP),
    dtype: str = typer.Option("auto", "--dtype", help="Weight dtype for evaluation and serving."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="Load the base in 4 bits (QLoRA, CUDA) "
                                      "for evaluation and serving."),
    description: str | None = typer.Option(None, "--description", help="Version description."),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, "--experiment", help="Experiment of the registration run."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Register an adapter trained elsewhere as a new version of a registered model."""
    from laimark_pl.registry.log_model import AdapterDirError, ModelConfig, check_adapter_dir
    from laimark_pl.registry.versions import describe, register_adapter, score_tags

    if evaluate and pass_at_1 is not None:
        raise typer.BadParameter("give --evaluate or --pass-at-1, not both", param_hint="--pass-at-1")
    try:
        check_adapter_dir(adapter)
        uri = check_tracking_reachable(tracking_uri)
    except (AdapterDirError, TrackingUnreachableError) as exc:
        raise _fail(str(exc)) from exc
    base_model = base_model or _base_model_of(adapter)
    if not base_model:
        raise typer.BadParameter("the adapter names no base model; pass --base-model", param_hint="--base-model")
    config = ModelConfig(base_model=base_model, system_prompt=system_prompt, answer_mode=mode,
                         max_new_tokens=max_new_tokens, policy={"dtype": dtype, "load_in_4bit": load_in_4bit})
    score, eval_samples, total = pass_at_1, samples if pass_at_1 is not None else None, None
    with tempfile.TemporaryDirectory(prefix="laimark-register-") as tmp:
        artifacts = {}
        if evaluate:
            report = _evaluate(adapter, config, samples=samples, limit=limit)
            score, eval_samples, total = report.pass_at_1, samples, report.total
            artifacts["humaneval"] = report.write_jsonl(Path(tmp) / "humaneval_results.jsonl")
            Console().print(f"HumanEval pass@1 {score:.1%} ({report.passed}/{report.total})")
        tags = score_tags(score, DEFAULT_METRIC, mode=mode if score is not None else None, samples=eval_samples,
                          total=total, base_model=base_model)
        version = register_adapter(
            adapter, config, tracking_uri=uri, name=name, experiment_name=experiment, tags=tags,
            description=description or describe(base_model, score, mode=mode, samples=eval_samples),
            artifacts=artifacts, metrics={DEFAULT_METRIC: score} if score is not None else None)
    Console().print(f"registered [bold]{name}[/] version {version.version} (run {version.run_id})"
                    + ("" if score is not None else f"; no {DEFAULT_METRIC}: `promote` will skip it"))


def _evaluate(adapter: Path, config, *, samples: int, limit: int | None):
    from laimark_pl.evaluation.humaneval import evaluate_generator
    from laimark_pl.modules.policy import PolicyConfig, load_policy

    policy = load_policy(PolicyConfig(model=config.base_model, adapter=str(adapter), trainable=False,
                                      **config.policy))
    return evaluate_generator(policy, mode=config.answer_mode, samples=samples,
                              temperature=0.0 if samples == 1 else 0.8, max_new_tokens=config.max_new_tokens,
                              system_prompt=config.system_prompt, limit=limit)


def promote_command(
    name: str = typer.Option(DEFAULT_MODEL_NAME, "--name", help="Registered model name."),
    metric: str = typer.Option(DEFAULT_METRIC, "--metric", help="Version tag to rank by (higher is better)."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", help="Alias to point at the chosen version."),
    version: int | None = typer.Option(None, "--version", min=1, help="Promote this version instead of the best."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Point the alias at the best-scoring (or the given) version and show all versions."""
    from laimark_pl.registry.versions import promote, versions_table

    try:
        uri = check_tracking_reachable(tracking_uri)
        result = promote(uri, name=name, metric=metric, alias=alias, version=version)
    except (RegistryError, TrackingUnreachableError) as exc:
        raise _fail(str(exc)) from exc
    console = Console()
    console.print(versions_table(result))
    if result.skipped:
        console.print(f"[yellow]skipped (no {metric} tag):[/] versions {', '.join(result.skipped)}")
    verb = f"moved from version {result.previous}" if result.previous and result.moved else (
        "set" if result.moved else "unchanged")
    console.print(f"{name}@{alias} -> version {result.version} ({verb})")


def serve_command(
    name: str = typer.Option(DEFAULT_MODEL_NAME, "--name", help="Registered model name."),
    alias: str = typer.Option(DEFAULT_ALIAS, "--alias", help="Alias of the version to serve."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind."),
    port: int = typer.Option(5000, "--port", "-p", min=1, max=65535, help="Port to listen on."),
    timeout_s: int = typer.Option(3600, "--timeout", min=1, help="Per-request timeout (seconds)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Server workers (each loads the model)."),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help=TRACKING_HELP),
) -> None:
    """Serve models:/NAME@ALIAS at POST /invocations ({"inputs": [...], "params": {...}})."""
    from laimark_pl.registry.serve import ServeConfig, serve

    try:
        uri = check_tracking_reachable(tracking_uri)
        serve(ServeConfig(name=name, alias=alias, host=host, port=port, timeout_s=timeout_s, workers=workers,
                          tracking_uri=uri))
    except (RegistryError, TrackingUnreachableError) as exc:
        raise _fail(str(exc)) from exc


def main() -> None:
    """``python -m laimark_pl.registry.cli``: these commands without the rest of ``laimark``."""
    app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False)
    register(app)
    app()


if __name__ == "__main__":
    main()
