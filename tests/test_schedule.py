"""The GRPO learning-rate schedule."""

from __future__ import annotations

from laimark_pl.modules.schedule import WarmupDecaySchedule


def test_warmup_cosine_schedule():
    schedule = WarmupDecaySchedule(total_steps=10, warmup_steps=2, kind="cosine")
    assert [round(schedule(s), 4) for s in (0, 1, 2, 6, 10)] == [round(1 / 3, 4), round(2 / 3, 4), 1.0, 0.5, 0.0]
    assert WarmupDecaySchedule(10, 0, "linear")(5) == 0.5
    assert WarmupDecaySchedule(10, 0, "constant")(9) == 1.0
