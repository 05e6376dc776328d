"""The job the trusted parent sends an execution's child: the compiled program and what to do.

Assert-shaped tests travel as the calls to make (``"calls"`` mode: the parent judges the
answers); any other tests travel whole, for the tester child (``"tester"`` mode). The program is
compiled here, never run here: a fresh child takes about 5x longer to compile it than the warm
parent (first-touch page faults).
"""

from __future__ import annotations

import re
import warnings
from types import CodeType

from laimark_pl.sandbox.asserts import AssertPlan
from laimark_pl.sandbox.harness import SOLUTION_FILENAME
from laimark_pl.sandbox.types import Program
from laimark_pl.sandbox.wire import NotPlain, encode_value, pack_job

_PROGRAM_MODULE = re.escape(SOLUTION_FILENAME)


def build_job(program: Program, plan: AssertPlan | None) -> tuple[str, bytes]:
    """The mode (``"calls"`` or ``"tester"``) and the bytes the parent writes to the job pipe."""
    code = compile_program(program.code)
    if plan is not None:
        try:
            calls = [[c.name, encode_value(list(c.args)), encode_value(c.kwargs)] for c in plan.calls]
            return "calls", pack_job({"code": code, "calls": calls})
        except NotPlain:
            pass  # e.g. a range() argument: let the tester child run these tests
    return "tester", pack_job({"code": code, "tests": program.tests, "entry_point": program.entry_point})


def compile_program(source: str) -> CodeType | str:
    """The program compiled (not run); the source itself when it does not compile, so that the
    child reports the error as it runs."""
    _silence_program_warnings()
    try:
        return compile(source, SOLUTION_FILENAME, "exec", dont_inherit=True)
    except Exception:  # SyntaxError, ValueError (NUL bytes), RecursionError, MemoryError...
        return source


def _silence_program_warnings() -> None:
    """A program's compile-time warnings (``"is" with a literal``...) belong to the program, not to
    the user's console (its run-time warnings still reach the verdict's stderr tail). Checked at
    every compile: an import inside someone's ``warnings.catch_warnings()`` loses the filter."""
    if not any(f[0] == "ignore" and f[3] is not None and f[3].pattern == _PROGRAM_MODULE for f in warnings.filters):
        warnings.filterwarnings("ignore", module=_PROGRAM_MODULE)
