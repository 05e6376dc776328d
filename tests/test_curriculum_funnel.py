"""Funnel bookkeeping: counting, merging, metric names, persistence and the summary table."""

from __future__ import annotations

from rich.console import Console

from laimark_pl.curriculum.funnel import Funnel, StageResult
from laimark_pl.problems import Problem


def _problem(i: int) -> Problem:
    return Problem(prompt=f"def f{i}(x):\n    'doc'", tests=f"assert f{i}(1) == {i}", entry_point=f"f{i}")


def test_record_counts_survivors_and_reasons():
    result = StageResult(kept=[_problem(1)], rejected={_problem(2).uid: "verify:weak_tests",
                                                       _problem(3).uid: "verify:weak_tests"})
    funnel = Funnel()
    funnel.add("proposed", 3)
    funnel.record("verified", result)
    assert funnel.steps == {"proposed": 3, "verified": 1}
    assert funnel.reasons == {"verify:weak_tests": 2}
    assert result.counts == {"verify:weak_tests": 2}


def test_metrics_are_valid_mlflow_names_and_merge_adds_up():
    a, b = Funnel(), Funnel()
    a.add("proposed", 4)
    a.reject("parse:no_solution", 2)
    b.add("proposed", 6)
    b.reject("parse:no_solution")
    a.merge(b)
    metrics = a.as_metrics("curriculum/")
    assert metrics == {"curriculum/funnel/proposed": 10, "curriculum/rejected/parse.no_solution": 3}
    assert all(":" not in key for key in metrics)


def test_round_trip_and_table_order():
    funnel = Funnel()
    for step, n in (("calibrated", 2), ("input", 10)):
        funnel.add(step, n)
    funnel.reject("calibrate:too_hard", 8)
    again = Funnel.from_dict(funnel.to_dict())
    assert again == funnel
    console = Console(record=True, width=100)
    console.print(again.render("t"))
    text = console.export_text()
    assert text.index("input") < text.index("calibrated") < text.index("rejected: calibrate:too_hard")
    assert "20.0" in text  # 2 of 10 inputs


def test_partition_lets_a_filter_see_earlier_survivors():
    seen: list[str] = []
    problems = [_problem(1), _problem(2), _problem(1)]
    result = StageResult.partition(problems, lambda p: "dup" if p.entry_point in seen else None,
                                   on_keep=lambda p: seen.append(p.entry_point))
    assert [p.entry_point for p in result.kept] == ["f1", "f2"]
    assert result.counts == {"dup": 1}
