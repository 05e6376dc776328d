"""Shared pieces of the registry tests: a real tiny LoRA adapter and a SQLite store in a temp dir."""

from __future__ import annotations

import atexit
import shutil
import socket
import tempfile
from pathlib import Path

_TEMPLATE: Path | None = None


def _template_db() -> Path:
    """An empty, fully migrated MLflow database, made once per test process (migrating a new
    SQLite store takes seconds; copying one takes milliseconds)."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from mlflow import MlflowClient

        directory = Path(tempfile.mkdtemp(prefix="laimark-mlflow-template-"))
        atexit.register(shutil.rmtree, directory, True)
        db = directory / "mlflow.db"
        MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
        _TEMPLATE = db
    return _TEMPLATE


def sqlite_uri(directory: Path) -> str:
    """A tracking URI for a fresh (empty) SQLite store in ``directory/store``."""
    db = (directory / "store" / "mlflow.db").resolve()
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template_db(), db)
    return f"sqlite:///{db}"


def make_tiny_adapter(dest: Path, seed: int = 0, base: str = "tiny") -> Path:
    """A peft LoRA adapter (q_proj/v_proj, r=4) on the tiny model, saved with its tokenizer.

    The LoRA B matrices are random (not peft's zero init) so that adapters of different seeds
    generate differently.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from laimark_pl.tiny import resolve_model

    path = resolve_model(base)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(path).save_pretrained(dest)
    return dest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
