"""Problem model and the JSONL curriculum format (ours and the original study's)."""

import json

import pytest

from laimark_pl.problems import (
    AnswerFormatError,
    Problem,
    ProblemFileError,
    append_problem,
    builtin_curriculum_path,
    read_problems,
    write_problems,
)

STUDY_ROW = {
    "prompt": 'def add_one(x):\n    """Add one.\n    >>> add_one(1)\n    2\n    """',
    "tests": "assert add_one(1) == 2\nassert add_one(-1) == 0\nassert add_one(10) == 11",
    "solution": "def add_one(x):\n    return x + 1",
    "entry_point": "add_one",
    "topic": "math",
    "difficulty": "easy",
    "source": "self-generated",
    "pass_rate": 0.5,
    "samples": 4,
    "learnability_zone": [0.2, 0.8],
}
VARIATION_ROW = {k: v for k, v in STUDY_ROW.items() if k not in ("topic", "difficulty")} | {
    "source": "variation", "seed_id": "abc"}
DEDUCTION_ROW = {"problem_type": "deduction", "dd_code": "def sq(x):\n    return x * x", "dd_func_name": "sq",
                 "dd_input": "3", "dd_expected": "9", "source": "self-generated"}
ABDUCTION_ROW = {"problem_type": "abduction", "ab_code": "def sq(x):\n    return x * x", "ab_func_name": "sq",
                 "ab_expected": 16}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_study_format_including_derived_types(tmp_path):
    path = _write(tmp_path / "c.jsonl", [STUDY_ROW, "", VARIATION_ROW, DEDUCTION_ROW, ABDUCTION_ROW])
    problems = read_problems(path)
    assert [p.problem_type for p in problems] == ["induction", "induction", "deduction", "abduction"]
    first = problems[0]
    assert first.pass_rate == 0.5 and first.samples == 4 and first.learnability_zone == (0.2, 0.8)
    assert problems[1].seed_id == "abc" and problems[1].source == "variation"
    assert problems[2].func_name == "sq" and problems[2].input == "3" and problems[2].expected == "9"
    assert problems[3].expected == "16"  # non-string expected values are kept as source text


def test_round_trip_keeps_every_field_and_unknown_extras(tmp_path):
    row = STUDY_ROW | {"my_custom_field": {"a": 1}}
    src = _write(tmp_path / "in.jsonl", [row, DEDUCTION_ROW, ABDUCTION_ROW])
    out = tmp_path / "out.jsonl"
    write_problems(out, read_problems(src))
    again = read_problems(out)
    assert again == read_problems(src)
    written = json.loads(out.read_text().splitlines()[0])
    assert written["my_custom_field"] == {"a": 1}
    assert json.loads(out.read_text().splitlines()[1])["dd_func_name"] == "sq"


@pytest.mark.parametrize(
    ("row", "field", "needle"),
    [
        ({k: v for k, v in STUDY_ROW.items() if k != "tests"}, "tests", "missing"),
        (STUDY_ROW | {"entry_point": "not valid"}, "entry_point", "identifier"),
        (STUDY_ROW | {"pass_rate": 1.5}, "pass_rate", "[0, 1]"),
        (STUDY_ROW | {"samples": "four"}, "samples", "integer"),
        (STUDY_ROW | {"learnability_zone": [0.9, 0.1]}, "learnability_zone", "lo <= hi"),
        (STUDY_ROW | {"prompt": 42}, "prompt", "string"),
        (STUDY_ROW | {"problem_type": "riddle"}, "problem_type", "one of"),
        ({k: v for k, v in DEDUCTION_ROW.items() if k != "dd_input"}, "dd_input", "missing"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path, row, field, needle):
    path = _write(tmp_path / "bad.jsonl", [STUDY_ROW, row])
    with pytest.raises(ProblemFileError) as info:
        read_problems(path)
    err = info.value
    assert err.errors[0][0] == 2 and err.errors[0][1] == field
    assert f"{path}:2: field '{field}'" in str(err) and needle in str(err)


def test_every_bad_line_is_reported_not_just_the_first(tmp_path):
    path = _write(tmp_path / "bad.jsonl", ["{not json", STUDY_ROW, "[1, 2]", STUDY_ROW | {"tests": ""}])
    with pytest.raises(ProblemFileError) as info:
        read_problems(path)
    assert [line for line, _, _ in info.value.errors] == [1, 3, 4]


def test_check_program_for_each_type():
    induction = Problem(prompt="def f(x):", tests="assert f(1) == 2", entry_point="f")
    assert induction.check_program("def f(x): return 2").tests == "assert f(1) == 2"
    ded = Problem(prompt="", tests="", entry_point="sq", problem_type="deduction", code="def sq(x): return x*x",
                  func_name="sq", input="3", expected="9")
    assert ded.check_program(" 9 ").tests == "assert sq(3) == 9"
    abd = Problem(prompt="", tests="", entry_point="sq", problem_type="abduction", code="def sq(x): return x*x",
                  func_name="sq", expected="16")
    assert abd.check_program("4").tests == "assert sq(4) == 16"
    assert abd.check_program("'a', [1, 2]").tests == "assert sq('a', [1, 2]) == 16"


@pytest.mark.parametrize("answer", ["sq(3)", "__import__('os').getcwd()", "9 if True else 0", ""])
def test_derived_answers_must_be_literals(answer):
    ded = Problem(prompt="", tests="", entry_point="sq", problem_type="deduction", code="def sq(x): return x*x",
                  func_name="sq", input="3", expected="9")
    with pytest.raises(AnswerFormatError):
        ded.check_program(answer)


def test_uid_is_stable_and_content_based():
    a = Problem(prompt="def f(x):", tests="assert f(1) == 2", entry_point="f")
    b = Problem(prompt="def f(x):", tests="assert f(1) == 2", entry_point="f", topic="other")
    c = Problem(prompt="def f(x):", tests="assert f(1) == 3", entry_point="f")
    assert a.uid == b.uid != c.uid and len(a.uid) == 12


def test_append_problem_and_builtin_curriculum(tmp_path):
    shipped = read_problems(builtin_curriculum_path())
    assert len(shipped) >= 20 and {p.problem_type for p in shipped} == {"induction", "deduction", "abduction"}
    out = tmp_path / "appended.jsonl"
    for p in shipped[:3]:
        append_problem(out, p)
    assert read_problems(out) == shipped[:3]
