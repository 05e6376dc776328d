"""Stage 2: keep only candidates whose reference solution really passes strong, stable tests.

A candidate is rejected when

* its solution or tests call clock, randomness or process-identity APIs (``nondeterministic:*``,
  found statically: a date-dependent problem passes twice today and fails tomorrow);
* its reference fails its own tests (``verify:reference_<status>``);
* its reference passes only one of two independent sandbox runs (``verify:flaky``);
* a trivial solution (``return None``, the first argument, ``0``, ``[]``, ``True`` ...) also passes
  every test (``verify:weak_tests``).

All programs of a batch (two reference runs + the trivial solutions per candidate) go to the
sandbox in ONE ``check`` call.

Example:
    >>> nondeterminism("import random\\ndef f():\\n    return random.random()")
    ['random']
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from laimark_pl.curriculum.funnel import StageResult
from laimark_pl.problems import Problem
from laimark_pl.prompts import prompt_preamble
from laimark_pl.sandbox.types import Program, Sandbox

#: Return expressions of the trivial solutions a test suite must reject.
TRIVIAL_RETURNS: tuple[str, ...] = (
    "None", "args[0] if args else None", "0", "1", "-1", "True", "False", "''", "[]", "{}", "()",
    "sorted(args[0]) if args else None",
)

_RANDOM_MODULES = {"random", "secrets", "uuid"}
_TIME_FUNCS = {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns", "localtime",
               "gmtime", "ctime", "asctime", "process_time", "strftime"}
_DATE_FUNCS = {"now", "today", "utcnow"}
_CLOCK_OWNERS = {"datetime", "date", "time"}
_PROCESS_CALLS = {("os", "urandom"), ("os", "getpid"), ("os", "getppid")}
_BUILTINS = {"hash": "hash_seed", "id": "object_identity", "input": "io", "open": "io"}


def nondeterminism(source: str) -> list[str]:
    """Kinds of nondeterministic API ``source`` uses (``random``, ``clock``, ``process``,
    ``hash_seed``, ``object_identity``, ``io``); empty when it uses none (or does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: set[str] = set()
    aliases: dict[str, str] = {}  # "dt" -> "datetime" for "import datetime as dt"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name] = a.name.split(".")[0]
            found.update("random" for a in node.names if a.name.split(".")[0] in _RANDOM_MODULES)
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            for a in node.names:
                aliases[a.asname or a.name] = a.name
            if module in _RANDOM_MODULES:
                found.add("random")
            if module == "time" and any(a.name in _TIME_FUNCS for a in node.names):
                found.add("clock")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = _dotted_root(node.value)
            owner = aliases.get(owner, owner) if owner else owner
            if owner in _RANDOM_MODULES:
                found.add("random")
            elif (owner == "time" and node.attr in _TIME_FUNCS) or (
                    owner in ("datetime", "date") and node.attr in _DATE_FUNCS):
                found.add("clock")
            elif (owner, node.attr) in _PROCESS_CALLS:
                found.add("process")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BUILTINS:
            found.add(_BUILTINS[node.func.id])
    return sorted(found)


def _dotted_root(node: ast.expr) -> str | None:
    """``datetime`` for ``datetime.datetime.now``'s owner, ``date`` for ``date.today``..."""
    while isinstance(node, ast.Attribute):
        if node.attr in _CLOCK_OWNERS:
            return node.attr
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def trivial_programs(problem: Problem) -> list[Program]:
    """One program per `TRIVIAL_RETURNS` entry, judged by ``problem``'s tests."""
    preamble = prompt_preamble(problem.prompt, problem.entry_point)
    return [
        Program(code=f"{preamble}\ndef {problem.entry_point}(*args, **kwargs):\n    return {expr}\n",
                tests=problem.tests, entry_point=problem.entry_point)
        for expr in TRIVIAL_RETURNS
    ]


def verify(problems: Sequence[Problem], sandbox: Sandbox, runs: int = 2) -> StageResult:
    """Check every candidate in one batched sandbox call (see the module docstring)."""
    result = StageResult()
    candidates: list[Problem] = []
    for problem in problems:
        kinds = nondeterminism(problem.solution) + nondeterminism(problem.tests)
        if kinds:
            result.rejected[problem.uid] = f"nondeterministic:{sorted(set(kinds))[0]}"
        else:
            candidates.append(problem)
    batch: list[Program] = []
    spans: list[tuple[int, int]] = []
    for problem in candidates:
        reference = Program(code=problem.solution, tests=problem.tests, entry_point=problem.entry_point)
        start = len(batch)
        batch.extend([reference] * runs + trivial_programs(problem))
        spans.append((start, len(batch)))
    verdicts = sandbox.check(batch) if batch else []
    for problem, (start, end) in zip(candidates, spans, strict=True):
        reference_runs, trivials = verdicts[start:start + runs], verdicts[start + runs:end]
        passes = sum(v.passed for v in reference_runs)
        if passes == 0:
            result.rejected[problem.uid] = f"verify:reference_{reference_runs[0].status}"
        elif passes < runs:
            result.rejected[problem.uid] = "verify:flaky"
        elif any(v.passed for v in trivials):
            result.rejected[problem.uid] = "verify:weak_tests"
        else:
            result.kept.append(problem)
    return result
