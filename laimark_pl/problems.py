r"""Curriculum problems: the `Problem` type and its JSONL format.

One JSON object per line. The format is a superset of the original LAIMARK study's
(``prompt``, ``tests``, ``solution``, ``entry_point``, ``source``, ``topic``,
``difficulty``, ``seed_id``, ``pass_rate``, ``samples``, ``learnability_zone`` and, for
derived tasks, ``problem_type`` with ``dd_code/dd_func_name/dd_input/dd_expected`` or
``ab_code/ab_func_name/ab_expected``), so files from that tool load unchanged and files we
write load in it. Unknown fields are kept and written back.

Example:
    >>> p = Problem(prompt="def inc(x):", tests="assert inc(1) == 2",
    ...             solution="def inc(x):\n    return x + 1", entry_point="inc")
    >>> p.problem_type
    'induction'
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from laimark_pl.sandbox.types import Program

T = TypeVar("T")
ProblemType = Literal["induction", "deduction", "abduction"]
PROBLEM_TYPES: tuple[str, ...] = ("induction", "deduction", "abduction")


class ProblemFileError(ValueError):
    """A curriculum file is malformed. Names the file, the line and the field."""

    def __init__(self, path: str | os.PathLike, errors: list[tuple[int, str, str]]):
        self.path = str(path)
        self.errors = errors  # (line number, field, message)
        shown = "\n".join(f"  {self.path}:{line}: field '{fld}': {msg}" for line, fld, msg in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{len(errors)} invalid line(s) in {self.path}:\n{shown}{more}")


class FieldError(ValueError):
    """One field of one record is invalid (raised by record parsers, collected per line)."""

    def __init__(self, fld: str, msg: str):
        super().__init__(msg)
        self.field = fld


class AnswerFormatError(ValueError):
    """A model's answer to a deduction/abduction problem is not a plain Python literal."""


@dataclass
class Problem:
    """One training or evaluation problem.

    ``induction``: write the function described by ``prompt`` (signature + docstring) so that
    ``tests`` pass. ``deduction``: given ``code``, predict ``func_name(input)``; ``expected`` is
    the answer. ``abduction``: given ``code``, find arguments ``x`` with
    ``func_name(x) == expected``.
    """

    prompt: str
    tests: str
    entry_point: str
    solution: str = ""
    problem_type: ProblemType = "induction"
    source: str = "self-generated"
    topic: str | None = None
    difficulty: str | None = None
    seed_id: str | None = None
    pass_rate: float | None = None
    samples: int | None = None
    learnability_zone: tuple[float, float] | None = None
    # deduction / abduction
    code: str | None = None
    func_name: str | None = None
    input: str | None = None
    expected: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        """A stable identifier derived from the content (type, entry point, prompt, tests)."""
        key = "\x00".join([self.problem_type, self.entry_point, self.prompt, self.tests, self.input or ""])
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    def check_program(self, answer: str) -> Program:
        """The sandbox program that decides whether ``answer`` solves this problem.

        For induction ``answer`` is complete Python source (already extracted). For deduction it
        must be a Python literal (the predicted value) and for abduction a literal argument
        list; anything else (for example a call of the function itself) raises
        `AnswerFormatError`, so the model cannot let the code compute the answer for it.
        """
        if self.problem_type == "induction":
            return Program(code=answer, tests=self.tests, entry_point=self.entry_point)
        assert self.code is not None and self.func_name is not None and self.expected is not None
        if self.problem_type == "deduction":
            value = _literal(answer, "predicted value")
            tests = f"assert {self.func_name}({self.input}) == {value!r}"
        else:
            args = _literal(f"({answer},)" if answer.strip() else "()", "argument list")
            arg_src = ", ".join(repr(a) for a in args)
            tests = f"assert {self.func_name}({arg_src}) == {self.expected}"
        return Program(code=self.code, tests=tests, entry_point=self.func_name)

    def to_record(self) -> dict[str, Any]:
        """The JSON object written for this problem (study-compatible field names)."""
        rec: dict[str, Any] = {
            "prompt": self.prompt,
            "tests": self.tests,
            "solution": self.solution,
            "entry_point": self.entry_point,
            "source": self.source,
            "problem_type": self.problem_type,
        }
        for name in ("topic", "difficulty", "seed_id", "pass_rate", "samples"):
            value = getattr(self, name)
            if value is not None:
                rec[name] = value
        if self.learnability_zone is not None:
            rec["learnability_zone"] = list(self.learnability_zone)
        if self.problem_type == "deduction":
            rec.update(dd_code=self.code, dd_func_name=self.func_name, dd_input=self.input,
                       dd_expected=self.expected)
        elif self.problem_type == "abduction":
            rec.update(ab_code=self.code, ab_func_name=self.func_name, ab_expected=self.expected)
        for key, value in self.extra.items():
            rec.setdefault(key, value)
        return rec

    def with_calibration(self, pass_rate: float, samples: int, zone: tuple[float, float]) -> Problem:
        """A copy carrying the calibration result."""
        return replace(self, pass_rate=pass_rate, samples=samples, learnability_zone=zone)


def _literal(text: str, what: str) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise AnswerFormatError(f"{what} is not a Python literal: {text[:80]!r}") from exc


_KNOWN = {f.name for f in fields(Problem)} | {
    "dd_code", "dd_func_name", "dd_input", "dd_expected", "ab_code", "ab_func_name", "ab_expected",
}
_OPTIONAL_STR = ("source", "topic", "difficulty", "seed_id")


def problem_from_record(rec: Any) -> Problem:
    """Build a `Problem` from one decoded JSON object; raises ``ValueError("field: msg")``."""
    if not isinstance(rec, dict):
        raise FieldError("<line>", f"expected a JSON object, got {type(rec).__name__}")
    ptype = rec.get("problem_type", "induction") or "induction"
    if ptype not in PROBLEM_TYPES:
        raise FieldError("problem_type", f"must be one of {', '.join(PROBLEM_TYPES)}, got {ptype!r}")
    kw: dict[str, Any] = {"problem_type": ptype}
    if ptype == "induction":
        for name in ("prompt", "tests", "entry_point"):
            kw[name] = _required_str(rec, name)
        if not kw["entry_point"].isidentifier():
            raise FieldError("entry_point", f"not a Python identifier: {kw['entry_point']!r}")
        kw["solution"] = _optional_str(rec, "solution") or ""
    else:
        pre = "dd_" if ptype == "deduction" else "ab_"
        kw["code"] = _required_str(rec, pre + "code")
        kw["func_name"] = _required_str(rec, pre + "func_name")
        if not kw["func_name"].isidentifier():
            raise FieldError(pre + "func_name", f"not a Python identifier: {kw['func_name']!r}")
        kw["expected"] = _required_str(rec, pre + "expected", allow_non_str=True)
        if ptype == "deduction":
            kw["input"] = _required_str(rec, "dd_input", allow_non_str=True)
        kw["prompt"] = _optional_str(rec, "prompt") or ""
        kw["tests"] = _optional_str(rec, "tests") or ""
        kw["entry_point"] = _optional_str(rec, "entry_point") or kw["func_name"]
        kw["solution"] = _optional_str(rec, "solution") or ""
    for name in _OPTIONAL_STR:
        if name in rec and rec[name] is not None:
            kw[name] = _optional_str(rec, name)
    if rec.get("pass_rate") is not None:
        pr = rec["pass_rate"]
        if isinstance(pr, bool) or not isinstance(pr, (int, float)) or not 0.0 <= pr <= 1.0:
            raise FieldError("pass_rate", f"must be a number in [0, 1], got {pr!r}")
        kw["pass_rate"] = float(pr)
    if rec.get("samples") is not None:
        n = rec["samples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FieldError("samples", f"must be a non-negative integer, got {n!r}")
        kw["samples"] = n
    if rec.get("learnability_zone") is not None:
        z = rec["learnability_zone"]
        ok = isinstance(z, (list, tuple)) and len(z) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in z)
        if not ok or not 0 <= z[0] <= z[1] <= 1:
            raise FieldError("learnability_zone", f"must be [lo, hi] with 0 <= lo <= hi <= 1, got {z!r}")
        kw["learnability_zone"] = (float(z[0]), float(z[1]))
    kw["extra"] = {k: v for k, v in rec.items() if k not in _KNOWN}
    return Problem(**kw)


def _required_str(rec: dict, name: str, allow_non_str: bool = False) -> str:
    if name not in rec or rec[name] is None:
        raise FieldError(name, "missing (required)")
    value = rec[name]
    if not isinstance(value, str):
        if allow_non_str and not isinstance(value, (dict,)):
            return json.dumps(value) if not isinstance(value, (int, float)) else repr(value)
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise FieldError(name, "must not be empty")
    return value


def _optional_str(rec: dict, name: str) -> str | None:
    value = rec.get(name)
    if value is not None and not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    return value


def parse_jsonl(
    path: str | os.PathLike,
    parse: Callable[[dict[str, Any]], T],
    error_type: type[ProblemFileError] = ProblemFileError,
) -> list[tuple[int, T]]:
    """``(line_number, parse(record))`` for every non-blank line of a JSONL file (gzip when the
    name ends in ``.gz``). Every bad line (invalid JSON, not an object, a `FieldError` from
    ``parse``) is collected and reported together in one ``error_type``: nothing is silently
    dropped."""
    opener = gzip.open if str(path).endswith(".gz") else open
    parsed: list[tuple[int, T]] = []
    errors: list[tuple[int, str, str]] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append((lineno, "<json>", f"invalid JSON: {exc.msg} (column {exc.colno})"))
                continue
            try:
                if not isinstance(rec, dict):
                    raise FieldError("<line>", f"expected a JSON object, got {type(rec).__name__}")
                parsed.append((lineno, parse(rec)))
            except FieldError as exc:
                errors.append((lineno, exc.field, str(exc)))
    if errors:
        raise error_type(path, errors)
    return parsed


def iter_problems(path: str | os.PathLike) -> Iterator[tuple[int, Problem]]:
    """Yield ``(line_number, problem)`` for every non-blank line; raise `ProblemFileError`
    listing *every* bad line (nothing is silently dropped)."""
    yield from parse_jsonl(path, problem_from_record)


def read_problems(path: str | os.PathLike) -> list[Problem]:
    """Read a curriculum JSONL file (ours or the original study's)."""
    return [p for _, p in iter_problems(path)]


def write_problems(path: str | os.PathLike, problems: Iterable[Problem]) -> None:
    """Write problems atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for p in problems:
                fh.write(json.dumps(p.to_record(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_problem(path: str | os.PathLike, problem: Problem) -> None:
    """Append one problem and flush it to disk (for resumable, crash-safe producers)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(problem.to_record(), ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def builtin_curriculum_path() -> Path:
    """The small curriculum shipped with the package (written for laimark_pl)."""
    return Path(__file__).parent / "data" / "curriculum.jsonl"


def builtin_heldout_path() -> Path:
    """Held-out problems shipped with the package (disjoint from the curriculum, not HumanEval),
    the default fitness set of prompt evolution."""
    return Path(__file__).parent / "data" / "heldout.jsonl"
