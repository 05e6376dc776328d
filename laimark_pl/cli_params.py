"""Parameter checks shared by the Typer commands (used as ``typer.Option(..., callback=...)``)."""

from __future__ import annotations

from pathlib import Path

import typer

from laimark_pl.prompts import ANSWER_MODES, OPERATIONAL_SYSTEM_PROMPT

SYSTEM_PROMPT_HELP = "'operational' uses the study's evolved prompt; @FILE reads it from a file (e.g. evolve-prompt's)."


def answer_mode(value: str) -> str:
    """``--mode``: one of the answer modes ("full" function or "body")."""
    if value not in ANSWER_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(ANSWER_MODES)}, got {value!r}")
    return value


def resolve_system_prompt(value: str | None) -> str | None:
    """``--system-prompt``: ``operational`` -> the study's prompt; ``@FILE`` -> the file's text
    (stripped); anything else is the prompt itself."""
    if value is None:
        return None
    if value == "operational":
        return OPERATIONAL_SYSTEM_PROMPT
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise typer.BadParameter(f"file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {path}: {exc}") from exc
        if not text:
            raise typer.BadParameter(f"{path} is empty")
        return text
    return value
