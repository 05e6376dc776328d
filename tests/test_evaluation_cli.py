"""``laimark evaluate``: scoring a completions file, clear errors, and a real (tiny) model run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from laimark_pl.evaluation.cli import register
from laimark_pl.evaluation.humaneval import load_humaneval_problems, task_id

PROBLEMS = load_humaneval_problems()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a group, so the command is invoked as `evaluate`
        """laimark (test build)."""

    return app


def run(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def canonical_completions(path: Path, wrong: int = 0) -> Path:
    with open(path, "w") as fh:
        for i, p in enumerate(PROBLEMS):
            body = "    return None\n" if i < wrong else p.solution[len(p.prompt):]
            fh.write(json.dumps({"task_id": task_id(p), "completion": body}) + "\n")
    return path


def test_completions_json_summary(app, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    result = run(app, "--completions", canonical_completions(tmp_path / "c.jsonl", wrong=2), "--mode", "body",
                 "--json", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["passed"], summary["total"]) == (162, 164)
    assert summary["pass_at_1"] == pytest.approx(162 / 164)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 164 and records[0]["passed"] == [False] and records[2]["passed"] == [True]


def test_completions_with_limit(app, tmp_path: Path) -> None:
    result = run(app, "--completions", canonical_completions(tmp_path / "c.jsonl", wrong=1), "--limit", "4",
                 "--json", "--no-progress", "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert {k: json.loads(result.stdout)[k] for k in ("passed", "total", "pass_at_1")} == {
        "passed": 3, "total": 4, "pass_at_1": 0.75}


def test_completions_rich_table(app, tmp_path: Path) -> None:
    result = run(app, "--completions", canonical_completions(tmp_path / "c.jsonl"), "--no-progress", "--out",
                 tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert "164 / 164" in result.stdout and "pass@1" in result.stdout and "100.0%" in result.stdout


@pytest.mark.docker
def test_completions_in_the_docker_backend(app, tmp_path: Path) -> None:
    result = run(app, "--completions", canonical_completions(tmp_path / "c.jsonl", wrong=1), "--backend", "docker",
                 "--limit", "6", "--json", "--no-progress", "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["passed"], json.loads(result.stdout)["total"]) == (5, 6)


def test_missing_completions_file_is_a_clear_error(app, tmp_path: Path) -> None:
    result = run(app, "--completions", tmp_path / "absent.jsonl", "--json")
    assert result.exit_code == 2
    assert "file not found" in result.output and "absent.jsonl" in result.output


def test_malformed_completions_name_line_and_field(app, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "    return 1"}\n{"task_id": "HumanEval/1"}\n')
    result = run(app, "--completions", path, "--json", "--out", tmp_path / "r.jsonl")
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "bad.jsonl:2" in flat and "'completion'" in flat and "missing" in flat
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("args, message", [
    ((), "exactly one of --model or --completions"),
    (("--model", "tiny", "--completions", "x.jsonl"), "exactly one of"),
    (("--completions", "x.jsonl", "--adapter", "a"), "--adapter needs --model"),
    (("--model", "tiny", "--mode", "half"), "must be one of body, full"),
    (("--model", "tiny", "--samples", "3", "--temperature", "0"), "temperature > 0"),
    (("--model", "tiny", "--backend", "vm"), "must be one of process, docker"),
])
def test_bad_arguments(app, args: tuple, message: str) -> None:
    result = run(app, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_tiny_model_end_to_end(app, tmp_path: Path, monkeypatch) -> None:
    """A random tiny model: the whole path runs (load, batched generation, sandbox, report)."""
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tiny.jsonl"
    result = run(app, "--model", "tiny", "--limit", "3", "--max-new-tokens", "8", "--json", "--no-progress",
                 "--out", out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["total"] == 3 and summary["model"] == "tiny" and summary["pass_at_1"] == 0.0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in records] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert all(r["statuses"][0] != "passed" for r in records)
