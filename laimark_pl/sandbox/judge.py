"""How the trusted parent turns what a run sent back into a status (never from exit codes alone).

Each judge returns ``(status, detail, tests_passed, tests_total)``; `process.py` then lets
limits (timeout, output, memory) override the status.
"""

from __future__ import annotations

from typing import Any

from laimark_pl.sandbox.asserts import AssertPlan, RemoteFailure, evaluate_unit
from laimark_pl.sandbox.wire import FrameError, Unplain, decode_value

Judgement = tuple[str, str, int, int]
NEVER_CALLED = "the tests never call the program"  # asserts about builtins alone test nothing


def judge_calls(plan: AssertPlan, frames: list, frame_error: str) -> Judgement:
    """Judge an assert-shaped run: the parent evaluates every assert on the decoded answers.
    A pass needs every answer, in order; missing answers mean "crashed"."""
    total = len(plan.units)
    if not plan.calls:
        return "error", NEVER_CALLED if total else "the tests contain no assertions", 0, total
    if frame_error:
        return "crashed", frame_error, 0, total
    if not frames or not isinstance(frames[0], list) or not frames[0]:
        return "crashed", "the program died before loading", 0, total
    head = frames[0]
    if head[0] == "compile_error":
        return "error", f"the program does not compile: {_text(head, 1)}", 0, total
    if head[0] == "load_error":
        kind = "memory" if _text(head, 2) == "memory" else "failed"
        return kind, f"the program raised while loading: {_text(head, 1)}", 0, total
    if head[0] != "loaded":
        return "crashed", "protocol violation before loading", 0, total
    answers = frames[1:]
    if len(answers) > len(plan.calls):
        return "failed", "protocol violation: more results than calls", 0, total
    results: list[Any] = [_decode_answer(a) for a in answers]
    missing = len(plan.calls) - len(results)
    results += [RemoteFailure("no result (the program exited or was killed)", "missing")] * missing
    passed_n, first_failure = 0, ""
    for unit in plan.units:
        held, detail = evaluate_unit(unit, results)
        passed_n += held
        if not held and not first_failure:
            first_failure = detail
    if missing:
        return "crashed", f"the program stopped after {len(answers)} of {len(plan.calls)} calls", passed_n, total
    if passed_n == total:
        return "passed", "", passed_n, total
    if any(isinstance(r, RemoteFailure) and r.kind == "memory" for r in results):
        return "memory", first_failure, passed_n, total
    return "failed", first_failure, passed_n, total


def _decode_answer(answer: Any) -> Any:
    if isinstance(answer, list) and len(answer) == 2 and answer[0] == "ok":
        try:
            value = decode_value(answer[1])
        except (FrameError, RecursionError) as exc:
            return RemoteFailure(f"malformed result: {exc}")
        return value if not isinstance(value, Unplain) else value
    if isinstance(answer, list) and len(answer) == 3 and answer[0] == "exc":
        return RemoteFailure(f"raised {_text(answer, 1)}", "memory" if answer[2] == "memory" else "exception")
    return RemoteFailure("malformed result frame")


def judge_tester(frames: list, frame_error: str) -> Judgement:
    """Judge a run whose tests ran in the separate tester process, from its single report."""
    reports = [f for f in frames if isinstance(f, dict)]
    if frame_error or len(reports) != 1:
        return "crashed", frame_error or "the tester produced no report", 0, 0
    report = reports[0]
    units = [u for u in report.get("units", []) if isinstance(u, list) and len(u) == 2]
    total, passed_n = len(units), sum(1 for ok, _ in units if ok is True)
    first_failure = next((str(d) for ok, d in units if ok is not True), "")
    load = report.get("load")
    if load == "compile_error":
        return "error", f"the program does not compile: {report.get('detail', '')}", 0, total
    if load == "load_error":
        status = "memory" if report.get("memory") else "failed"
        return status, f"the program raised while loading: {report.get('detail', '')}", 0, total
    if load != "ok":
        return "crashed", "the program died before loading", 0, total
    if report.get("died"):
        return "crashed", "the program stopped answering calls", passed_n, total
    if total == 0:
        return "error", "the tests contain no assertions", 0, 0
    if report.get("calls") == 0:  # the tester always counts its calls into the program
        return "error", NEVER_CALLED, 0, total
    if passed_n == total:
        return "passed", "", passed_n, total
    return ("memory" if report.get("memory") else "failed"), first_failure, passed_n, total


def _text(frame: list, index: int) -> str:
    return str(frame[index])[:500] if len(frame) > index else ""
