"""Stage 1: seeded request planning, one batched generation call, parse failures counted."""

from __future__ import annotations

import pytest
from curriculum_helpers import LIBRARY, ScriptedModel

from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.curriculum.propose import DEFAULT_TOPICS, ProposeConfig, plan_requests, propose


def test_default_topics_cover_the_study_list():
    assert len(DEFAULT_TOPICS) >= 20
    for topic in ("dynamic programming", "graphs", "bit manipulation", "recursion", "matrices"):
        assert topic in DEFAULT_TOPICS


def test_plans_are_seeded_and_mix_fresh_and_harder_requests():
    pool = [parse_proposal(s.proposal()) for s in LIBRARY]
    config = ProposeConfig(harder_share=0.5)
    a = plan_requests(200, pool, config, seed=1)
    assert a == plan_requests(200, pool, config, seed=1)
    assert a != plan_requests(200, pool, config, seed=2)
    variations = [r for r in a if r.source == "variation"]
    assert 70 < len(variations) < 130
    parents = {p.uid: p for p in pool}
    for r in variations:
        assert r.seed_id in parents and parents[r.seed_id].prompt.strip() in r.prompt and "HARDER" in r.prompt
    fresh = [r for r in a if r.source == "self-generated"]
    assert all(r.topic in DEFAULT_TOPICS and r.topic in r.prompt for r in fresh)
    assert {r.difficulty for r in fresh} == {"easy", "medium", "hard"}


def test_no_variations_without_a_pool_or_with_share_zero():
    assert all(r.source == "self-generated" for r in plan_requests(20, [], ProposeConfig(), seed=0))
    pool = [parse_proposal(LIBRARY[0].proposal())]
    assert all(r.source == "self-generated" for r in plan_requests(20, pool, ProposeConfig(harder_share=0), 0))
    config = ProposeConfig(topics=["only this"], harder_share=0.0)
    assert {r.topic for r in plan_requests(5, [], config, 0)} == {"only this"}


def test_propose_is_one_batched_call_and_counts_parse_failures():
    replies = [LIBRARY[0].proposal(), "Sorry, no.", LIBRARY[1].proposal(),
               LIBRARY[2].proposal().split("SOLUTION:")[0]]
    model = ScriptedModel(proposals=replies)
    out = propose(model, 4, config=ProposeConfig(), seed=7)
    assert [p.entry_point for p in out.problems] == ["add_pairs", "count_upper"]
    assert out.rejected == {"parse:no_sections": 1, "parse:no_solution": 1}
    assert len(model.calls) == 1
    call = model.calls[0]
    assert (len(call["prompts"]), call["num_samples"], call["temperature"], call["seed"]) == (4, 1, 0.9, 7)
    assert all("FUNCTION" in p and "TESTS" in p and "SOLUTION" in p for p in call["prompts"])
    assert out.problems[0].topic in DEFAULT_TOPICS


def test_config_validation():
    with pytest.raises(ValueError, match="harder_share"):
        ProposeConfig(harder_share=1.5)
    with pytest.raises(ValueError, match="topics"):
        ProposeConfig(topics=[])
