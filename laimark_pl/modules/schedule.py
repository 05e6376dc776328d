"""The learning-rate schedule of `GRPOModule`: warm-up, then decay."""

from __future__ import annotations

import math


class WarmupDecaySchedule:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine/linear decay or constant."""

    def __init__(self, total_steps: int | None, warmup_steps: int, kind: str):
        self.total_steps, self.warmup_steps, self.kind = total_steps, warmup_steps, kind

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "constant" or not self.total_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if self.kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))
