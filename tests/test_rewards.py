"""Reward functions: code execution in the real process sandbox, and the toy reward."""

from __future__ import annotations

import pytest

from laimark_pl.modules.rewards import (
    CharacterShareReward,
    CodeExecutionReward,
    RewardFunction,
    judge_completions,
)
from laimark_pl.problems import Problem
from laimark_pl.sandbox import create

INC = Problem(prompt='def inc(x):\n    """Return x + 1."""\n', tests="assert inc(1) == 2\nassert inc(-1) == 0",
              entry_point="inc")
DEDUCTION = Problem(prompt="", tests="", entry_point="double", problem_type="deduction",
                    code="def double(x):\n    return 2 * x", func_name="double", input="21", expected="42")
ABDUCTION = Problem(prompt="", tests="", entry_point="double", problem_type="abduction",
                    code="def double(x):\n    return 2 * x", func_name="double", expected="10")


class CountingSandbox:
    """The real process sandbox, counting how many batches it was asked to check."""

    def __init__(self, inner):
        self.inner, self.calls, self.programs = inner, 0, 0

    def check(self, programs):
        self.calls += 1
        self.programs += len(programs)
        return self.inner.check(programs)

    def close(self):
        self.inner.close()


@pytest.fixture(scope="module")
def sandbox():
    with create("process", workers=2, timeout_s=5.0, memory_mb=512) as inner:
        yield inner


def test_code_execution_reward_in_one_sandbox_call(sandbox):
    counting = CountingSandbox(sandbox)
    problems = [INC, INC, INC, INC, DEDUCTION, DEDUCTION, ABDUCTION, ABDUCTION]
    completions = [
        "```python\ndef inc(x):\n    return x + 1\n```",  # full function, fenced, correct
        "    return x + 1",  # body only: its indentation must survive
        "def inc(x):\n    return x + 2",  # wrong
        "def inc(x):\n    raise SystemExit(0)",  # cannot forge a pass
        "It doubles: <answer>42</answer>",
        "<answer>double(21)</answer>",  # not a literal: never reaches the sandbox
        "<answer>5</answer>",
        "<answer>4</answer>",
    ]
    rewards = CodeExecutionReward()(problems, completions, sandbox=counting)
    assert rewards == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert counting.calls == 1 and counting.programs == 7


def test_judge_completions_marks_unparseable_answers(sandbox):
    verdicts = judge_completions([DEDUCTION, INC], ["<answer>x +</answer>", "    return x + 1"], sandbox)
    assert verdicts[0] is None
    assert verdicts[1] is not None and verdicts[1].passed


def test_code_execution_reward_needs_a_sandbox():
    with pytest.raises(ValueError, match="needs a sandbox"):
        CodeExecutionReward()([INC], ["    return x + 1"])


def test_mismatched_lengths_are_an_error(sandbox):
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        judge_completions([INC, INC], ["x"], sandbox)


def test_character_share_reward():
    reward = CharacterShareReward("ab")
    assert reward([INC] * 4, ["aabb", "a b c d", "", "   "]) == [1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="must not be empty"):
        CharacterShareReward("")


def test_rewards_satisfy_the_protocol():
    assert isinstance(CodeExecutionReward(), RewardFunction)
    assert isinstance(CharacterShareReward(), RewardFunction)
