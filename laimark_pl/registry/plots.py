"""Pictures of a run, logged as PNG artifacts: reward and pass-rate curves from the run's metric
history and the learnability histogram of the curriculum (calibrated pass rates with the
learnability window shaded).

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global backend).

Example:
    >>> paths = log_run_plots(MlflowClient(uri), run_id, pass_rates=[p.pass_rate for p in pool])  # doctest: +SKIP
    >>> paths
    ['plots/reward.png', 'plots/pass_rate.png', 'plots/learnability.png']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

REWARD_PATTERNS = ("reward",)
PASS_RATE_PATTERNS = ("pass_rate", "pass_at", "pass@", "accuracy")
LEARNABILITY_WINDOW = (0.2, 0.8)
PLOTS_DIR = "plots"

History = Mapping[str, Sequence[tuple[int, float]]]


def select_metrics(keys: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """Metric names containing any of ``patterns`` (case-insensitive), sorted."""
    return sorted(k for k in keys if any(p in k.lower() for p in patterns))


def metric_history(client: Any, run_id: str, keys: Iterable[str]) -> dict[str, list[tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` from the run's recorded history, in step order."""
    history = {}
    for key in keys:
        points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        if points:
            history[key] = points
    return history


def curves_figure(history: History, title: str, ylabel: str) -> Figure:
    """One line per metric (single points drawn as markers)."""
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for key, points in history.items():
        steps, values = zip(*points, strict=True)
        axes.plot(steps, values, marker="o" if len(points) < 20 else None, label=key)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if history:
        axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def learnability_figure(pass_rates: Sequence[float], window: tuple[float, float] = LEARNABILITY_WINDOW,
                        bins: int = 10) -> Figure:
    """Histogram of calibrated pass rates with the learnability window shaded."""
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.add_subplot()
    axes.axvspan(window[0], window[1], color="tab:green", alpha=0.15, label=f"learnable [{window[0]}, {window[1]}]")
    axes.hist(list(pass_rates), bins=bins, range=(0.0, 1.0), color="tab:blue", edgecolor="white")
    inside = sum(window[0] <= p <= window[1] for p in pass_rates)
    axes.set_title(f"Curriculum pass rates ({inside}/{len(pass_rates)} in the window)")
    axes.set_xlabel("pass rate of the current policy")
    axes.set_ylabel("problems")
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def log_run_plots(
    client: Any,
    run_id: str,
    *,
    pass_rates: Sequence[float | None] | None = None,
    window: tuple[float, float] = LEARNABILITY_WINDOW,
) -> list[str]:
    """Log the reward curves, pass-rate curves (when such metrics exist) and the learnability
    histogram (when ``pass_rates`` has values) to run ``run_id``; returns the artifact paths."""
    keys = list(client.get_run(run_id).data.metrics)
    logged = []
    panels = (("reward", REWARD_PATTERNS, "reward"), ("pass_rate", PASS_RATE_PATTERNS, "pass rate"))
    for name, patterns, ylabel in panels:
        history = metric_history(client, run_id, select_metrics(keys, patterns))
        if history:
            path = f"{PLOTS_DIR}/{name}.png"
            client.log_figure(run_id, curves_figure(history, f"{ylabel.capitalize()} during training", ylabel), path)
            logged.append(path)
    rates = [float(p) for p in (pass_rates or []) if p is not None]
    if rates:
        path = f"{PLOTS_DIR}/learnability.png"
        client.log_figure(run_id, learnability_figure(rates, window), path)
        logged.append(path)
    return logged
