"""Resumable generate/calibrate runs, interrupted for real by a generator that crashes."""

from __future__ import annotations

import json

import pytest
from curriculum_helpers import LIBRARY, ScriptedModel

from laimark_pl.curriculum.calibrate import CalibrationConfig
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.curriculum.pipeline import RoundConfig
from laimark_pl.curriculum.propose import ProposeConfig
from laimark_pl.curriculum.resumable import (
    RunState,
    StateMismatchError,
    calibrate_file,
    generate_to_file,
    state_path,
)
from laimark_pl.problems import read_problems, write_problems
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield sb


ROUND = RoundConfig(num_candidates=2, propose=ProposeConfig(harder_share=0.0))
REPLIES = [s.proposal() for s in LIBRARY] + ["garbage"] * 4


def test_interrupted_generate_resumes_without_redoing_or_losing_work(sandbox, tmp_path):
    out = tmp_path / "gen.jsonl"
    crashing = ScriptedModel(proposals=REPLIES, fail_after=2)
    with pytest.raises(RuntimeError, match="scripted crash"):
        generate_to_file(crashing, sandbox, out, count=6, config=ROUND, seed=0, progress=False)
    first = read_problems(out)
    assert [p.entry_point for p in first] == ["add_pairs", "count_upper", "second_largest", "digits_product"]
    state = json.loads(state_path(out).read_text())
    assert state["units_done"] == 2 and state["pending"] == []

    # the resumed model continues where the crashed one stopped (its proposals 5..)
    resumed = ScriptedModel(proposals=REPLIES[4:])
    funnel = generate_to_file(resumed, sandbox, out, count=6, config=ROUND, seed=0, progress=False)
    final = read_problems(out)
    assert [p.entry_point for p in final] == [s.name for s in LIBRARY[:6]]
    assert len({p.uid for p in final}) == 6
    assert [c["seed"] for c in resumed.calls] == [2]  # only round 3 was asked for, with its own seed
    assert funnel.steps["proposed"] == 6 and funnel.steps["written"] == 6

    # a finished run does nothing when re-run, and a larger count extends it
    again = ScriptedModel(proposals=REPLIES[6:])
    generate_to_file(again, sandbox, out, count=6, config=ROUND, seed=0, progress=False)
    assert again.calls == [] and len(read_problems(out)) == 6
    generate_to_file(again, sandbox, out, count=8, config=ROUND, seed=0, progress=False)
    assert [p.entry_point for p in read_problems(out)] == [s.name for s in LIBRARY]
    assert [c["seed"] for c in again.calls] == [3]


def test_generate_stops_after_max_rounds_and_records_rejections(sandbox, tmp_path):
    out = tmp_path / "gen.jsonl"
    funnel = generate_to_file(ScriptedModel(proposals=["garbage"]), sandbox, out, count=3, config=ROUND,
                              max_rounds=2, progress=False)
    assert funnel.steps["proposed"] == 4 and funnel.reasons["parse:no_sections"] == 4
    assert not out.exists() or read_problems(out) == []


def test_pending_records_of_a_crash_between_state_and_output_are_flushed(sandbox, tmp_path):
    out = tmp_path / "gen.jsonl"
    problem = parse_proposal(LIBRARY[0].proposal())
    settings = {"command": "generate", "seed": 0, "num_candidates": 2}
    RunState(settings, units_done=1, pending=[problem.to_record()]).save(state_path(out))
    model = ScriptedModel(proposals=REPLIES)
    generate_to_file(model, sandbox, out, count=1, config=ROUND, seed=0, progress=False)
    assert [p.uid for p in read_problems(out)] == [problem.uid]
    assert model.calls == []


def test_resume_with_other_settings_is_refused(sandbox, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate_to_file(ScriptedModel(proposals=REPLIES), sandbox, out, count=1, config=ROUND, progress=False)
    with pytest.raises(StateMismatchError, match="other settings"):
        generate_to_file(ScriptedModel(proposals=REPLIES), sandbox, out, count=1, config=ROUND, seed=9,
                         progress=False)


def test_interrupted_calibrate_resumes_chunk_by_chunk(sandbox, tmp_path):
    problems = [parse_proposal(s.proposal()) for s in LIBRARY]
    src = tmp_path / "in.jsonl"
    write_problems(src, problems)
    out = tmp_path / "calibrated.jsonl"
    config = CalibrationConfig(samples=4, lo=0.0, hi=1.0)  # keep everything: count what is written
    crashing = ScriptedModel(fail_after=2)
    with pytest.raises(RuntimeError):
        calibrate_file(crashing, sandbox, src, out, config, batch_size=3, progress=False)
    assert len(read_problems(out)) == 6  # two chunks of three finished
    resumed = ScriptedModel()
    funnel = calibrate_file(resumed, sandbox, src, out, config, batch_size=3, progress=False)
    assert len(resumed.calls) == 1 and len(resumed.calls[0]["prompts"]) == 2  # only the last chunk
    final = read_problems(out)
    assert sorted(p.entry_point for p in final) == sorted(s.name for s in LIBRARY)
    assert all(p.samples == 4 and p.pass_rate is not None for p in final)
    assert funnel.steps == {"input": 8, "calibrated": 8}


def test_calibrate_writes_only_the_window_and_remembers_the_rest(sandbox, tmp_path):
    problems = [parse_proposal(s.proposal()) for s in LIBRARY[:3]]
    src = tmp_path / "in.jsonl"
    write_problems(src, problems)
    out = tmp_path / "calibrated.jsonl"
    model = ScriptedModel(pass_prob={"add_pairs": 0.0, "count_upper": 1.0, "second_largest": 0.5})
    funnel = calibrate_file(model, sandbox, src, out, CalibrationConfig(samples=8), progress=False)
    assert [p.entry_point for p in read_problems(out)] == ["second_largest"]
    assert funnel.reasons == {"calibrate:too_hard": 1, "calibrate:too_easy": 1}
    outcomes = json.loads(state_path(out).read_text())["outcomes"]
    assert outcomes[problems[1].uid] == {"pass_rate": 1.0, "outcome": "calibrate:too_easy"}
    again = ScriptedModel()
    calibrate_file(again, sandbox, src, out, CalibrationConfig(samples=8), progress=False)
    assert again.calls == []  # nothing left: rejected problems are not re-sampled either


def test_calibrate_drops_evaluation_set_look_alikes_before_sampling(sandbox, tmp_path):
    from curriculum_helpers import HUMANEVAL_RENAMED

    from laimark_pl.curriculum.dedup import Decontaminator

    src = tmp_path / "study.jsonl"
    write_problems(src, [parse_proposal(LIBRARY[0].proposal()), parse_proposal(HUMANEVAL_RENAMED.proposal())])
    out = tmp_path / "calibrated.jsonl"
    model = ScriptedModel(default_p=0.5)
    funnel = calibrate_file(model, sandbox, src, out, CalibrationConfig(samples=4, lo=0.0, hi=1.0),
                            progress=False, decontaminator=Decontaminator())
    assert [p.entry_point for p in read_problems(out)] == ["add_pairs"]
    assert funnel.reasons == {"contaminated:docstring": 1}
    assert len(model.calls) == 1 and len(model.calls[0]["prompts"]) == 1
