"""Run plots from a real MLflow run's metric history, logged as PNG artifacts."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from registry_helpers import sqlite_uri

from laimark_pl.registry.plots import curves_figure, learnability_figure, log_run_plots, select_metrics
from laimark_pl.registry.tracking import ensure_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_metric_selection():
    keys = ["train/reward_mean", "train/loss", "train/pass_rate", "humaneval_pass_at_1", "lr-AdamW", "val/Reward"]
    assert select_metrics(keys, ("reward",)) == ["train/reward_mean", "val/Reward"]
    assert select_metrics(keys, ("pass_rate", "pass_at")) == ["humaneval_pass_at_1", "train/pass_rate"]


def test_figures_draw_what_they_are_given():
    figure = curves_figure({"a": [(0, 0.1), (1, 0.3)], "b": [(0, 0.5)]}, "Reward", "reward")
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["a", "b"]
    assert list(axes.get_lines()[0].get_ydata()) == [0.1, 0.3]
    histogram = learnability_figure([0.0, 0.25, 0.5, 0.5, 1.0])
    assert "3/5 in the window" in histogram.axes[0].get_title()
    [bars] = histogram.axes[0].containers
    assert [bar.get_height() for bar in bars] == [1, 0, 1, 0, 0, 2, 0, 0, 0, 1]


def test_plots_are_logged_from_the_run_history(tmp_path):
    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("plots", uri)).info.run_id
    metrics = [Metric("train/reward", 0.1 * step, 0, step) for step in range(5)]
    metrics += [Metric("train/pass_rate", 0.2, 0, step) for step in range(5)]
    metrics += [Metric("train/loss", 1.0, 0, 0)]
    client.log_batch(run_id, metrics=metrics)
    paths = log_run_plots(client, run_id, pass_rates=[0.25, 0.5, None, 0.9])
    assert paths == ["plots/reward.png", "plots/pass_rate.png", "plots/learnability.png"]
    local = Path(client.download_artifacts(run_id, "plots", str(tmp_path / "dl")))
    for name in ("reward.png", "pass_rate.png", "learnability.png"):
        assert (local / name).read_bytes().startswith(PNG_MAGIC)


def test_nothing_to_plot_logs_nothing(tmp_path):
    uri = sqlite_uri(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment("plots", uri)).info.run_id
    client.log_metric(run_id, "train/loss", 1.0)
    assert log_run_plots(client, run_id, pass_rates=[None]) == []
    assert client.list_artifacts(run_id) == []
