"""HumanEval harness: data loading, the two 164/164 checks through the real sandbox,
`evaluate_generator` with a scripted generator, and `score_completions`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from laimark_pl.evaluation.humaneval import (
    HUMANEVAL_SIZE,
    CompletionsFileError,
    EvalReport,
    evaluate_generator,
    load_humaneval_problems,
    read_completions,
    score,
    score_completions,
    task_id,
)
from laimark_pl.problems import Problem, ProblemFileError
from laimark_pl.sandbox import create
from laimark_pl.sandbox.types import Program, Verdict

PROBLEMS = load_humaneval_problems()


class CountingSandbox:
    """A real sandbox that also records how many ``check`` calls it served."""

    def __init__(self, sandbox) -> None:
        self.sandbox = sandbox
        self.calls: list[int] = []

    def check(self, programs: Sequence[Program]) -> list[Verdict]:
        self.calls.append(len(programs))
        return self.sandbox.check(programs)


@pytest.fixture(scope="module")
def sandbox():
    with create("process", timeout_s=10.0) as sb:
        yield sb


def body_of(problem: Problem) -> str:
    return problem.solution[len(problem.prompt):]


def full_function(problem: Problem) -> str:
    """The canonical solution as a full function: from ``def entry_point`` on (the prompt's
    imports and helpers are not repeated; the harness must keep them)."""
    start = problem.prompt.index(f"def {problem.entry_point}(")
    return problem.prompt[start:] + body_of(problem)


def chatty(code: str) -> str:
    return (f"Sure! Here is my solution.\n\n```python\n{code.rstrip()}\n```\n\n"
            "It handles the empty input too.\nComplexity: O(n).")


def test_load_humaneval_problems() -> None:
    assert len(PROBLEMS) == HUMANEVAL_SIZE == 164
    first = PROBLEMS[0]
    assert task_id(first) == "HumanEval/0" and first.entry_point == "has_close_elements"
    assert first.problem_type == "induction" and first.source == "humaneval"
    assert "def check(candidate)" in first.tests and first.tests.endswith("\ncheck(has_close_elements)\n")
    assert [task_id(p) for p in PROBLEMS] == [f"HumanEval/{i}" for i in range(164)]
    assert all(p.solution.startswith(p.prompt) for p in PROBLEMS)
    decode = next(p for p in PROBLEMS if task_id(p) == "HumanEval/38")
    assert "def encode_cyclic" in decode.prompt and decode.entry_point == "decode_cyclic"


def test_load_humaneval_problems_names_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "he.jsonl"
    good = {"task_id": "T/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
            "test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}
    bad.write_text(json.dumps(good) + "\n{oops\n" + json.dumps({**good, "entry_point": ""}) + "\n")
    with pytest.raises(ProblemFileError) as info:
        load_humaneval_problems(bad)
    assert info.value.errors[0][:2] == (2, "<json>") and info.value.errors[1][:2] == (3, "entry_point")


def test_canonical_solutions_score_164_in_body_and_full_mode(sandbox) -> None:
    """The harness's correctness check: body-only answers and chatty full-function answers."""
    counting = CountingSandbox(sandbox)
    body = score(PROBLEMS, [[body_of(p)] for p in PROBLEMS], counting, mode="body", progress=False)
    full = score(PROBLEMS, [[chatty(full_function(p))] for p in PROBLEMS], counting, mode="full",
                 progress=False)
    failed = {r.task_id: (r.statuses, r.details) for rep in (body, full) for r in rep.results if not r.passed[0]}
    assert failed == {}
    assert (body.passed, body.total, body.pass_at_1) == (164, 164, 1.0)
    assert (full.passed, full.total, full.pass_at_1) == (164, 164, 1.0)
    assert counting.calls == [164, 164]  # one batched call per scoring


def test_wrong_answers_fail(sandbox) -> None:
    subset = PROBLEMS[:12]
    wrong = [["    return None\n"], [chatty(f"def {subset[1].entry_point}(paren_string):\n    return []")]]
    wrong += [["```python\nraise SystemExit(0)\n```"]] + [["    import sys; sys.exit(0)\n"]]
    wrong += [[body_of(p).replace("return", "return 1 +", 1)] for p in subset[4:]]
    report = score(subset, wrong, sandbox, progress=False)
    assert report.passed == 0, [(r.task_id, r.statuses) for r in report.results if r.passed[0]]
    assert all(s != "passed" for r in report.results for s in r.statuses)


class ScriptedGenerator:
    """A `TextGenerator` with canned answers: the canonical body for even-numbered tasks, a wrong
    body for odd ones, and for several samples: one right answer then wrong ones."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.by_prompt_fragment = {p.prompt.rstrip(): p for p in problems}
        self.calls: list[dict] = []

    def _problem(self, prompt: str) -> Problem:
        return next(p for frag, p in self.by_prompt_fragment.items() if frag in prompt)

    def generate_text(self, prompts, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=512,
                      system_prompt=None, seed=None, desc=None):
        self.calls.append({"n": len(prompts), "num_samples": num_samples, "system_prompt": system_prompt,
                           "temperature": temperature, "seed": seed, "desc": desc})
        out = []
        for prompt in prompts:
            problem = self._problem(prompt)
            right = f"```python\n{body_of(problem)}```"
            wrong = "```python\n    return 'wrong'\n```"
            if num_samples == 1:
                out.append([right if int(task_id(problem).split("/")[1]) % 2 == 0 else wrong])
            else:
                out.append([right] + [wrong] * (num_samples - 1))
        return out


def test_evaluate_generator_greedy(sandbox, tmp_path: Path) -> None:
    generator, counting = ScriptedGenerator(PROBLEMS), CountingSandbox(sandbox)
    report = evaluate_generator(generator, counting, mode="body", limit=10, system_prompt="be careful",
                                seed=3, progress=False)
    assert generator.calls == [{"n": 10, "num_samples": 1, "system_prompt": "be careful", "temperature": 0.0,
                                "seed": 3, "desc": None}]  # progress=False: no generation bar either
    assert counting.calls == [10]
    assert (report.passed, report.total, report.pass_at_1) == (5, 10, 0.5)
    assert [r.passed for r in report.results] == [[i % 2 == 0] for i in range(10)]
    assert report.results[1].statuses == ["failed"] and report.results[0].statuses == ["passed"]
    summary = report.summary()
    assert summary["passed"] == 5 and summary["pass_at_k"] == {"1": 0.5} and summary["mode"] == "body"

    path = report.write_jsonl(tmp_path / "out" / "results.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["task_id"] for r in records] == [f"HumanEval/{i}" for i in range(10)]
    assert records[0]["passed"] == [True] and records[0]["completions"][0].startswith("```python")
    assert "def has_close_elements" in records[0]["programs"][0]


def test_evaluate_generator_pass_at_k_with_samples(sandbox) -> None:
    generator, counting = ScriptedGenerator(PROBLEMS), CountingSandbox(sandbox)
    report = evaluate_generator(generator, counting, samples=10, temperature=0.8, limit=3, progress=False)
    assert generator.calls[0]["num_samples"] == 10 and counting.calls == [30]
    assert report.pass_at_k == pytest.approx({1: 0.1, 10: 1.0})  # k in (1, 10, 100) up to the samples
    assert report.passed == 3  # the first sample of each problem is the right one
    assert all(r.passed == [True] + [False] * 9 for r in report.results)


def test_evaluate_generator_rejects_bad_settings(sandbox) -> None:
    generator = ScriptedGenerator(PROBLEMS)
    with pytest.raises(ValueError, match="temperature"):
        evaluate_generator(generator, sandbox, samples=4, temperature=0.0, limit=2)
    with pytest.raises(ValueError, match="mode"):
        evaluate_generator(generator, sandbox, mode="half", limit=2)  # type: ignore[arg-type]
    assert generator.calls == []


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_score_completions_file(sandbox, tmp_path: Path) -> None:
    lines = [{"task_id": task_id(p), "completion": body_of(p)} for p in PROBLEMS]
    lines[7]["completion"] = "    return 42\n"
    lines.append("")  # blank lines are fine
    report = score_completions(_write_lines(tmp_path / "c.jsonl", lines), "body", sandbox, progress=False)
    assert (report.passed, report.total) == (163, 164)
    assert report.pass_at_1 == pytest.approx(163 / 164)
    assert report.results[7].passed == [False]


def test_score_completions_round_trips_results_and_counts_missing_tasks(sandbox, tmp_path: Path) -> None:
    first = score(PROBLEMS[:3], [[body_of(p)] for p in PROBLEMS[:3]], sandbox, progress=False)
    results = first.write_jsonl(tmp_path / "results.jsonl")
    with pytest.warns(UserWarning, match="161 of 164"):
        report = score_completions(results, "body", sandbox, progress=False)
    assert (report.passed, report.total, report.missing) == (3, 164, 161)
    assert report.results[3].statuses == ["missing"]
    limited = score_completions(results, "body", sandbox, limit=3, progress=False)
    assert (limited.passed, limited.total, limited.missing, limited.pass_at_1) == (3, 3, 0, 1.0)


def test_completions_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_completions(tmp_path / "nope.jsonl", ["HumanEval/0"])
    path = _write_lines(tmp_path / "bad.jsonl", [
        {"task_id": "HumanEval/0", "completion": "    return 1"},
        "{not json",
        {"completion": "x"},
        {"task_id": "HumanEval/999", "completion": "x"},
        {"task_id": "HumanEval/0", "completion": 5},
        {"task_id": "HumanEval/0"},
        ["a list"],
    ])
    with pytest.raises(CompletionsFileError) as info:
        read_completions(path, [task_id(p) for p in PROBLEMS])
    fields = [(line, fld) for line, fld, _ in info.value.errors]
    assert fields == [(2, "<json>"), (3, "task_id"), (4, "task_id"), (5, "completion"), (6, "completion"),
                      (7, "<line>")]
    assert f"{path}:4: field 'task_id': unknown task 'HumanEval/999'" in str(info.value)


def test_report_without_samples_is_well_formed() -> None:
    report = EvalReport(mode="full", results=[], pass_at_k={})
    assert report.summary()["total"] == 0 and report.pass_at_1 == 0.0


def test_score_judges_every_problem_type_with_the_training_extraction(sandbox) -> None:
    """`score` is also what `validate`/`test` use: derived task types are judged, not just HumanEval."""
    code = "def double(x):\n    return 2 * x"
    deduction = Problem(prompt="", tests="", entry_point="double", problem_type="deduction", code=code,
                        func_name="double", input="21", expected="42")
    abduction = Problem(prompt="", tests="", entry_point="double", problem_type="abduction", code=code,
                        func_name="double", expected="10")
    report = score([deduction, deduction, abduction],
                   [["<answer>42</answer>"], ["<answer>double(21)</answer>"], ["I think 5. <answer>5</answer>"]],
                   sandbox, progress=False)
    assert [r.passed[0] for r in report.results] == [True, False, True]
    assert report.results[1].statuses == ["answer_format"]  # a call is not a literal: never run
