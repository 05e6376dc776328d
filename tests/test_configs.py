"""Every shipped config parses against the current init signatures (no model is loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STANDALONE = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "qwen3-8b-iteration.yaml")


def _print_config(*configs: Path, extra: tuple[str, ...] = ()) -> dict:
    args = [a for c in configs for a in ("--config", str(c))]
    result = subprocess.run([sys.executable, "-m", "laimark_pl.cli", "fit", *args, *extra, "--print_config"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("config", STANDALONE, ids=lambda p: p.name)
def test_config_parses(config):
    resolved = _print_config(config)
    assert resolved["model"]["policy"]["model"]
    assert resolved["trainer"]["max_epochs"] >= 1


def test_paper_config_matches_the_study():
    cfg = _print_config(CONFIGS / "qwen3-8b-selfgen.yaml")
    policy, optim = cfg["model"]["policy"], cfg["model"]["optim"]
    assert (policy["model"], policy["lora_r"], policy["lora_alpha"], policy["lora_dropout"]) == (
        "Qwen/Qwen3-8B", 16, 32, 0.05)
    assert policy["target_modules"] == ["q_proj", "v_proj"]
    assert cfg["model"]["sampling"]["num_generations"] == 4 and cfg["model"]["sampling"]["max_new_tokens"] == 1024
    assert (optim["lr"], optim["warmup_ratio"], optim["scheduler"]) == (5e-6, 0.1, "cosine")
    assert cfg["data"]["batch_size"] == 4 and cfg["trainer"]["max_epochs"] == 2
    assert cfg["trainer"]["precision"] == "bf16-true"


def test_iteration_layers_on_the_selfgen_config():
    cfg = _print_config(CONFIGS / "qwen3-8b-selfgen.yaml", CONFIGS / "qwen3-8b-iteration.yaml")
    assert cfg["model"]["policy"]["adapter"] == "runs/qwen3-8b-selfgen/adapter"
    assert cfg["model"]["policy"]["model"] == "Qwen/Qwen3-8B"
