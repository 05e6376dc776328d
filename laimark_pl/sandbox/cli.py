"""``laimark sandbox ...``: verify a curriculum's reference solutions in the sandbox.

Example:
    laimark sandbox check --problems curriculum.jsonl --json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from laimark_pl.problems import AnswerFormatError, Problem, ProblemFileError, iter_problems
from laimark_pl.sandbox.types import Program, Verdict

sandbox_app = typer.Typer(help="Run and verify code in the isolated sandbox.", no_args_is_help=True)


@dataclass(frozen=True)
class ReferenceCheck:
    """One problem's reference program (or why it has none)."""

    line: int
    problem: Problem
    program: Program | None
    reason: str = ""


def reference_program(problem: Problem) -> tuple[Program | None, str]:
    """The program that checks a problem's own reference answer.

    Induction: the ``solution`` against the ``tests``. Deduction: ``code`` must give
    ``expected`` for ``input``. Abduction: ``code`` applied to the recorded input (``input``, or
    the record's ``ab_input``) must give ``expected``.
    """
    if problem.problem_type == "induction":
        if not problem.solution.strip():
            return None, "no reference solution"
        return Program(problem.solution, problem.tests, problem.entry_point), ""
    try:
        if problem.problem_type == "deduction":
            return problem.check_program(problem.expected or ""), ""
        answer = problem.input if problem.input is not None else problem.extra.get("ab_input")
        if answer is None:
            return None, "abduction problem without a recorded input"
        return problem.check_program(str(answer)), ""
    except AnswerFormatError as exc:
        return None, str(exc)


def check_file(path: Path, backend: str = "process", workers: int | None = None, timeout_s: float = 5.0,
               progress: bool = True) -> list[tuple[ReferenceCheck, Verdict]]:
    """Verify every problem of a JSONL curriculum file; raises `ProblemFileError` on bad lines."""
    from laimark_pl.sandbox import create

    checks = []
    for line, problem in iter_problems(path):
        program, reason = reference_program(problem)
        checks.append(ReferenceCheck(line, problem, program, reason))
    runnable = [c for c in checks if c.program is not None]
    with create(backend, workers=workers, timeout_s=timeout_s) as sandbox:
        kwargs = {"progress": "verifying"} if progress and backend == "process" else {}
        verdicts = iter(sandbox.check([c.program for c in runnable], **kwargs))
    return [(c, next(verdicts) if c.program is not None else Verdict("error", False, detail=c.reason))
            for c in checks]


def summary(results: list[tuple[ReferenceCheck, Verdict]]) -> dict:
    """The ``--json`` document: totals plus every problem that did not pass."""
    failed = [{"line": c.line, "entry_point": c.problem.entry_point, "status": v.status}
              for c, v in results if not v.passed]
    return {"total": len(results), "passed": len(results) - len(failed), "failed": failed}


@sandbox_app.command("check")
def check_command(
    problems: Path = typer.Option(..., "--problems", "-p", exists=True, dir_okay=False, readable=True,
                                  help="Curriculum JSONL file (laimark_pl's or the original study's format)."),
    backend: str = typer.Option("process", "--backend", "-b", help="Sandbox backend: process or docker."),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON summary."),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="Parallel workers (default: CPUs)."),
    timeout: float = typer.Option(5.0, "--timeout", "-t", min=0.1, help="Wall-clock seconds per program."),
) -> None:
    """Verify every problem's reference solution against its tests."""
    console = Console(stderr=as_json)
    if backend not in ("process", "docker"):
        raise typer.BadParameter(f"unknown backend {backend!r} (choose process or docker)", param_hint="--backend")
    try:
        results = check_file(problems, backend, workers, timeout, progress=not as_json)
    except ProblemFileError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    doc = summary(results)
    if as_json:
        typer.echo(json.dumps(doc))
    else:
        _print_table(console, results, doc)
    raise typer.Exit(0 if doc["passed"] == doc["total"] else 1)


def _print_table(console: Console, results: list[tuple[ReferenceCheck, Verdict]], doc: dict) -> None:
    table = Table(title=f"{doc['passed']}/{doc['total']} reference solutions pass")
    for col in ("line", "type", "entry point", "status", "asserts", "seconds", "detail"):
        table.add_column(col, overflow="fold")
    for check, verdict in results:
        style = "green" if verdict.passed else "red"
        table.add_row(str(check.line), check.problem.problem_type, check.problem.entry_point,
                      f"[{style}]{verdict.status}[/{style}]", f"{verdict.tests_passed}/{verdict.tests_total}",
                      f"{verdict.duration_s:.3f}", verdict.detail[:120])
    console.print(table)


@sandbox_app.command("build-image")
def build_image_command(
    force: bool = typer.Option(False, "--force", help="Rebuild even if the current image exists."),
) -> None:
    """Build the Docker backend's image locally (no registry needed) and print its tag."""
    from laimark_pl.sandbox.docker import SandboxUnavailableError
    from laimark_pl.sandbox.image import ImageBuildError, build_image

    try:
        typer.echo(build_image(force=force))
    except (SandboxUnavailableError, ImageBuildError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    """Add the ``sandbox`` command group to the main ``laimark`` app."""
    app.add_typer(sandbox_app, name="sandbox")
