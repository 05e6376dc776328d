"""The parent's judgement of what a run sent back (no process involved)."""

from laimark_pl.sandbox.asserts import plan_asserts
from laimark_pl.sandbox.judge import NEVER_CALLED, judge_calls, judge_tester
from laimark_pl.sandbox.wire import encode_value

PLAN = plan_asserts("assert f(1) == 2\nassert f(2) == 3", "f")


def _answers(*values):
    return [["loaded"], *(["ok", encode_value(v)] for v in values)]


def test_all_right_answers_pass_and_a_wrong_one_fails():
    assert judge_calls(PLAN, _answers(2, 3), "")[:1] == ("passed",)
    status, detail, passed, total = judge_calls(PLAN, _answers(2, 4), "")
    assert (status, passed, total) == ("failed", 1, 2) and detail


def test_missing_answers_are_a_crash_not_a_pass():
    status, _, passed, total = judge_calls(PLAN, _answers(2), "")
    assert (status, passed, total) == ("crashed", 1, 2)
    assert judge_calls(PLAN, [], "")[0] == "crashed"


def test_extra_answers_and_bad_frames_never_pass():
    assert judge_calls(PLAN, _answers(2, 3, 4), "")[0] == "failed"
    assert judge_calls(PLAN, _answers(2, 3), "malformed result frame")[0] == "crashed"
    assert judge_calls(PLAN, [["loaded"], ["ok", {"bogus": 1}], ["what"]], "")[0] != "passed"


def test_compile_and_load_errors():
    assert judge_calls(PLAN, [["compile_error", "SyntaxError"]], "")[0] == "error"
    assert judge_calls(PLAN, [["load_error", "MemoryError", "memory"]], "")[0] == "memory"
    assert judge_calls(PLAN, [["load_error", "ValueError", ""]], "")[0] == "failed"


def test_tester_reports():
    ok = {"load": "ok", "units": [[True, ""], [True, ""]]}
    assert judge_tester([ok], "") == ("passed", "", 2, 2)
    bad = {"load": "ok", "units": [[True, ""], [False, "assert 1 == 2"]]}
    assert judge_tester([bad], "")[:3] == ("failed", "assert 1 == 2", 1)
    assert judge_tester([{"load": "ok", "units": [], "died": False}], "")[0] == "error"
    assert judge_tester([{"load": "ok", "units": [[True, ""]], "died": True}], "")[0] == "crashed"
    assert judge_tester([ok, ok], "")[0] == "crashed"  # exactly one report
    assert judge_tester([], "")[0] == "crashed"


def test_asserts_that_never_call_the_program_are_an_error_not_a_pass():
    builtins_only = plan_asserts("assert max(2, 5) == 5\nassert sorted([3, 1]) == [1, 3]", None)
    assert builtins_only.units and not builtins_only.calls
    assert judge_calls(builtins_only, [["loaded"]], "") == ("error", NEVER_CALLED, 0, 2)
    uncalled = {"load": "ok", "units": [[True, ""]], "died": False, "calls": 0}
    assert judge_tester([uncalled], "") == ("error", NEVER_CALLED, 0, 1)
    assert judge_tester([{**uncalled, "calls": 3}], "")[0] == "passed"
