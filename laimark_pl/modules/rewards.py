"""Reward functions: the code-execution reward GRPO trains on, and a toy reward for tests.

A reward function maps (problem, completion) pairs to floats. It receives the module's
sandbox (``None`` when the module runs without one) and must score the whole rollout at once,
so code-execution rewards can judge every program in one parallel sandbox call.

Example:
    >>> from laimark_pl.sandbox import create
    >>> with create("process") as sandbox:  # doctest: +SKIP
    ...     CodeExecutionReward()([problem], ["def inc(x):\\n    return x + 1"], sandbox=sandbox)
    [1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from laimark_pl.problems import AnswerFormatError, Problem
from laimark_pl.prompts import extract_answer
from laimark_pl.sandbox.types import Program, Sandbox, Verdict


@runtime_checkable
class RewardFunction(Protocol):
    """Scores completions: one float per (problem, completion) pair, in order."""

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str], *,
                 sandbox: Sandbox | None = None) -> list[float]: ...


def answer_program(problem: Problem, completion: str) -> Program | None:
    """The sandbox program that judges ``completion`` (answer extracted per problem type), or None
    for a deduction/abduction answer that is not a plain literal (it never reaches the sandbox)."""
    try:
        return problem.check_program(extract_answer(problem, completion))
    except AnswerFormatError:
        return None


def judge_completions(problems: Sequence[Problem], completions: Sequence[str],
                      sandbox: Sandbox) -> list[Verdict | None]:
    """Sandbox verdicts for every completion, in ONE ``sandbox.check`` call.

    The answer is extracted per problem type (`laimark_pl.prompts.extract_answer`); a
    deduction/abduction answer that is not a plain literal gets ``None`` and never reaches
    the sandbox.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    programs: list[Program] = []
    slots: list[int] = []
    for index, (problem, completion) in enumerate(zip(problems, completions, strict=True)):
        program = answer_program(problem, completion)
        if program is not None:
            programs.append(program)
            slots.append(index)
    verdicts: list[Verdict | None] = [None] * len(completions)
    for index, verdict in zip(slots, sandbox.check(programs) if programs else [], strict=True):
        verdicts[index] = verdict
    return verdicts


class CodeExecutionReward:
    """1.0 when the extracted answer passes the problem's tests in the sandbox, else 0.0.

    The binary reward of the study. Unparseable deduction/abduction answers score 0.
    """

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str], *,
                 sandbox: Sandbox | None = None) -> list[float]:
        if sandbox is None:
            raise ValueError("CodeExecutionReward needs a sandbox (set sandbox.backend to 'process' or 'docker')")
        verdicts = judge_completions(problems, completions, sandbox)
        return [1.0 if v is not None and v.passed else 0.0 for v in verdicts]


class CharacterShareReward:
    """Toy verifiable reward: the share of a completion's non-space characters found in ``chars``.

    Needs no sandbox and is dense (any increase is rewarded), so even a random-weight model
    learns to raise it in a few GRPO steps; used to test that training actually learns.

    Args:
        chars: the characters that earn reward (default: decimal digits).
    """

    def __init__(self, chars: str = "0123456789"):
        if not chars:
            raise ValueError("CharacterShareReward.chars must not be empty")
        self.chars = chars

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str], *,
                 sandbox: Sandbox | None = None) -> list[float]:
        wanted = set(self.chars)
        scores = []
        for text in completions:
            visible = [c for c in text if not c.isspace()]
            scores.append(sum(c in wanted for c in visible) / len(visible) if visible else 0.0)
        return scores
