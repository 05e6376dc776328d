"""The sandbox's public data types: what goes in (`Program`) and what comes out (`Verdict`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

Status = Literal[
    "passed",  # every test ran and held
    "failed",  # a test did not hold (wrong answer, exception inside the code under test)
    "error",  # the program or its tests could not even be run (syntax error, bad input)
    "timeout",  # wall-clock or CPU limit reached; the whole process tree was killed
    "memory",  # memory limit reached
    "output_limit",  # stdout/stderr or file-size limit exceeded
    "crashed",  # the untrusted process died without a verdict (signal, os._exit, ...)
]


@dataclass(frozen=True)
class Program:
    """Untrusted code plus the tests that judge it.

    ``tests`` is either assert statements (``assert f(x) == y``, possibly spanning several
    lines) or a HumanEval-style ``def check(candidate): ...``, in which case ``entry_point``
    names the function passed as ``candidate``.
    """

    code: str
    tests: str
    entry_point: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The trusted parent's judgement of one `Program`."""

    status: Status
    passed: bool
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    detail: str = ""  # short human-readable reason (first failing assert, exception type, ...)
    tests_passed: int = 0
    tests_total: int = 0
    extra: dict = field(default_factory=dict)


class Sandbox(Protocol):
    """What every backend offers: check a batch in parallel, verdicts in input order."""

    def check(self, programs: Sequence[Program]) -> list[Verdict]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


def program_to_dict(program: Program) -> dict:
    """Plain-data form of a `Program` (for crossing pipes and sockets)."""
    return {"code": program.code, "tests": program.tests, "entry_point": program.entry_point}


def verdict_to_dict(verdict: Verdict) -> dict:
    """Plain-data form of a `Verdict`."""
    return dict(verdict.__dict__)


def verdict_from_dict(data: dict) -> Verdict:
    """Inverse of `verdict_to_dict`."""
    return Verdict(**data)
