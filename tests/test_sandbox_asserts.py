"""Parent-side planning and evaluation of assert-shaped tests."""

from __future__ import annotations

import pytest

from laimark_pl.sandbox.asserts import RemoteCall, RemoteFailure, evaluate_unit, plan_asserts
from laimark_pl.sandbox.wire import Unplain


def test_plan_extracts_calls_without_expected_values():
    plan = plan_asserts("assert f(1, k=[2]) == 'secret'\nassert g(3 * 19) in (1, 2)", None)
    assert plan.calls == [RemoteCall("f", (1,), {"k": [2]}), RemoteCall("g", (57,), {})]
    assert len(plan.units) == 2
    assert "secret" not in repr(plan.calls)


def test_check_function_maps_candidate_to_entry_point():
    tests = "METADATA = {}\n\ndef check(candidate):\n    '''doc'''\n    assert candidate(2) == 4\n    assert True\n"
    plan = plan_asserts(tests, "double")
    assert [c.name for c in plan.calls] == ["double"] and len(plan.units) == 2
    explicit = plan_asserts("def check(c):\n    assert c(1) == 2\ncheck(other)\n", None)
    assert [c.name for c in explicit.calls] == ["other"]


@pytest.mark.parametrize("tests", [
    "for i in range(3):\n    assert f(i) == i",
    "x = f(1)\nassert x == 1",
    "assert f(f(1)) == 1",
    "assert f(1).bit_length() == 1",
    "assert __import__('os').getpid() > 0",
    "import random\nassert f(random.randint(1, 2)) == 1",
    "def helper():\n    return 1\nassert f(1) == helper()",
    "assert f(*[1]) == 1",
    "assert sorted(f(1), key=lambda v: -v) == [1]",
    "def check(candidate):\n    pass\n",
])
def test_tests_outside_the_subset_are_not_planned(tests):
    assert plan_asserts(tests, None) is None


def test_syntax_errors_propagate():
    with pytest.raises(SyntaxError):
        plan_asserts("assert f(1 ==", None)


def evaluate(tests, *results):
    plan = plan_asserts(tests, "f")
    return [evaluate_unit(u, list(results)) for u in plan.units]


def test_evaluation_uses_plain_results():
    assert evaluate("assert f(1) == 2", 2) == [(True, "")]
    held, detail = evaluate("assert f(1) == 2", 3)[0]
    assert not held and "returned 3" in detail
    assert evaluate("assert abs(f(0.1) - 0.3) < 1e-9 and f(2) is True", 0.30000000000000004, True)[0][0]
    assert evaluate("import math\nassert math.isclose(f(1), 1.0)", 1.0)[0][0]
    assert evaluate("assert f(1) != 5", Unplain("Liar"))[0][0] is False


def test_failures_and_oversized_arithmetic_fail_the_assert():
    held, detail = evaluate("assert f(1) == 2", RemoteFailure("raised ValueError: x"))[0]
    assert not held and "ValueError" in detail
    assert evaluate("assert f(1) * 10 ** 9 == ''", "abc")[0][0] is False
    assert evaluate("assert len(list(range(f(1)))) == 1", 10 ** 12)[0][0] is False
    assert evaluate("assert 2 ** f(1) > 0", 10 ** 9)[0][0] is False
    assert evaluate("assert sorted(f(1)) == [1, 2]", [2, "x"])[0][0] is False


def test_entry_point_is_called_even_when_named_like_a_builtin():
    plan = plan_asserts("assert sorted([3, 1]) == [1, 3]\nassert max(1, 2) == 2", "sorted")
    assert plan.calls == [RemoteCall("sorted", ([3, 1],), {})]  # max stays the real builtin
    assert plan_asserts("assert sorted([3, 1]) == [1, 3]", None).calls == []  # no entry point: builtin
    assert plan_asserts("assert sorted([3, 1]) == [1, 3]", "f").calls == []


@pytest.mark.parametrize("tests,entry_point", [
    ("assert sorted == 1", "sorted"),  # the function under test as a value: the tester handles it
    ("def check(c):\n    assert c(1) == 2\ncheck(max)\n", "f"),  # a builtin handed to check()
])
def test_ambiguous_builtin_uses_are_not_planned(tests, entry_point):
    assert plan_asserts(tests, entry_point) is None
