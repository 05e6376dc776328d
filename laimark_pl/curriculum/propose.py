"""Stage 1: the policy proposes candidate problems (FUNCTION / TESTS / SOLUTION).

Each request names a topic and a difficulty; a configurable share of requests asks instead for a
HARDER variant of an already accepted problem. Topic, difficulty and parent choices come from a
seeded `random.Random`, and all requests go to the generator in one batched call.

Example:
    >>> plan = plan_requests(3, pool=[], config=ProposeConfig(), seed=0)
    >>> [r.source for r in plan]
    ['self-generated', 'self-generated', 'self-generated']
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from laimark_pl.curriculum.parsing import MIN_ASSERTS, ParseError, parse_proposal
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import Problem

DEFAULT_TOPICS: tuple[str, ...] = (
    "string manipulation", "list processing", "arithmetic and math", "dictionaries",
    "sorting and searching", "recursion", "input validation", "text processing", "number theory",
    "bit manipulation", "matrices", "stacks and queues", "sets", "combinatorics",
    "dynamic programming", "greedy algorithms", "graphs", "intervals", "parsing simple formats",
    "two pointers and sliding windows",
)
DEFAULT_DIFFICULTIES: tuple[str, ...] = ("easy", "medium", "hard")

PROPOSER_SYSTEM_PROMPT = (
    "You are an experienced Python teacher who writes precise, self-contained programming "
    "exercises with correct reference solutions and thorough tests."
)

_FORMAT = """Reply with exactly three sections, in this order:

FUNCTION:
```python
def function_name(arguments):
    \"\"\"What the function returns, in one paragraph.

    >>> function_name(example_arguments)
    expected_result
    \"\"\"
```

TESTS:
```python
assert function_name(...) == ...
```

SOLUTION:
```python
def function_name(arguments):
    # a correct reference implementation
```

Rules: FUNCTION is only the signature and the docstring, no body. TESTS has at least {min_asserts} \
`assert` lines that call the function with concrete arguments and compare with the exact expected value; \
cover ordinary inputs and edge cases, and make sure every expected value is right. SOLUTION implements \
the same function. Give the function a descriptive name. Use only the Python standard library. The function \
must be deterministic: no randomness, no current date or time, no input/output, files or network."""


@dataclass
class ProposeConfig:
    """How candidates are requested.

    Args:
        topics: topics drawn uniformly for fresh problems.
        difficulties: difficulty labels drawn uniformly.
        harder_share: share of requests asking for a harder variant of an accepted problem
            (only when the pool is not empty).
        temperature: sampling temperature (the study used 0.9).
        top_p: nucleus sampling.
        max_new_tokens: reply length limit.
        min_asserts: asserts a parsed candidate must have.
        system_prompt: the proposer's system message.
    """

    topics: Sequence[str] = DEFAULT_TOPICS
    difficulties: Sequence[str] = DEFAULT_DIFFICULTIES
    harder_share: float = 0.5
    temperature: float = 0.9
    top_p: float = 0.95
    max_new_tokens: int = 1024
    min_asserts: int = MIN_ASSERTS
    system_prompt: str | None = PROPOSER_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("ProposeConfig.topics must not be empty")
        if not 0.0 <= self.harder_share <= 1.0:
            raise ValueError(f"ProposeConfig.harder_share must be in [0, 1], got {self.harder_share}")


@dataclass(frozen=True)
class ProposalRequest:
    """One request to the proposer and the metadata its parsed problem will carry."""

    prompt: str
    topic: str | None
    difficulty: str | None
    source: str  # "self-generated" or "variation"
    seed_id: str | None = None  # uid of the parent problem of a variation


@dataclass
class Proposals:
    """Parsed candidates of one proposal batch and why the others were dropped."""

    problems: list[Problem] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    raw: list[str] = field(default_factory=list)


def fresh_prompt(topic: str, difficulty: str, min_asserts: int = MIN_ASSERTS) -> str:
    """The request for a new problem on ``topic``."""
    return (f"Write a new {difficulty} Python programming exercise about {topic}.\n\n"
            + _FORMAT.format(min_asserts=min_asserts))


def harder_prompt(parent: Problem, min_asserts: int = MIN_ASSERTS) -> str:
    """The request for a harder variant of ``parent`` (a new function name is required)."""
    return (
        "Here is an existing Python exercise:\n\n"
        f"```python\n{parent.prompt.rstrip()}\n```\n\n"
        "Write a HARDER variant of it: a new function with a different name that needs more "
        "reasoning (extra constraints, more cases, or a more general input).\n\n"
        + _FORMAT.format(min_asserts=min_asserts)
    )


def plan_requests(count: int, pool: Sequence[Problem], config: ProposeConfig, seed: int | None) -> list[
        ProposalRequest]:
    """Choose topic/difficulty or parent for ``count`` requests (deterministic for a seed)."""
    rng = random.Random(seed)
    parents = [p for p in pool if p.problem_type == "induction"]
    requests = []
    for _ in range(count):
        difficulty = rng.choice(list(config.difficulties))
        if parents and rng.random() < config.harder_share:
            parent = rng.choice(parents)
            requests.append(ProposalRequest(harder_prompt(parent, config.min_asserts), parent.topic, "hard",
                                            "variation", parent.uid))
        else:
            topic = rng.choice(list(config.topics))
            requests.append(ProposalRequest(fresh_prompt(topic, difficulty, config.min_asserts), topic,
                                            difficulty, "self-generated"))
    return requests


def parse_replies(requests: Sequence[ProposalRequest], replies: Sequence[str], min_asserts: int = MIN_ASSERTS
                  ) -> Proposals:
    """Parse each reply; failures are counted by reason (``parse:<reason>``)."""
    out = Proposals(raw=list(replies))
    for request, reply in zip(requests, replies, strict=True):
        try:
            out.problems.append(parse_proposal(reply, source=request.source, topic=request.topic,
                                               difficulty=request.difficulty, seed_id=request.seed_id,
                                               min_asserts=min_asserts))
        except ParseError as exc:
            out.rejected[f"parse:{exc.reason}"] += 1
    return out


def propose(
    generator: TextGenerator,
    count: int,
    pool: Sequence[Problem] = (),
    config: ProposeConfig | None = None,
    seed: int | None = None,
) -> Proposals:
    """Ask ``generator`` for ``count`` candidates in one batched call and parse them."""
    config = config or ProposeConfig()
    requests = plan_requests(count, pool, config, seed)
    if not requests:
        return Proposals()
    replies = generator.generate_text(
        [r.prompt for r in requests], num_samples=1, temperature=config.temperature, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, system_prompt=config.system_prompt, seed=seed,
        desc="propose")
    return parse_replies(requests, [samples[0] if samples else "" for samples in replies], config.min_asserts)
