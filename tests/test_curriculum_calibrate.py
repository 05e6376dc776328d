"""Calibration statistics on a scripted policy, judged by the real sandbox."""

from __future__ import annotations

import json

import pytest
from curriculum_helpers import LIBRARY, CountingSandbox, ScriptedModel

from laimark_pl.curriculum.calibrate import CalibrationConfig, calibrate, in_window, pass_rate_histogram
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.problems import read_problems
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield CountingSandbox(sb)


@pytest.fixture(scope="module")
def problems():
    return [parse_proposal(s.proposal()) for s in LIBRARY[:5]]


def test_pass_rates_follow_the_policy_and_the_window_filters(sandbox, problems):
    sandbox.calls.clear()
    model = ScriptedModel(pass_prob={"add_pairs": 0.0, "count_upper": 1.0, "second_largest": 0.5,
                                     "digits_product": 0.5, "snake_to_camel": 0.9})
    result = calibrate(problems, model, sandbox, CalibrationConfig(samples=8), system_prompt="SYS", seed=3)
    rates = {p.entry_point: p.pass_rate for p in result.problems}
    assert rates["add_pairs"] == 0.0 and rates["count_upper"] == 1.0
    assert 0.0 < rates["second_largest"] < 1.0 and 0.0 < rates["digits_product"] < 1.0
    for p in result.problems:
        assert p.samples == 8 and p.learnability_zone == (0.2, 0.8)
        assert (p in result.result.kept) == in_window(p.pass_rate, 0.2, 0.8)
    assert result.result.rejected[problems[0].uid] == "calibrate:too_hard"
    assert result.result.rejected[problems[1].uid] == "calibrate:too_easy"
    # one batched generation call (K samples per problem, temperature 0.7) and one sandbox call
    assert len(model.calls) == 1
    call = model.calls[0]
    assert (call["num_samples"], call["temperature"], call["system_prompt"], len(call["prompts"])) == (8, 0.7, "SYS", 5)
    assert sandbox.calls == [5 * 8]


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_pass_rate_estimates_the_success_probability(sandbox, problems, p):
    model = ScriptedModel(default_p=p)
    result = calibrate(problems[:2], model, sandbox, CalibrationConfig(samples=48), seed=11)
    for rate in (q.pass_rate for q in result.problems):
        assert abs(rate - p) < 0.2  # 48 samples: standard error <= 0.073


def test_calibration_is_reproducible_for_a_seed(sandbox, problems):
    a = calibrate(problems, ScriptedModel(), sandbox, seed=5).pass_rates
    b = calibrate(problems, ScriptedModel(), sandbox, seed=5).pass_rates
    assert a == b


def test_files_in_the_original_study_format_calibrate(sandbox, tmp_path):
    spec = LIBRARY[3]
    rows = [
        {"prompt": f'def {spec.name}({spec.args}):\n    """{spec.doc}"""', "tests": "\n".join(spec.tests),
         "solution": f"def {spec.name}({spec.args}):\n{spec.right}", "entry_point": spec.name,
         "source": "self-generated", "topic": "math", "difficulty": "easy", "pass_rate": 0.5, "samples": 4,
         "learnability_zone": [0.2, 0.8]},
        {"problem_type": "deduction", "dd_code": f"def {spec.name}({spec.args}):\n{spec.right}",
         "dd_func_name": spec.name, "dd_input": "123", "dd_expected": "6", "source": "self-generated"},
    ]
    path = tmp_path / "study.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = read_problems(path)
    result = calibrate(problems, ScriptedModel(default_p=1.0), sandbox, CalibrationConfig(samples=4))
    assert [p.pass_rate for p in result.problems] == [1.0, 1.0]
    result = calibrate(problems, ScriptedModel(default_p=0.0), sandbox, CalibrationConfig(samples=4))
    assert [p.pass_rate for p in result.problems] == [0.0, 0.0]


def test_histogram_and_config_validation():
    assert pass_rate_histogram([0.0, 0.1, 0.5, 0.99, 1.0], bins=5) == [2, 0, 1, 0, 2]
    with pytest.raises(ValueError, match="window"):
        CalibrationConfig(lo=0.9, hi=0.1)
    with pytest.raises(ValueError, match="samples"):
        CalibrationConfig(samples=0)
