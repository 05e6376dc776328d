"""``laimark evaluate``: HumanEval pass@k of a model (+ adapter), or of a completions file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from laimark_pl.cli_params import SYSTEM_PROMPT_HELP, answer_mode, resolve_system_prompt
from laimark_pl.problems import ProblemFileError


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""
    app.command("evaluate")(evaluate)


def evaluate(
    model: str | None = typer.Option(None, "--model", "-m", help="Hub id, local directory, .gguf file "
                                        "or 'tiny' (a random tiny model, for tests)."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="LoRA adapter directory to apply."),
    completions: Path | None = typer.Option(None, "--completions", "-c", help="Score this JSONL of "
                                               "{task_id, completion} lines instead of generating."),
    mode: str = typer.Option("full", "--mode", callback=answer_mode, help="Answer style asked for: 'body' "
                             "(continue the function) or 'full' (write the whole function)."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, help="Samples per problem (pass@k for k <= n)."),
    temperature: float | None = typer.Option(None, "--temperature", "-t", min=0.0,
                                                help="Sampling temperature (default: 0, greedy, for one "
                                                "sample; 0.8 for several)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Completion length limit."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N problems."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", callback=resolve_system_prompt,
                                             help="System message; " + SYSTEM_PROMPT_HELP),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed."),
    backend: str = typer.Option("process", "--backend", help="Sandbox backend: process or docker."),
    timeout_s: float = typer.Option(5.0, "--timeout", min=0.1, help="Per-program time limit (seconds)."),
    out: Path = typer.Option(Path("humaneval_results.jsonl"), "--out", "-o",
                             help="Where per-problem results are written (JSONL)."),
    as_json: bool = typer.Option(False, "--json", help="Print only the summary as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Score HumanEval (164 problems): greedy pass@1 by default, unbiased pass@k when sampling.

    Either generate with --model [--adapter], or score pre-generated --completions.
    """
    from laimark_pl.evaluation.humaneval import evaluate_generator, score_completions
    from laimark_pl.sandbox import BACKENDS, create

    if (model is None) == (completions is None):
        raise typer.BadParameter("give exactly one of --model or --completions", param_hint="--model")
    if adapter is not None and model is None:
        raise typer.BadParameter("--adapter needs --model", param_hint="--adapter")
    if completions is not None and not completions.is_file():
        raise typer.BadParameter(f"file not found: {completions}", param_hint="--completions")
    if temperature is None:
        temperature = 0.0 if samples == 1 else 0.8
    if samples > 1 and temperature == 0:
        raise typer.BadParameter("several samples need --temperature > 0", param_hint="--temperature")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"must be one of {', '.join(BACKENDS)}, got {backend!r}", param_hint="--backend")
    err = Console(stderr=True)
    try:
        sandbox = create(backend, timeout_s=timeout_s)
    except RuntimeError as exc:  # e.g. no reachable Docker engine
        err.print(f"[red]error:[/] cannot start the {backend} sandbox: {exc}")
        raise typer.Exit(1) from exc
    try:
        with sandbox:
            if completions is not None:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    report = score_completions(completions, mode, sandbox, limit=limit,  # type: ignore[arg-type]
                                                progress=progress)
                for w in caught:
                    err.print(f"[yellow]warning:[/] {w.message}")
            else:
                from laimark_pl.modules.policy import PolicyConfig, load_policy

                policy = load_policy(PolicyConfig(model=model, adapter=adapter, trainable=False))
                report = evaluate_generator(
                    policy, sandbox, mode=mode, samples=samples, temperature=temperature,  # type: ignore[arg-type]
                    top_p=top_p, max_new_tokens=max_new_tokens, system_prompt=system_prompt, limit=limit,
                    seed=seed, progress=progress)
    except ProblemFileError as exc:  # includes CompletionsFileError
        raise typer.BadParameter(str(exc), param_hint="--completions") from exc
    report.write_jsonl(out)
    summary = report.summary()
    summary["results"] = str(out)
    if model is not None:
        summary.update(model=model, adapter=adapter)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    _print_summary(Console(), summary)


def _print_summary(console: Console, summary: dict) -> None:
    table = Table(title="HumanEval", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    if summary.get("model"):
        table.add_row("model", summary["model"] + (f" + {summary['adapter']}" if summary.get("adapter") else ""))
    table.add_row("mode", summary["mode"])
    table.add_row("passed", f"{summary['passed']} / {summary['total']}")
    for k, value in summary["pass_at_k"].items():
        table.add_row(f"pass@{k}", f"{100 * value:.1f}%")
    if summary["missing"]:
        table.add_row("missing tasks", f"[yellow]{summary['missing']}[/]")
    timing = f"sandbox {summary['sandbox_s']:.1f} s"
    if summary["generation_s"]:
        timing = f"generation {summary['generation_s']:.1f} s, {timing}"
    table.add_row("time", timing)
    table.add_row("results", summary["results"])
    console.print(table)
