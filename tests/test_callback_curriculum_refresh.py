"""`CurriculumRefresh` in real Lightning runs: a tiny GRPO policy trains while a scripted proposer
(standing in for a model able to write problems) refreshes the pool between epochs."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from curriculum_helpers import LIBRARY, ScriptedModel
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger

from laimark_pl.callbacks.curriculum_refresh import CurriculumRefresh
from laimark_pl.curriculum.parsing import parse_proposal
from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.modules.grpo import GRPOModule, SamplingConfig
from laimark_pl.modules.policy import PolicyConfig
from laimark_pl.problems import write_problems

SEED_POOL = [LIBRARY[6], LIBRARY[7]]  # rle_decode, max_subarray_sum
PROPOSALS = [s.proposal() for s in LIBRARY[:6]]  # handed out in order, three per refresh


class WatchedProposer(ScriptedModel):
    """Records the module's train/eval mode and grad mode at every call."""

    module: pl.LightningModule | None = None
    modes: list = []

    def generate_text(self, prompts, **kw):
        self.modes.append((self.module.training if self.module else None, torch.is_grad_enabled()))
        return super().generate_text(prompts, **kw)


class BatchRecorder(pl.Callback):
    def __init__(self):
        self.seen: dict[int, set[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.setdefault(trainer.current_epoch, set()).update(p.entry_point for p in batch)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAIMARK_CACHE", str(tmp_path / "cache"))


def seed_file(tmp_path: Path, specs) -> str:
    path = tmp_path / "seed.jsonl"
    write_problems(path, [parse_proposal(s.proposal()) for s in specs])
    return str(path)


def run(tmp_path, callback, pool_path, logger=None, epochs=2):
    module = GRPOModule(policy=PolicyConfig(model="tiny", lora_r=4), system_prompt="SYS",
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=8))
    datamodule = CurriculumDataModule(path=pool_path, batch_size=2, eval_set="none", shuffle=False)
    recorder = BatchRecorder()
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu",
                         reload_dataloaders_every_n_epochs=1, logger=logger or CSVLogger(tmp_path, name="run"),
                         callbacks=[callback, recorder], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0)
    if isinstance(callback.generator, WatchedProposer):
        callback.generator.module = module
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, datamodule, recorder


def test_refresh_replaces_the_pool_and_training_continues_on_it(tmp_path, cache):
    proposer = WatchedProposer(proposals=PROPOSALS, pass_prob={"count_upper": 1.0, "max_subarray_sum": 1.0},
                               default_p=0.5)
    proposer.modes = []
    callback = CurriculumRefresh(every_n_epochs=1, num_candidates=3, samples=4, harder_share=0.0,
                                 max_type_share=0.5, generator=proposer, seed=1)
    logger = MLFlowLogger(experiment_name="refresh", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    trainer, module, dm, recorder = run(tmp_path, callback, seed_file(tmp_path, SEED_POOL), logger)

    assert [h["status"] for h in callback.history] == ["ok"]  # none after the last epoch: nothing trains on it
    first = callback.history[0]["metrics"]
    assert first["curriculum/funnel/proposed"] == 3 and first["curriculum/funnel/decontaminated"] == 3
    assert first["curriculum/retired_mastered"] == 1  # max_subarray_sum: pass rate 1.0
    assert first["curriculum/kept"] == 1 and first["curriculum/added"] >= 1
    # epoch 0 trained on the seed pool, epoch 1 on the refreshed one
    assert recorder.seen[0] == {"rle_decode", "max_subarray_sum"}
    assert "max_subarray_sum" not in recorder.seen[1]
    assert recorder.seen[1] & {"add_pairs", "second_largest"}
    assert trainer.global_step == 1 + len(range(0, first["curriculum/pool_size"], 2))
    assert "count_upper" not in {p.entry_point for p in dm.pool}  # mastered: never accepted
    assert all(0.2 <= p.pass_rate <= 0.8 for p in dm.pool)
    # generated in eval mode without gradients; the module trains again afterwards
    assert proposer.modes and all(m == (False, False) for m in proposer.modes)
    assert module.training
    calibrate_calls = [c for c in proposer.calls if c["desc"] == "calibrate"]
    assert calibrate_calls and all(c["system_prompt"] == "SYS" for c in calibrate_calls)

    run_data = logger.experiment.get_run(logger.run_id).data
    assert run_data.metrics["curriculum/refresh_failed"] == 0.0
    assert run_data.metrics["curriculum/funnel/accepted"] >= 1
    assert "curriculum/pass_rate_hist/bin2" in run_data.metrics
    artifacts = {a.path for a in logger.experiment.list_artifacts(logger.run_id, "curriculum/refresh_001")}
    assert {"curriculum/refresh_001/pass_rates.png", "curriculum/refresh_001/accepted.json"} <= artifacts
    table = json.loads((tmp_path / "curriculum" / "refresh_001" / "accepted.json").read_text())
    assert {"uid", "type", "entry_point", "pass_rate"} <= set(table[0])


@pytest.mark.parametrize("proposer, reason", [
    (ScriptedModel(fail_after=0), "RuntimeError: scripted crash"),
    (ScriptedModel(proposals=["no idea"]), "nothing accepted: parse:no_sections x2"),
], ids=["exception", "nothing-accepted"])
def test_a_failing_refresh_keeps_the_old_pool(tmp_path, cache, proposer, reason):
    callback = CurriculumRefresh(every_n_epochs=1, num_candidates=2, samples=2, generator=proposer)
    with pytest.warns(UserWarning, match="keeping the previous pool"):
        trainer, module, dm, recorder = run(tmp_path, callback, seed_file(tmp_path, SEED_POOL))
    assert [h["status"] for h in callback.history] == ["failed"]
    assert callback.history[0]["reason"] == reason
    assert {p.entry_point for p in dm.pool} == {"rle_decode", "max_subarray_sum"}
    assert recorder.seen[1] == {"rle_decode", "max_subarray_sum"}
    assert trainer.global_step == 2 and module.training  # both epochs trained
    metrics = (Path(trainer.logger.log_dir) / "metrics.csv").read_text()
    assert "curriculum/refresh_failed" in metrics.splitlines()[0]


def test_an_empty_pool_is_bootstrapped_at_fit_start(tmp_path, cache):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proposer = ScriptedModel(proposals=PROPOSALS, default_p=0.5)
    callback = CurriculumRefresh(every_n_epochs=0, num_candidates=4, samples=4, generator=proposer)
    trainer, _, dm, recorder = run(tmp_path, callback, str(empty), epochs=1)
    assert [h["trigger"] for h in callback.history] == ["bootstrap"]
    assert dm.pool and trainer.global_step > 0
    assert recorder.seen[0] <= {p.entry_point for p in dm.pool}


def test_reserved_problems_are_loaded_for_deduplication(tmp_path):
    callback = CurriculumRefresh(reserved=seed_file(tmp_path, LIBRARY[:2]))
    assert [p.entry_point for p in callback.reserved] == ["add_pairs", "count_upper"]


def test_bad_settings():
    with pytest.raises(ValueError, match="every_n_epochs"):
        CurriculumRefresh(every_n_epochs=-1)
    with pytest.raises(ValueError, match="window"):
        CurriculumRefresh(lo=0.9, hi=0.1)
