"""Deduction/abduction tasks derived from verified problems, judged by the real sandbox; the type cap."""

from __future__ import annotations

import random

import pytest
from curriculum_helpers import LIBRARY

from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.curriculum.task_types import assert_calls, cap_type_mix, derive_tasks, strip_docstrings, type_mix
from laimark_pl.problems import Problem, read_problems, write_problems
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield sb


def test_derived_tasks_accept_the_right_answer_and_reject_a_wrong_one(sandbox, tmp_path):
    parents = [parse_proposal(s.proposal()) for s in LIBRARY]
    tasks = [t for p in parents for t in derive_tasks(p, rng=random.Random(0))]
    assert {t.problem_type for t in tasks} == {"deduction", "abduction"}
    programs, expected = [], []
    for task in tasks:
        if task.problem_type == "deduction":
            right, wrong = task.expected, "'certainly wrong'"
        else:
            right = next(a.args for a in assert_calls(task.tests, task.func_name))
            wrong = "1, 2, 3, 4, 5, 6"  # too many arguments for any library function
        programs += [task.check_program(right), task.check_program(wrong)]
        expected += [True, False]
    verdicts = sandbox.check(programs)
    assert [v.passed for v in verdicts] == expected
    # derived tasks round-trip through the study's file format
    write_problems(tmp_path / "tasks.jsonl", tasks)
    assert [t.uid for t in read_problems(tmp_path / "tasks.jsonl")] == [t.uid for t in tasks]


def test_code_shown_has_no_docstring_to_give_the_answer_away():
    parent = Problem(prompt='def sq(x):\n    """Square.\n    >>> sq(3)\n    9\n    """',
                     tests="assert sq(3) == 9\nassert sq(-2) == 4",
                     solution='def sq(x):\n    """Square.\n    >>> sq(3)\n    9\n    """\n    return x * x  # 9',
                     entry_point="sq")
    for task in derive_tasks(parent, per_type=2):
        assert ">>>" not in task.code and "# 9" not in task.code
        assert task.seed_id == parent.uid and task.func_name == "sq"
    assert strip_docstrings('def f():\n    "only a docstring"\n') == "def f():\n    pass\n"


def test_only_usable_asserts_become_tasks():
    parent = Problem(prompt='def f(x):\n    "Doc."', entry_point="f", solution="def f(x):\n    return {x}",
                     tests="assert f(1) == {1}\nassert f(2) != 3\nassert g(1) == 1\nassert f(x=1) == {1}")
    tasks = derive_tasks(parent, per_type=5)
    # {1} is a literal set, so both kinds work for the one plain positional equality assert
    assert [(t.problem_type, t.input, t.expected) for t in tasks] == [("deduction", "1", "{1}"),
                                                                       ("abduction", None, "{1}")]
    non_literal = Problem(prompt='def f(x):\n    "Doc."', entry_point="f", solution="def f(x):\n    return frozenset()",
                          tests="assert f(len('ab')) == frozenset()")
    assert derive_tasks(non_literal) == []  # neither a literal answer nor literal arguments
    assert derive_tasks(tasks[0]) == []  # nothing is derived from a derived task


def _mix(n_ind, n_ded, n_abd):
    def p(t, i, rate):
        extra = dict(code="def f(x): return x", func_name="f", expected="1") if t != "induction" else {}
        return Problem(prompt=f"def f{i}(x):\n    'doc'", tests=f"assert f{i}(1) == {i}", entry_point="f",
                       problem_type=t, input="1" if t == "deduction" else None, pass_rate=rate, **extra)
    return ([p("induction", i, 0.5) for i in range(n_ind)] + [p("deduction", 100 + i, 0.1 * (i % 10))
            for i in range(n_ded)] + [p("abduction", 200 + i, 0.5) for i in range(n_abd)])


@pytest.mark.parametrize("counts, share, expected", [
    ((2, 2, 16), 0.5, (2, 2, 4)),
    ((10, 5, 5), 0.5, (10, 5, 5)),
    ((10, 10, 10), 0.4, (10, 10, 10)),
    ((10, 0, 30), 0.5, (10, 0, 10)),
    ((12, 3, 3), 0.5, (6, 3, 3)),
    ((5, 0, 0), 0.5, (5, 0, 0)),  # a single type cannot meet a 50% cap: relaxed, not emptied
])
def test_type_mix_cap(counts, share, expected):
    kept = cap_type_mix(_mix(*counts), share)
    got = tuple(sum(p.problem_type == t for p in kept) for t in ("induction", "deduction", "abduction"))
    assert got == expected
    present = sum(1 for c in counts if c)
    assert max(type_mix(kept).values()) <= max(share, 1 / present) + 1e-9


def test_cap_keeps_the_most_informative_problems():
    kept = cap_type_mix(_mix(0, 10, 2), 0.5)
    rates = sorted(p.pass_rate for p in kept if p.problem_type == "deduction")
    assert rates == pytest.approx([0.4, 0.5])  # nearest 0.5 first
    with pytest.raises(ValueError, match="max_type_share"):
        cap_type_mix(kept, 0.0)
