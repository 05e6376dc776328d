"""Stage 4: measure each problem's pass rate under the CURRENT policy and keep the learnable ones.

K completions per problem (default 8, temperature 0.7) come from ONE batched generation call;
all answers are judged in ONE sandbox call. A problem is learnable when its pass rate lies in
the window [lo, hi] (default [0.2, 0.8]): at 0 or 1 every completion of a GRPO group gets the
same reward, so its advantage, and the gradient, is zero.

Example:
    >>> in_window(0.5, 0.2, 0.8), in_window(1.0, 0.2, 0.8)
    (True, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from laimark_pl.curriculum.funnel import StageResult
from laimark_pl.generation import TextGenerator
from laimark_pl.modules.rewards import judge_completions
from laimark_pl.problems import Problem
from laimark_pl.prompts import AnswerMode, user_prompt
from laimark_pl.sandbox.types import Sandbox


@dataclass
class CalibrationConfig:
    """How pass rates are measured and which count as learnable.

    Args:
        samples: completions per problem (K).
        temperature: sampling temperature (the study used 0.7).
        top_p: nucleus sampling.
        max_new_tokens: completion length limit.
        lo: lowest pass rate kept.
        hi: highest pass rate kept.
        answer_mode: how induction problems are asked ("full" function or "body").
    """

    samples: int = 8
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 1024
    lo: float = 0.2
    hi: float = 0.8
    answer_mode: AnswerMode = "full"

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"calibration samples must be >= 1, got {self.samples}")
        if not 0.0 <= self.lo <= self.hi <= 1.0:
            raise ValueError(f"calibration window must satisfy 0 <= lo <= hi <= 1, got [{self.lo}, {self.hi}]")

    @property
    def zone(self) -> tuple[float, float]:
        return (self.lo, self.hi)


@dataclass
class Calibration:
    """Every problem with its measured pass rate, and the split by the window."""

    problems: list[Problem] = field(default_factory=list)  # all, with pass_rate/samples set
    result: StageResult = field(default_factory=StageResult)  # kept: in window; rejected: why not

    @property
    def pass_rates(self) -> list[float]:
        return [p.pass_rate for p in self.problems if p.pass_rate is not None]


def in_window(pass_rate: float, lo: float, hi: float) -> bool:
    """Whether ``pass_rate`` lies in [lo, hi]."""
    return lo <= pass_rate <= hi


def window_reason(pass_rate: float, config: CalibrationConfig) -> str | None:
    """None inside the window, else ``calibrate:too_hard`` / ``calibrate:too_easy``."""
    if pass_rate < config.lo:
        return "calibrate:too_hard"
    if pass_rate > config.hi:
        return "calibrate:too_easy"
    return None


def measure_pass_rates(
    problems: Sequence[Problem],
    generator: TextGenerator,
    sandbox: Sandbox,
    config: CalibrationConfig,
    system_prompt: str | None = None,
    seed: int | None = None,
) -> list[float]:
    """Pass rate of each problem over ``config.samples`` sampled answers (batched, see module doc).

    An answer that cannot be judged (a deduction answer that is not a literal) counts as a fail.
    """
    if not problems:
        return []
    completions = generator.generate_text(
        [user_prompt(p, config.answer_mode) for p in problems], num_samples=config.samples,
        temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        system_prompt=system_prompt, seed=seed, desc="calibrate")
    owners = [i for i, samples in enumerate(completions) for _ in samples]
    verdicts = judge_completions([problems[i] for i in owners], [t for samples in completions for t in samples],
                                 sandbox)
    passed = [0] * len(problems)
    for owner, verdict in zip(owners, verdicts, strict=True):
        passed[owner] += int(verdict is not None and verdict.passed)
    return [passed[i] / max(len(completions[i]), 1) for i in range(len(problems))]


def calibrate(
    problems: Sequence[Problem],
    generator: TextGenerator,
    sandbox: Sandbox,
    config: CalibrationConfig | None = None,
    system_prompt: str | None = None,
    seed: int | None = None,
) -> Calibration:
    """Record ``pass_rate``, ``samples`` and ``learnability_zone`` on every problem; keep those in
    the window."""
    config = config or CalibrationConfig()
    rates = measure_pass_rates(problems, generator, sandbox, config, system_prompt, seed)
    out = Calibration()
    for problem, rate in zip(problems, rates, strict=True):
        calibrated = problem.with_calibration(rate, config.samples, config.zone)
        out.problems.append(calibrated)
        why = window_reason(rate, config)
        if why:
            out.result.rejected[calibrated.uid] = why
        else:
            out.result.kept.append(calibrated)
    return out


def pass_rate_histogram(rates: Sequence[float], bins: int = 5) -> list[int]:
    """Counts of ``rates`` in ``bins`` equal-width bins over [0, 1] (1.0 falls in the last)."""
    counts = [0] * bins
    for r in rates:
        counts[min(int(r * bins), bins - 1)] += 1
    return counts
