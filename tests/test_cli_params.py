"""Shared Typer parameter checks: the same ``--mode`` and ``--system-prompt`` handling in every command."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from laimark_pl.cli import app
from laimark_pl.cli_params import answer_mode, resolve_system_prompt
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT


def test_answer_mode_accepts_the_modes_and_names_them_when_not() -> None:
    assert answer_mode("full") == "full" and answer_mode("body") == "body"
    with pytest.raises(typer.BadParameter, match=r"must be one of body, full, got 'half'"):
        answer_mode("half")


@pytest.mark.parametrize("command", ["evaluate", "calibrate", "evolve-prompt", "register"])
def test_every_command_rejects_a_bad_mode_before_doing_anything(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--mode", "half"])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "'--mode'" in flat and "must be one of body, full, got 'half'" in flat


def test_system_prompt_is_named_read_from_a_file_or_given(tmp_path) -> None:
    assert resolve_system_prompt(None) is None
    assert resolve_system_prompt("operational") == OPERATIONAL_SYSTEM_PROMPT
    assert resolve_system_prompt("Be brief.") == "Be brief."
    path = tmp_path / "prompt.txt"
    path.write_text("  Write tests first.\n", encoding="utf-8")
    assert resolve_system_prompt(f"@{path}") == "Write tests first."
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(typer.BadParameter, match="is empty"):
        resolve_system_prompt(f"@{path}")
    path.write_bytes(b"\xff\xfe bad")
    with pytest.raises(typer.BadParameter, match="cannot read"):
        resolve_system_prompt(f"@{path}")
    with pytest.raises(typer.BadParameter, match="file not found"):
        resolve_system_prompt(f"@{tmp_path / 'missing.txt'}")


@pytest.mark.parametrize("command,option", [("evaluate", "--system-prompt"), ("calibrate", "--system-prompt"),
                                            ("evolve-prompt", "--initial"), ("register", "--system-prompt")])
def test_every_command_reads_a_prompt_file_and_names_a_missing_one(command: str, option: str, tmp_path) -> None:
    result = CliRunner().invoke(app, [command, option, f"@{tmp_path / 'nope.txt'}"])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert f"'{option}'" in flat and "file not found" in flat and "nope.txt" in flat
