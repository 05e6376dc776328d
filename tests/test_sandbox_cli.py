"""``laimark sandbox check``: study-format curricula, JSON summary, errors."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from laimark_pl.problems import read_problems
from laimark_pl.sandbox.cli import reference_program, register

# Records in the original study's format (no problem_type on induction lines) plus derived tasks.
RECORDS = [
    {"prompt": "def add(a, b):\n    \"\"\"Sum.\"\"\"",
     "tests": "assert add(1, 2) == 3\nassert add(\n    -1,\n    1,\n) == 0",
     "solution": "def add(a, b):\n    return a + b", "entry_point": "add", "source": "self-generated",
     "topic": "math", "difficulty": "easy", "pass_rate": 0.5, "samples": 8, "learnability_zone": [0.2, 0.8]},
    {"prompt": "def rev(s):", "tests": "assert rev('ab') == 'ba'", "solution": "def rev(s):\n    return s",
     "entry_point": "rev", "seed_id": "HumanEval/1"},
    {"prompt": "def loop():", "tests": "assert loop() == 1", "solution": "def loop():\n    while True:\n        pass",
     "entry_point": "loop"},
    {"problem_type": "deduction", "dd_code": "def g(x):\n    return x * 3", "dd_func_name": "g", "dd_input": "4",
     "dd_expected": "12"},
    {"problem_type": "abduction", "ab_code": "def g(x):\n    return x * 3", "ab_func_name": "g",
     "ab_expected": "12", "ab_input": "4"},
    {"prompt": "def nothing():", "tests": "assert nothing() is None", "entry_point": "nothing"},
]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `sandbox` a sub-command even with one group
        pass

    return app


@pytest.fixture
def curriculum(tmp_path):
    path = tmp_path / "curriculum.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    return path


def test_json_summary_lists_failures_with_lines(app, curriculum):
    result = CliRunner().invoke(app, ["sandbox", "check", "--problems", str(curriculum), "--json",
                                      "--workers", "2", "--timeout", "1"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc == {"total": 6, "passed": 3, "failed": [
        {"line": 2, "entry_point": "rev", "status": "failed"},
        {"line": 3, "entry_point": "loop", "status": "timeout"},
        {"line": 6, "entry_point": "nothing", "status": "error"},
    ]}


def test_table_output_and_success_exit_code(app, tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n" + json.dumps(RECORDS[3]) + "\n")
    result = CliRunner().invoke(app, ["sandbox", "check", "-p", str(path), "-w", "1"])
    assert result.exit_code == 0, result.output
    assert "2/2 reference solutions pass" in result.output
    assert "passed" in result.output and "add" in result.output


def test_malformed_file_names_line_and_field(app, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{not json\n" + json.dumps({"prompt": "x", "tests": "y"}) + "\n")
    result = CliRunner().invoke(app, ["sandbox", "check", "--problems", str(path), "--json"])
    assert result.exit_code == 2
    assert ":2:" in result.output and ":3: field 'entry_point'" in result.output


def test_unknown_backend_is_rejected(app, curriculum):
    result = CliRunner().invoke(app, ["sandbox", "check", "--problems", str(curriculum), "--backend", "vm"])
    assert result.exit_code != 0 and "unknown backend" in result.output


def test_reference_programs_per_problem_type(curriculum):
    problems = read_problems(curriculum)
    induction, _, _, deduction, abduction, missing = (reference_program(p) for p in problems)
    assert induction[0].entry_point == "add" and induction[0].code.startswith("def add")
    assert deduction[0].tests == "assert g(4) == 12"
    assert abduction[0].tests == "assert g(4) == 12"
    assert missing == (None, "no reference solution")
