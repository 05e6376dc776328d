"""`HumanEvalCallback` at the end of real (tiny) Lightning runs, logging to a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader

from laimark_pl.callbacks.humaneval import HumanEvalCallback
from laimark_pl.evaluation.humaneval import load_humaneval_problems, task_id
from laimark_pl.sandbox import create

PROBLEMS = load_humaneval_problems()


class ScriptedPolicy(nn.Module):
    """A `TextGenerator` with one trainable weight: canonical bodies for even-numbered tasks,
    a wrong body for odd ones. Records the system prompts and the module mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[str | None, bool]] = []

    def generate_text(self, prompts, *, num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=512,
                      system_prompt=None, seed=None, desc=None):
        self.seen.append((system_prompt, self.training))
        out = []
        for prompt in prompts:
            problem = next(p for p in PROBLEMS if p.prompt.rstrip() in prompt)
            even = int(task_id(problem).split("/")[1]) % 2 == 0
            out.append([problem.solution[len(problem.prompt):] if even else "    return 'wrong'\n"] * num_samples)
        return out


class PolicyModule(pl.LightningModule):
    """The smallest module the callback needs: ``.policy``, ``.system_prompt``, ``.sandbox``."""

    def __init__(self, policy: nn.Module, system_prompt: str | None = None, sandbox=None) -> None:
        super().__init__()
        self.policy = policy
        self.system_prompt = system_prompt
        self.sandbox = sandbox

    def training_step(self, batch, batch_idx):
        return sum((p.float() ** 2).sum() + p.float().sum() for p in self.policy.parameters() if p.requires_grad)

    def test_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.policy.parameters() if p.requires_grad], lr=0.1)

    def train_dataloader(self):
        return DataLoader(list(range(2)), batch_size=1)

    def test_dataloader(self):
        return DataLoader(list(range(1)), batch_size=1)


def trainer(tmp_path: Path, callback: HumanEvalCallback, logger) -> pl.Trainer:
    return pl.Trainer(default_root_dir=tmp_path, max_epochs=1, accelerator="cpu", logger=logger,
                      callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)


def mlflow_metrics(logger: MLFlowLogger) -> dict[str, float]:
    return logger.experiment.get_run(logger.run_id).data.metrics


@pytest.fixture(scope="module")
def sandbox():
    with create("process") as sb:
        yield sb


def test_scripted_policy_score_reaches_mlflow_and_callback_metrics(tmp_path: Path, sandbox) -> None:
    logger = MLFlowLogger(experiment_name="humaneval", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    callback = HumanEvalCallback(mode="body", limit=6, progress=False)
    policy = ScriptedPolicy()
    module = PolicyModule(policy, system_prompt="Think of the empty list.", sandbox=sandbox)
    fit = trainer(tmp_path, callback, logger)
    fit.fit(module)
    assert callback.pass_at_1 == 0.5
    assert fit.callback_metrics["humaneval_pass_at_1"].item() == 0.5
    assert mlflow_metrics(logger)["humaneval_pass_at_1"] == 0.5
    assert policy.seen == [("Think of the empty list.", False)]  # evaluated in eval mode ...
    assert module.training  # ... and put back in training mode afterwards
    assert policy.weight.item() != 0.0  # the run really trained
    assert callback.results_path == tmp_path / "humaneval_results.jsonl"  # MLflow first: root dir
    records = [json.loads(line) for line in callback.results_path.read_text().splitlines()]
    assert [r["passed"] for r in records] == [[True], [False]] * 3


def test_tiny_grpo_run_scores_trained_adapter(tmp_path: Path, monkeypatch) -> None:
    """A real GRPOModule (tiny random model, shipped curriculum, its own sandbox) for two steps."""
    from laimark_pl.datamodules.curriculum import CurriculumDataModule
    from laimark_pl.modules.grpo import GRPOModule, SamplingConfig
    from laimark_pl.modules.policy import PolicyConfig

    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path / "cache"))
    module = GRPOModule(policy=PolicyConfig(model="tiny", lora_r=4), system_prompt="Be careful.",
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=8))
    callback = HumanEvalCallback(limit=2, max_new_tokens=8, progress=False)
    logger = CSVLogger(tmp_path, name="run")
    fit = pl.Trainer(default_root_dir=tmp_path, max_steps=2, accelerator="cpu", logger=logger,
                     callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0)
    fit.fit(module, datamodule=CurriculumDataModule(batch_size=2, eval_set="none"))
    assert fit.global_step == 2
    assert callback.pass_at_1 == 0.0 and callback.report is not None and callback.report.total == 2
    assert fit.callback_metrics["humaneval_pass_at_1"].item() == 0.0
    assert callback.results_path == Path(logger.log_dir) / "humaneval_results.jsonl"
    assert len(callback.results_path.read_text().splitlines()) == 2
    metrics_csv = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "humaneval_pass_at_1" in metrics_csv.splitlines()[0]


def test_test_stage_with_the_callbacks_own_sandbox(tmp_path: Path) -> None:
    callback = HumanEvalCallback(mode="full", limit=2, stages=("test",), progress=False)
    run = trainer(tmp_path, callback, CSVLogger(tmp_path, name="t"))
    module = PolicyModule(ScriptedPolicy())  # no sandbox: the callback makes its own
    run.fit(module)
    assert callback.pass_at_1 is None  # not asked to run after fit
    run.test(module)
    assert callback.pass_at_1 == 0.5 and callback.results_path.name == "humaneval_results_test.jsonl"


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "half"}, "mode"),
    ({"stages": ("predict",)}, "stages"),
    ({"samples": 3}, "temperature"),
])
def test_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HumanEvalCallback(**kwargs)
