"""One curriculum round: propose -> verify -> dedup + decontaminate -> derive task types ->
calibrate -> cap the type mix, with the funnel counted at every step.

`generate_candidates` runs stages 1-3 (what ``laimark generate`` writes); `run_round` runs all
five (what the ``CurriculumRefresh`` callback merges into the pool).

Example (a round needs a generator and a sandbox):
    >>> RoundConfig().num_candidates
    32
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from laimark_pl.curriculum.calibrate import Calibration, CalibrationConfig, calibrate
from laimark_pl.curriculum.dedup import Decontaminator, Deduplicator
from laimark_pl.curriculum.funnel import Funnel
from laimark_pl.curriculum.propose import ProposeConfig, propose
from laimark_pl.curriculum.task_types import cap_type_mix, derive_tasks
from laimark_pl.curriculum.verify import verify
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import Problem
from laimark_pl.sandbox.types import Sandbox


@dataclass
class RoundConfig:
    """Everything one curriculum round needs besides the model and the sandbox.

    Args:
        num_candidates: proposals requested per round.
        propose: stage-1 settings (topics, difficulty, harder share, temperature ...).
        calibration: stage-4 settings (K samples, temperature, window).
        dedup_threshold: docstring word-trigram Jaccard above which a candidate is a duplicate.
        decontaminate: reject candidates close to HumanEval.
        derive_types: add deduction/abduction tasks derived from verified problems.
        max_type_share: cap on any one problem type's share of the accepted problems.
        verify_runs: sandbox runs of each reference (all must pass).
    """

    num_candidates: int = 32
    propose: ProposeConfig = field(default_factory=ProposeConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    dedup_threshold: float = 0.6
    decontaminate: bool = True
    derive_types: bool = True
    max_type_share: float = 0.5
    verify_runs: int = 2


@dataclass
class Candidates:
    """Output of stages 1-3: new problems and the funnel so far (with per-uid rejections)."""

    problems: list[Problem]
    funnel: Funnel
    rejected: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    raw: list[str] = field(default_factory=list)  # the proposer's replies, for inspection


@dataclass
class RoundResult:
    """Output of a whole round."""

    accepted: list[Problem]
    calibration: Calibration
    funnel: Funnel
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    raw: list[str] = field(default_factory=list)  # the proposer's replies, for inspection


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


def generate_candidates(
    generator: TextGenerator,
    sandbox: Sandbox,
    pool: Sequence[Problem],
    config: RoundConfig,
    seed: int | None = None,
    decontaminator: Decontaminator | None = None,
    reserved: Sequence[Problem] = (),
) -> Candidates:
    """Stages 1-3: propose ``config.num_candidates``, verify, drop duplicates of ``pool`` (and of
    ``reserved`` problems, a held-out set say) and of each other, and drop evaluation-set
    look-alikes."""
    funnel, seconds = Funnel(), {}
    funnel.add("proposed", config.num_candidates)
    with _timed(seconds, "propose"):
        proposals = propose(generator, config.num_candidates, pool, config.propose, seed=seed)
    funnel.add("parsed", len(proposals.problems))
    funnel.reasons.update(proposals.rejected)
    with _timed(seconds, "verify"):
        verified = verify(proposals.problems, sandbox, runs=config.verify_runs)
    funnel.record("verified", verified)
    with _timed(seconds, "dedup"):
        unique = Deduplicator(list(pool) + list(reserved), threshold=config.dedup_threshold).filter(verified.kept)
        funnel.record("unique", unique)
        rejected = {**verified.rejected, **unique.rejected}
        kept = unique.kept
        if config.decontaminate:
            clean = (decontaminator or Decontaminator()).filter(kept)
            rejected.update(clean.rejected)
            kept = clean.kept
            funnel.record("decontaminated", clean)
    return Candidates(kept, funnel, rejected, seconds, proposals.raw)


def run_round(
    generator: TextGenerator,
    sandbox: Sandbox,
    pool: Sequence[Problem],
    config: RoundConfig,
    system_prompt: str | None = None,
    seed: int | None = None,
    decontaminator: Decontaminator | None = None,
    recalibrate: Sequence[Problem] = (),
    reserved: Sequence[Problem] = (),
) -> tuple[RoundResult, Calibration]:
    """Stages 1-5. ``recalibrate`` problems (the current pool, say) are calibrated in the same
    batched call; their calibration comes back separately, as the second value.

    ``system_prompt`` is the policy's training system prompt, used when calibrating (the pass rate
    must be measured the way the policy is trained and evaluated).
    """
    candidates = generate_candidates(generator, sandbox, pool, config, seed, decontaminator, reserved)
    funnel = candidates.funnel
    new = list(candidates.problems)
    if config.derive_types:
        rng = random.Random(seed)
        derived = [t for p in candidates.problems for t in derive_tasks(p, rng=rng)]
        funnel.add("derived", len(derived))
        new += derived
    seconds = dict(candidates.seconds)
    with _timed(seconds, "calibrate"):
        everything = calibrate(list(new) + list(recalibrate), generator, sandbox, config.calibration,
                               system_prompt=system_prompt, seed=seed)
    n = len(new)
    fresh, old = _split(everything, n)
    funnel.add("calibrated", len(fresh.result.kept))
    funnel.reasons.update(fresh.result.counts)
    accepted = cap_type_mix(fresh.result.kept, config.max_type_share) if fresh.result.kept else []
    if len(accepted) < len(fresh.result.kept):
        funnel.reject("type_cap", len(fresh.result.kept) - len(accepted))
    funnel.add("accepted", len(accepted))
    return RoundResult(accepted, fresh, funnel, seconds, candidates.raw), old


def _split(calibration: Calibration, n: int) -> tuple[Calibration, Calibration]:
    """The first ``n`` problems' calibration and the rest's."""
    parts = (Calibration(), Calibration())
    for i, problem in enumerate(calibration.problems):
        part = parts[0] if i < n else parts[1]
        part.problems.append(problem)
        if problem.uid in calibration.result.rejected:
            part.result.rejected[problem.uid] = calibration.result.rejected[problem.uid]
        else:
            part.result.kept.append(problem)
    return parts
