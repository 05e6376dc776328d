"""Parameter checks shared by the Typer commands (used as ``typer.Option(..., callback=...)``)."""

from __future__ import annotations

import typer

from laimark_pl.prompts import ANSWER_MODES


def answer_mode(value: str) -> str:
    """``--mode``: one of the answer modes ("full" function or "body")."""
    if value not in ANSWER_MODES:
        raise typer.BadParameter(f"must be one of {', '.join(ANSWER_MODES)}, got {value!r}")
    return value
