"""Shared Typer parameter checks: the same ``--mode`` error from every command that takes one."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from laimark_pl.cli import app
from laimark_pl.cli_params import answer_mode


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
