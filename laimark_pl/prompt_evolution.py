"""Evolve the system prompt with the weights frozen (the study's step 1, and its re-optimisation).

A population of system prompts, seeded with `OPERATIONAL_SYSTEM_PROMPT`; the policy itself
writes the offspring (mutation: improve one prompt; crossover: merge two) from meta-prompts;
fitness is the pass rate on held-out SELF-GENERATED problems; elitist selection keeps the best
``elite`` prompts each generation. Two guards against reward hacking:

* held-out problems from HumanEval (by ``source``/``seed_id`` or by decontamination) are refused:
  fitness must never be measured on the evaluation set;
* an offspring that embeds a held-out problem's function name, a line of its solution or one of
  its asserts is discarded (it would score by knowing answers, not by being a better prompt).

Every generation costs one batched generation call for the offspring, one per evaluated prompt
(each has its own system message) and one sandbox call.

Example:
    >>> extract_prompt("Sure! <prompt>Be careful.</prompt>")
    'Be careful.'
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from laimark_pl.generation import TextGenerator
from laimark_pl.modules.rewards import judge_completions
from laimark_pl.problems import Problem
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT, AnswerMode, strip_thinking, user_prompt
from laimark_pl.sandbox.types import Sandbox

log = logging.getLogger(__name__)

MUTATION_META_PROMPT = """You are improving the system prompt of a Python coding assistant. The assistant is \
scored on how many unseen programming problems it solves correctly.

Current system prompt:
<prompt>
{prompt}
</prompt>

Write an improved system prompt. Keep what helps; add concrete, general advice for writing correct Python \
functions (reading the specification and examples, edge cases, types of inputs and outputs). Do not mention any \
specific problem. Reply with only the new system prompt inside <prompt></prompt> tags."""

CROSSOVER_META_PROMPT = """You are improving the system prompt of a Python coding assistant. The assistant is \
scored on how many unseen programming problems it solves correctly. Here are two good system prompts.

Prompt A:
<prompt>
{a}
</prompt>

Prompt B:
<prompt>
{b}
</prompt>

Write one system prompt that combines the most useful advice of both, without repeating yourself. Do not \
mention any specific problem. Reply with only the new system prompt inside <prompt></prompt> tags."""

_PROMPT_TAG = re.compile(r"<prompt>(.*?)(?:</prompt>|$)", re.DOTALL | re.IGNORECASE)


@dataclass
class EvolutionConfig:
    """Search settings (the study published none; these are small, explicit defaults).

    Args:
        population: prompts kept per generation.
        generations: rounds of offspring + selection.
        elite: best prompts carried over unchanged each generation.
        crossover_share: share of offspring made by crossover (the rest by mutation).
        eval_samples: answers per held-out problem when scoring a prompt.
        eval_temperature: sampling temperature when scoring (0 = greedy pass@1, as in the study).
        eval_max_new_tokens: answer length limit when scoring.
        mutation_temperature: sampling temperature of the meta-prompts.
        mutation_max_new_tokens: length limit of a proposed prompt.
        max_prompt_chars: longer offspring are discarded.
        answer_mode: how held-out induction problems are asked ("full" or "body").
        seed: seeds parent selection and sampling.
    """

    population: int = 6
    generations: int = 3
    elite: int = 2
    crossover_share: float = 0.3
    eval_samples: int = 1
    eval_temperature: float = 0.0
    eval_max_new_tokens: int = 1024
    mutation_temperature: float = 0.9
    mutation_max_new_tokens: int = 400
    max_prompt_chars: int = 2000
    answer_mode: AnswerMode = "full"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.population < 2 or not 1 <= self.elite < self.population:
            raise ValueError(f"need population >= 2 and 1 <= elite < population, got {self.population}/{self.elite}")
        if self.generations < 0 or self.eval_samples < 1:
            raise ValueError("generations must be >= 0 and eval_samples >= 1")


@dataclass(frozen=True)
class Candidate:
    """A system prompt with its fitness and where it came from."""

    prompt: str
    fitness: float
    origin: str  # "seed", "mutation" or "crossover"
    generation: int


@dataclass
class EvolutionResult:
    """The best prompt, the starting prompt's score, and per-generation statistics."""

    best: Candidate
    baseline: Candidate
    population: list[Candidate]
    history: list[dict] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)


class HeldoutError(ValueError):
    """The held-out set is not fit to score prompts on (empty, or from the evaluation set)."""


def check_heldout(problems: Sequence[Problem], decontaminate: bool = True) -> None:
    """Refuse HumanEval-sourced held-out problems (by provenance fields or by content)."""
    if not problems:
        raise HeldoutError("the held-out set is empty")
    bad = [p.entry_point for p in problems
           if "humaneval" in f"{p.source} {p.seed_id or ''} {p.extra.get('task_id', '')}".lower()]
    if decontaminate and not bad:
        from laimark_pl.curriculum.dedup import Decontaminator

        checker = Decontaminator()
        bad = [f"{p.entry_point} (like {hit[1]})" for p in problems if (hit := checker.match(p))]
    if bad:
        raise HeldoutError(f"held-out problems must be self-generated, not from HumanEval: {', '.join(bad[:10])}")


def extract_prompt(reply: str) -> str:
    """The ``<prompt>`` content of a meta-prompt reply (else the reply without thinking)."""
    text = strip_thinking(reply)
    tags = _PROMPT_TAG.findall(text)
    return (tags[-1] if tags else text).strip()


def leak_reason(prompt: str, heldout: Sequence[Problem]) -> str | None:
    """Why ``prompt`` embeds held-out knowledge, or None: a function name (of 4+ characters; ``f``
    is an ordinary letter), a solution line of 20+ characters, or an assert's text."""
    flat = " ".join(prompt.split())
    for p in heldout:
        if len(p.entry_point) >= 4 and re.search(rf"\b{re.escape(p.entry_point)}\b", prompt):
            return "leak:entry_point"
        for line in (p.solution or p.code or "").splitlines():
            line = " ".join(line.split())
            if len(line) >= 20 and not line.startswith(("def ", '"""', "'''")) and line in flat:
                return "leak:solution"
        for line in p.tests.splitlines():
            body = " ".join(line.split()).removeprefix("assert ").strip()
            if len(body) >= 12 and body in flat:
                return "leak:tests"
    return None


def score_prompts(
    prompts: Sequence[str],
    generator: TextGenerator,
    sandbox: Sandbox,
    heldout: Sequence[Problem],
    config: EvolutionConfig,
    seed: int | None = None,
    progress: bool = False,
) -> list[float]:
    """Pass rate of each system prompt on ``heldout`` (one sandbox call for all of them)."""
    questions = [user_prompt(p, config.answer_mode) for p in heldout]
    owners: list[int] = []
    problems: list[Problem] = []
    answers: list[str] = []
    for i, prompt in enumerate(tqdm(prompts, desc="score prompts", disable=not progress)):
        replies = generator.generate_text(
            questions, num_samples=config.eval_samples, temperature=config.eval_temperature,
            max_new_tokens=config.eval_max_new_tokens, system_prompt=prompt, seed=seed)
        for problem, samples in zip(heldout, replies, strict=True):
            owners += [i] * len(samples)
            problems += [problem] * len(samples)
            answers += samples
    passed = [0] * len(prompts)
    for owner, verdict in zip(owners, judge_completions(problems, answers, sandbox), strict=True):
        passed[owner] += int(verdict is not None and verdict.passed)
    total = len(heldout) * config.eval_samples
    return [n / total for n in passed]


def evolve_prompt(
    generator: TextGenerator,
    sandbox: Sandbox,
    heldout: Sequence[Problem],
    config: EvolutionConfig | None = None,
    initial: Sequence[str] = (OPERATIONAL_SYSTEM_PROMPT,),
    progress: bool = True,
) -> EvolutionResult:
    """Run the search; the best prompt is ``result.best.prompt`` (the seed prompt when nothing
    beats it)."""
    config = config or EvolutionConfig()
    check_heldout(heldout)
    rng = random.Random(config.seed)
    seeds = list(dict.fromkeys(p.strip() for p in initial if p.strip()))
    if not seeds:
        raise ValueError("evolve_prompt needs at least one initial prompt")
    fitness = score_prompts(seeds, generator, sandbox, heldout, config, seed=config.seed)
    population = [Candidate(p, f, "seed", 0) for p, f in zip(seeds, fitness, strict=True)]
    baseline = population[0]
    seen = set(seeds)
    result = EvolutionResult(best=baseline, baseline=baseline, population=population)
    result.history.append(_stats(0, population))
    for gen in tqdm(range(1, config.generations + 1), desc="evolve prompt", disable=not progress):
        requests, origins = _offspring_requests(population, config, rng)
        replies = generator.generate_text(requests, num_samples=1, temperature=config.mutation_temperature,
                                          max_new_tokens=config.mutation_max_new_tokens,
                                          seed=config.seed * 1000 + gen, desc="mutate prompts")
        children, child_origins = [], []
        for reply, origin in zip(replies, origins, strict=True):
            prompt = extract_prompt(reply[0] if reply else "")
            why = _reject_reason(prompt, seen, heldout, config)
            if why:
                result.rejected[why] += 1
                continue
            seen.add(prompt)
            children.append(prompt)
            child_origins.append(origin)
        scores = score_prompts(children, generator, sandbox, heldout, config, seed=config.seed) if children else []
        offspring = [Candidate(p, f, o, gen) for p, f, o in zip(children, scores, child_origins, strict=True)]
        population = _select(population, offspring, config)
        result.history.append(_stats(gen, population, len(offspring)))
    result.population = population
    result.best = population[0]
    log.info("prompt evolution: best fitness %.3f (seed prompt %.3f)", result.best.fitness, baseline.fitness)
    return result


def _offspring_requests(population: Sequence[Candidate], config: EvolutionConfig, rng: random.Random
                        ) -> tuple[list[str], list[str]]:
    def tournament() -> Candidate:
        a, b = rng.choice(population), rng.choice(population)
        return a if a.fitness >= b.fitness else b

    requests, origins = [], []
    for _ in range(config.population - config.elite):
        if len(population) >= 2 and rng.random() < config.crossover_share:
            a = tournament()
            b = rng.choice([c for c in population if c is not a])
            requests.append(CROSSOVER_META_PROMPT.format(a=a.prompt, b=b.prompt))
            origins.append("crossover")
        else:
            requests.append(MUTATION_META_PROMPT.format(prompt=tournament().prompt))
            origins.append("mutation")
    return requests, origins


def _reject_reason(prompt: str, seen: set[str], heldout: Sequence[Problem], config: EvolutionConfig) -> str | None:
    if not prompt:
        return "empty"
    if len(prompt) > config.max_prompt_chars:
        return "too_long"
    if prompt in seen:
        return "duplicate"
    return leak_reason(prompt, heldout)


def _select(population: Sequence[Candidate], offspring: Sequence[Candidate], config: EvolutionConfig
            ) -> list[Candidate]:
    """Elitism: the ``elite`` best survive; the rest of the places go to the best of everyone else."""
    ranked = sorted(population, key=lambda c: -c.fitness)  # stable: older prompts win ties
    elite = ranked[: config.elite]
    rest = sorted(list(ranked[config.elite:]) + list(offspring), key=lambda c: (-c.fitness, -c.generation))
    return sorted(elite + rest[: config.population - len(elite)], key=lambda c: -c.fitness)


def _stats(generation: int, population: Sequence[Candidate], offspring: int = 0) -> dict:
    values = [c.fitness for c in population]
    return {"generation": generation, "best": max(values), "mean": sum(values) / len(values),
            "offspring": offspring, "size": len(population)}
