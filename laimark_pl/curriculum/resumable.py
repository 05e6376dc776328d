"""File-producing curriculum runs that survive interruption: ``generate`` and ``calibrate``.

Every finished unit of work (a proposal round, a chunk of calibrated problems) is recorded in a
sidecar state file ``<out>.state.json`` *before* its problems are appended to ``<out>`` (a
write-ahead log: the state holds the pending records until they are on disk). Re-running the
same command skips finished rounds/problems and re-appends nothing twice; an interruption loses
at most the unit in progress.

Example:
    >>> state_path("runs/new.jsonl").name
    'new.jsonl.state.json'
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from laimark_pl.curriculum.calibrate import CalibrationConfig, calibrate
from laimark_pl.curriculum.dedup import Decontaminator
from laimark_pl.curriculum.funnel import Funnel
from laimark_pl.curriculum.pipeline import RoundConfig, generate_candidates
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import Problem, append_problem, problem_from_record, read_problems
from laimark_pl.sandbox.types import Sandbox


class StateMismatchError(ValueError):
    """The state file beside ``--out`` was written by a run with different settings."""


def state_path(out: str | os.PathLike) -> Path:
    """The sidecar state file of output ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".state.json")


@dataclass
class RunState:
    """What a resumable run has finished.

    ``settings`` identify the run (a resume with other settings is refused); ``units_done``
    counts finished rounds/chunks; ``outcomes`` maps each processed problem uid to its outcome;
    ``pending`` holds records committed to the state but maybe not yet appended to the output.
    """

    settings: dict[str, Any]
    units_done: int = 0
    funnel: Funnel = field(default_factory=Funnel)
    outcomes: dict[str, Any] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load_or_new(cls, path: Path, settings: dict[str, Any]) -> RunState:
        if not path.exists():
            return cls(settings=settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise StateMismatchError(f"{path}: unreadable state file ({exc}); delete it to start over") from exc
        if data.get("settings") != settings:
            raise StateMismatchError(
                f"{path} was written by a run with other settings ({data.get('settings')}); "
                f"use the same settings to resume, or delete it (and the output) to start over")
        return cls(settings, int(data.get("units_done", 0)), Funnel.from_dict(data.get("funnel", {})),
                   dict(data.get("outcomes", {})), list(data.get("pending", [])))

    def save(self, path: Path) -> None:
        """Write atomically (a crash leaves the previous state intact)."""
        data = {"settings": self.settings, "units_done": self.units_done, "funnel": self.funnel.to_dict(),
                "outcomes": self.outcomes, "pending": self.pending}
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def _commit(state: RunState, path: Path, out: Path, problems: Sequence[Problem], written: set[str]) -> int:
    """Record ``problems`` as pending, then append the ones not yet in ``out``; returns how many."""
    state.pending = [p.to_record() for p in problems]
    state.save(path)
    return _flush_pending(state, path, out, written)


def _flush_pending(state: RunState, path: Path, out: Path, written: set[str]) -> int:
    n = 0
    for record in state.pending:
        problem = problem_from_record(record)
        if problem.uid not in written:
            append_problem(out, problem)
            written.add(problem.uid)
            n += 1
    if state.pending:
        state.pending = []
        state.save(path)
    return n


def _existing(out: Path) -> list[Problem]:
    return read_problems(out) if out.exists() and out.stat().st_size else []


def generate_to_file(
    generator: TextGenerator,
    sandbox: Sandbox,
    out: str | os.PathLike,
    count: int,
    config: RoundConfig | None = None,
    seed: int = 0,
    pool: Sequence[Problem] = (),
    max_rounds: int | None = None,
    progress: bool = True,
    decontaminator: Decontaminator | None = None,
) -> Funnel:
    """Stages 1-3 in rounds of ``config.num_candidates`` until ``out`` holds ``count`` problems
    (or ``max_rounds`` rounds ran, default ``10 * count / num_candidates`` + 1). Resumable.

    ``pool`` (an existing curriculum) and the problems already in ``out`` count for
    deduplication and as parents of harder variants. Round ``r`` is proposed with seed
    ``seed + r``, so a resumed run asks what the uninterrupted one would have asked. Re-running
    with a larger ``count`` extends a finished file.
    """
    config = config or RoundConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spath = state_path(out)
    settings = {"command": "generate", "seed": seed, "num_candidates": config.num_candidates}
    state = RunState.load_or_new(spath, settings)
    done = _existing(out)
    written = {p.uid for p in done}
    _flush_pending(state, spath, out, written)
    done = _existing(out)
    if max_rounds is None:
        max_rounds = 10 * count // max(config.num_candidates, 1) + 1
    decontaminator = decontaminator or (Decontaminator() if config.decontaminate else None)
    bar = tqdm(total=count, initial=min(len(done), count), desc="generate", unit="problem", disable=not progress)
    try:
        while len(done) < count and state.units_done < max_rounds:
            candidates = generate_candidates(generator, sandbox, list(pool) + done, config,
                                             seed=seed + state.units_done, decontaminator=decontaminator)
            fresh = [p for p in candidates.problems if p.uid not in written][: count - len(done)]
            state.units_done += 1
            state.funnel.merge(candidates.funnel)
            state.funnel.add("written", len(fresh))
            state.outcomes.update(candidates.rejected)
            state.outcomes.update({p.uid: "written" for p in fresh})
            bar.update(_commit(state, spath, out, fresh, written))
            done += fresh
            bar.set_postfix(rounds=state.units_done)
    finally:
        bar.close()
    return state.funnel


def calibrate_file(
    generator: TextGenerator,
    sandbox: Sandbox,
    problems_path: str | os.PathLike,
    out: str | os.PathLike,
    config: CalibrationConfig | None = None,
    batch_size: int = 16,
    system_prompt: str | None = None,
    seed: int = 0,
    progress: bool = True,
    decontaminator: Decontaminator | None = None,
) -> Funnel:
    """Calibrate every problem of ``problems_path`` (ours or the original study's format) in
    chunks of ``batch_size`` (one generation + one sandbox call each); append the ones inside
    the window to ``out`` with ``pass_rate``, ``samples`` and ``learnability_zone``. Resumable.

    With a ``decontaminator``, inputs close to the evaluation set are dropped before sampling
    (the study's shipped curriculum holds renamed HumanEval problems). A chunk's sampling seed
    derives from ``seed`` and its problems, so a resumed run samples what the uninterrupted one
    would have.
    """
    config = config or CalibrationConfig()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    inputs = read_problems(problems_path)
    spath = state_path(out)
    settings = {"command": "calibrate", "problems": str(Path(problems_path).resolve()), "samples": config.samples,
                "lo": config.lo, "hi": config.hi, "temperature": config.temperature, "seed": seed,
                "answer_mode": config.answer_mode, "system_prompt": system_prompt,
                "decontaminate": decontaminator is not None}
    state = RunState.load_or_new(spath, settings)
    written = {p.uid for p in _existing(out)}
    _flush_pending(state, spath, out, written)
    unique = list({p.uid: p for p in inputs}.values())
    todo = [p for p in unique if p.uid not in state.outcomes]
    if "input" not in state.funnel.steps:
        state.funnel.add("input", len(unique))
    if decontaminator is not None and todo:
        clean = decontaminator.filter(todo)
        state.outcomes.update({uid: {"pass_rate": None, "outcome": why} for uid, why in clean.rejected.items()})
        state.funnel.reasons.update(clean.counts)
        state.save(spath)
        todo = clean.kept
    bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc="calibrate", unit="problem",
               disable=not progress)
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            chunk_seed = seed + zlib.crc32("".join(p.uid for p in chunk).encode()) % 1_000_003
            result = calibrate(chunk, generator, sandbox, config, system_prompt=system_prompt, seed=chunk_seed)
            state.units_done += 1
            state.funnel.add("calibrated", len(result.result.kept))
            state.funnel.reasons.update(result.result.counts)
            for p in result.problems:
                state.outcomes[p.uid] = {"pass_rate": p.pass_rate,
                                         "outcome": result.result.rejected.get(p.uid, "in_window")}
            _commit(state, spath, out, result.result.kept, written)
            bar.update(len(chunk))
    finally:
        bar.close()
    return state.funnel

