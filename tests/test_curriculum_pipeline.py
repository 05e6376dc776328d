"""A whole curriculum round with a scripted policy and the real sandbox: exact funnel counts."""

from __future__ import annotations

import pytest
from curriculum_helpers import (
    FAILING_REFERENCE,
    HUMANEVAL_RENAMED,
    LIBRARY,
    NONDETERMINISTIC,
    WEAK_TESTS,
    ScriptedModel,
)

from laimark_pl.curriculum.calibrate import CalibrationConfig
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.curriculum.pipeline import RoundConfig, generate_candidates, run_round
from laimark_pl.curriculum.propose import ProposeConfig
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield sb


REPLIES = [s.proposal() for s in LIBRARY[:4]] + [
    "no idea",  # parse failure
    NONDETERMINISTIC.proposal(), WEAK_TESTS.proposal(), FAILING_REFERENCE.proposal(),  # verify failures
    LIBRARY[0].proposal(),  # duplicate within the batch
    HUMANEVAL_RENAMED.proposal(),  # contaminated
]


def config(**kw) -> RoundConfig:
    kw.setdefault("num_candidates", len(REPLIES))
    return RoundConfig(propose=ProposeConfig(harder_share=0.0), calibration=CalibrationConfig(samples=8), **kw)


def test_stages_one_to_three_count_every_rule(sandbox):
    pool = [parse_proposal(LIBRARY[3].proposal())]  # already in the pool: a duplicate
    out = generate_candidates(ScriptedModel(proposals=REPLIES), sandbox, pool, config(), seed=0)
    assert sorted(p.entry_point for p in out.problems) == ["add_pairs", "count_upper", "second_largest"]
    assert dict(out.funnel.steps) == {"proposed": 10, "parsed": 9, "verified": 6, "unique": 4, "decontaminated": 3}
    assert dict(out.funnel.reasons) == {
        "parse:no_sections": 1, "nondeterministic:random": 1, "verify:weak_tests": 1,
        "verify:reference_failed": 1, "dedup:same_name": 2, "contaminated:docstring": 1}
    assert set(out.seconds) == {"propose", "verify", "dedup"} and all(v >= 0 for v in out.seconds.values())
    assert len(out.raw) == 10 and out.raw[4] == "no idea"


def test_a_round_calibrates_new_and_old_problems_in_one_batch(sandbox):
    model = ScriptedModel(proposals=REPLIES, pass_prob={"add_pairs": 0.5, "count_upper": 1.0,
                                                        "second_largest": 0.5, "digits_product": 0.0})
    old = [parse_proposal(LIBRARY[5].proposal())]
    result, recalibrated = run_round(model, sandbox, [], config(), system_prompt="SYS", seed=1, recalibrate=old)
    steps = result.funnel.steps
    assert (steps["proposed"], steps["decontaminated"]) == (10, 4)
    assert steps["derived"] == 8  # one deduction and one abduction per surviving problem
    assert steps["calibrated"] == len(result.calibration.result.kept)
    assert steps["accepted"] == len(result.accepted) <= steps["calibrated"]
    assert all(0.2 <= p.pass_rate <= 0.8 for p in result.accepted)
    names = {p.entry_point for p in result.accepted}
    assert "count_upper" not in names and "digits_product" not in names  # mastered / too hard
    assert [p.entry_point for p in recalibrated.problems] == ["gcd_list"]
    assert recalibrated.problems[0].pass_rate is not None
    calib_calls = [c for c in model.calls if c["desc"] == "calibrate"]
    assert len(calib_calls) == 1 and len(calib_calls[0]["prompts"]) == 4 + 8 + 1
    assert calib_calls[0]["system_prompt"] == "SYS"
    assert set(result.seconds) == {"propose", "verify", "dedup", "calibrate"}


def test_the_type_cap_applies_to_accepted_problems(sandbox):
    model = ScriptedModel(proposals=REPLIES, default_p=0.5)
    result, _ = run_round(model, sandbox, [], config(max_type_share=0.34), seed=2)
    counts = {t: sum(p.problem_type == t for p in result.accepted) for t in ("induction", "deduction", "abduction")}
    assert max(counts.values()) <= 0.34 * len(result.accepted) + 1e-9
    assert result.funnel.reasons.get("type_cap", 0) == result.funnel.steps["calibrated"] - len(result.accepted)


def test_reserved_problems_are_never_admitted(sandbox):
    reserved = [parse_proposal(LIBRARY[1].proposal())]  # e.g. the prompt-evolution held-out set
    out = generate_candidates(ScriptedModel(proposals=REPLIES[:4]), sandbox, [], config(num_candidates=4),
                              reserved=reserved)
    assert sorted(p.entry_point for p in out.problems) == ["add_pairs", "digits_product", "second_largest"]
    assert out.funnel.reasons == {"dedup:same_name": 1}
