"""Bookkeeping shared by the curriculum stages: what each stage kept, what it dropped and why.

Example:
    >>> f = Funnel()
    >>> f.add("proposed", 10); f.add("parsed", 7); f.reject("parse:no_solution", 3)
    >>> f.as_metrics()["funnel/parsed"], f.as_metrics()["rejected/parse.no_solution"]
    (7, 3)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from laimark_pl.problems import Problem

#: Funnel steps in order. ``input`` counts the problems of a file to calibrate; ``derived`` the
#: deduction/abduction tasks made from the decontaminated problems; ``calibrated`` (inside the
#: learnability window) and ``accepted`` (after the type-mix cap) count problems of every type;
#: ``written`` what a command appended to its output file.
STEPS: tuple[str, ...] = ("input", "proposed", "parsed", "verified", "unique", "decontaminated", "derived",
                          "calibrated", "accepted", "written")


@dataclass
class StageResult:
    """Problems a stage kept, and the reason for each one it dropped (keyed by ``Problem.uid``)."""

    kept: list[Problem] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter:
        """Dropped problems per reason."""
        return Counter(self.rejected.values())

    @classmethod
    def partition(cls, problems: Iterable[Problem], reason: Callable[[Problem], str | None],
                  on_keep: Callable[[Problem], None] | None = None) -> StageResult:
        """Drop every problem for which ``reason`` names one; ``on_keep`` sees each kept problem
        before the next is judged (so a filter can compare later problems with earlier ones)."""
        result = cls()
        for problem in problems:
            why = reason(problem)
            if why:
                result.rejected[problem.uid] = why
            else:
                result.kept.append(problem)
                if on_keep is not None:
                    on_keep(problem)
        return result


@dataclass
class Funnel:
    """Counts per funnel step and per rejection reason, accumulated over rounds."""

    steps: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def add(self, step: str, n: int) -> None:
        self.steps[step] += n

    def reject(self, reason: str, n: int = 1) -> None:
        self.reasons[reason] += n

    def record(self, step: str, result: StageResult) -> None:
        """Count a stage's survivors under ``step`` and its rejections by reason."""
        self.add(step, len(result.kept))
        self.reasons.update(result.counts)

    def merge(self, other: Funnel) -> None:
        self.steps.update(other.steps)
        self.reasons.update(other.reasons)

    def as_metrics(self, prefix: str = "") -> dict[str, int]:
        """Flat ``{prefix}funnel/<step>`` and ``{prefix}rejected/<reason>`` counts (``:`` in a
        reason becomes ``.``: MLflow metric names allow no colons)."""
        out = {f"{prefix}funnel/{s}": int(n) for s, n in self.steps.items()}
        out.update({f"{prefix}rejected/{r.replace(':', '.')}": int(n) for r, n in sorted(self.reasons.items())})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"steps": dict(self.steps), "reasons": dict(self.reasons)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Funnel:
        return cls(Counter(data.get("steps", {})), Counter(data.get("reasons", {})))

    def render(self, title: str = "curriculum funnel") -> Any:
        """A rich table of the steps (with share of proposed) and the rejection reasons."""
        from rich.table import Table

        table = Table(title=title)
        table.add_column("step")
        table.add_column("count", justify="right")
        table.add_column("% of first", justify="right")
        present = [s for s in STEPS if s in self.steps] + sorted(s for s in self.steps if s not in STEPS)
        first = self.steps.get(present[0], 0) if present else 0
        for step in present:
            n = self.steps[step]
            table.add_row(step, str(n), f"{100.0 * n / first:.1f}" if first else "-")
        for reason, n in sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(f"  rejected: {reason}", str(n), "")
        return table
