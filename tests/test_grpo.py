"""GRPOModule on the tiny model: it learns, runs with the real sandbox, checkpoints the adapter only,
resumes, is reproducible, and its reference / micro-batching / schedule behave."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from peft import PeftModel
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from laimark_pl.modules.grpo import (
    EvalConfig,
    GRPOConfig,
    GRPOModule,
    OptimConfig,
    SamplingConfig,
    SandboxConfig,
    _micro_batch,
)
from laimark_pl.modules.logprobs import completion_logprobs
from laimark_pl.modules.losses import loss_mask
from laimark_pl.modules.policy import PolicyConfig
from laimark_pl.modules.rewards import CharacterShareReward
from laimark_pl.modules.schedule import WarmupDecaySchedule
from laimark_pl.problems import Problem
from laimark_pl.tiny import build_tiny_model

MLFLOW_NAME = re.compile(r"^[A-Za-z0-9_\-./ ]+$")


def induction(i: int) -> Problem:
    return Problem(prompt=f'def add_{i}(x):\n    """Return x + {i}."""\n', tests=f"assert add_{i}(1) == {1 + i}",
                   entry_point=f"add_{i}", solution=f"def add_{i}(x):\n    return x + {i}")


DEDUCTION = Problem(prompt="", tests="", entry_point="double", problem_type="deduction",
                    code="def double(x):\n    return 2 * x", func_name="double", input="21", expected="42")
ABDUCTION = Problem(prompt="", tests="", entry_point="double", problem_type="abduction",
                    code="def double(x):\n    return 2 * x", func_name="double", expected="10")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0))


def loader(problems: list[Problem], batch_size: int) -> DataLoader:
    return DataLoader(problems, batch_size=batch_size, collate_fn=list)


def trainer(root, max_steps: int, callbacks=(), **kwargs) -> L.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(root),
                     callbacks=list(callbacks), **kwargs)


def toy_module(tiny_dir: str, *, lr=5e-2, dropout=0.0, grpo=None, sampling=None, **kwargs) -> GRPOModule:
    return GRPOModule(
        policy=PolicyConfig(model=tiny_dir, lora_r=8, lora_alpha=16, lora_dropout=dropout, device="cpu"),
        sampling=sampling or SamplingConfig(num_generations=4, max_new_tokens=3),
        grpo=grpo or GRPOConfig(),
        optim=OptimConfig(lr=lr, warmup_ratio=0.0, scheduler="constant"),
        sandbox=SandboxConfig(backend="none"),
        reward=CharacterShareReward("etaoin"),
        **kwargs,
    )


class StepMetrics(Callback):
    """Records the metrics logged at every training step."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def series(self, name: str) -> list[float]:
        return [step[name] for step in self.steps]


def test_grpo_learns_to_raise_a_toy_reward(tiny_dir, tmp_path):
    """Learning, not just running: the mean reward climbs well beyond its noise."""
    L.seed_everything(0)
    record = StepMetrics()
    module = toy_module(tiny_dir, sampling=SamplingConfig(num_generations=8, max_new_tokens=3))
    trainer(tmp_path, 40, [record]).fit(module, loader([induction(i) for i in range(4)] * 40, 4))
    rewards = record.series("train/reward_mean")
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert len(rewards) == 40
    assert last > first + 0.15, (first, last, rewards)


def test_fit_with_code_execution_reward_in_the_real_sandbox(tiny_dir, tmp_path):
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    L.seed_everything(0)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLFlowLogger(experiment_name="grpo-test", tracking_uri=uri)
    record = StepMetrics()
    module = GRPOModule(
        policy=PolicyConfig(model=tiny_dir, lora_r=4, device="cpu"),
        sampling=SamplingConfig(num_generations=2, max_new_tokens=8),
        sandbox=SandboxConfig(backend="process", workers=2, timeout_s=5.0),
        eval=EvalConfig(metric_name="humaneval_pass_at_1", max_new_tokens=8),
        system_prompt="You write Python.",
    )
    train = [induction(1), DEDUCTION, ABDUCTION, induction(2), induction(3), DEDUCTION]
    tr = trainer(tmp_path, 2, [record], logger=logger, log_every_n_steps=1)
    tr.fit(module, loader(train, 3), loader([induction(4), induction(5)], 2))

    step = record.steps[-1]
    for name in ["train/reward_mean", "train/reward_std", "train/zero_variance_group_share",
                 "train/pass_rate/induction", "train/pass_rate/deduction", "train/pass_rate/abduction",
                 "train/completion_length_mean", "train/completion_length_max", "train/truncated_share",
                 "train/kl", "train/clip_ratio_low", "train/clip_ratio_high", "train/clip_ratio_region",
                 "train/entropy", "train/lr", "train/loss", "time/generation_s", "time/sandbox_s",
                 "time/training_s", "train/generated_tokens_per_s"]:
        assert name in step, name
        assert math.isfinite(step[name]), name
    assert all(MLFLOW_NAME.match(name) for s in record.steps for name in s)
    assert not any(name.startswith("memory/") for name in step)  # CUDA-only metrics
    assert step["train/reward_mean"] == 0.0  # random weights write no passing code
    assert 0 < step["train/completion_length_mean"] <= 8

    assert module.sandbox is None  # closed in teardown
    assert len(module.last_eval_records) == 2
    assert {r["task_id"] for r in module.last_eval_records} == {"add_4", "add_5"}
    assert all(r["passed"] is False and r["status"] for r in module.last_eval_records)

    client = MlflowClient(tracking_uri=uri)
    run_id = logger.run_id
    assert len(client.get_metric_history(run_id, "train/reward_mean")) == 2
    assert client.get_metric_history(run_id, "humaneval_pass_at_1")[-1].value == 0.0

    adapter = tmp_path / "adapter"
    assert module.final_adapter_dir == adapter
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    trained = dict(module.policy.model.named_parameters())
    for name, param in loaded.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, trained[name]), name


def test_validate_and_test_log_the_pass_rate(tiny_dir, tmp_path):
    module = GRPOModule(policy=PolicyConfig(model=tiny_dir, lora_r=4, device="cpu"),
                        sandbox=SandboxConfig(backend="process", workers=1),
                        eval=EvalConfig(metric_name="eval/pass_rate", max_new_tokens=4))
    tr = trainer(tmp_path, 1)
    results = tr.validate(module, loader([induction(7), DEDUCTION, ABDUCTION], 2))
    assert results[0]["eval/pass_rate"] == 0.0
    assert [r["problem_type"] for r in module.last_eval_records] == ["induction", "deduction", "abduction"]
    tr.test(module, loader([induction(8)], 1))
    assert len(module.last_eval_records) == 1


def test_checkpoint_holds_only_the_adapter_and_resumes(tiny_dir, tmp_path):
    problems = [induction(i) for i in range(4)] * 10
    L.seed_everything(0)
    first = toy_module(tiny_dir)
    tr = trainer(tmp_path, 2)
    tr.fit(first, loader(problems, 2))
    path = tmp_path / "step2.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    keys = list(ckpt["state_dict"])
    assert keys and all("lora_" in k for k in keys)
    total = sum(p.numel() for p in first.parameters())
    saved = sum(v.numel() for v in ckpt["state_dict"].values())
    assert saved == first.policy.num_trainable() < total / 5
    assert ckpt["optimizer_states"] and ckpt["optimizer_states"][0]["state"]
    assert ckpt["lr_schedulers"]

    class CheckRestored(Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step
            params = dict(pl_module.named_parameters())
            self.equal = all(torch.equal(params[k], v) for k, v in ckpt["state_dict"].items())

    loaded = GRPOModule.load_from_checkpoint(path, reward=CharacterShareReward("etaoin"))  # weights-only load
    params = dict(loaded.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in ckpt["state_dict"].items())
    assert loaded.grpo == first.grpo and loaded.policy_config == first.policy_config

    check = CheckRestored()
    resumed = toy_module(tiny_dir)
    tr2 = trainer(tmp_path, 3, [check])
    tr2.fit(resumed, loader(problems, 2), ckpt_path=path)
    assert check.step == 2 and check.equal
    assert tr2.global_step == 3


def test_identical_seeds_give_identical_runs(tiny_dir, tmp_path):
    def run(seed: int) -> tuple[list[float], list[float]]:
        L.seed_everything(seed)
        record = StepMetrics()
        module = toy_module(tiny_dir, dropout=0.05)
        problems = [induction(i) for i in range(6)]
        data = DataLoader(problems, batch_size=2, shuffle=True, collate_fn=list)
        trainer(tmp_path, 2, [record]).fit(module, data)
        return record.series("train/loss"), record.series("train/reward_mean")

    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first[1] != other[1]


def test_reference_is_the_adapter_disabled_model(tiny_dir, tmp_path):
    L.seed_everything(0)
    record = StepMetrics()
    module = toy_module(tiny_dir, grpo=GRPOConfig(beta=0.1, num_iterations=2, epsilon_high=0.28,
                                                 micro_batch_size=3, dynamic_sampling=True))
    tr = trainer(tmp_path, 4, [record])
    tr.fit(module, loader([induction(i) for i in range(4)] * 10, 2))
    assert tr.global_step == 4 and len(record.steps) == 2  # two optimizer steps per rollout
    kls = record.series("train/kl")
    assert all(math.isfinite(k) and k >= 0 for k in kls) and kls[-1] > 0
    assert all(0 <= s["train/clip_ratio_region"] <= 1 for s in record.steps)

    rollout = module.policy.sample(["def f(x):"], num_samples=2, temperature=1.0, max_new_tokens=4, seed=0)
    micro = _micro_batch(rollout, loss_mask(rollout.completion_mask, rollout.truncated, False), slice(0, 2),
                         torch.device("cpu"))
    reference = module._reference_logps(micro)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    with torch.no_grad():
        expected, _ = completion_logprobs(base, micro["input_ids"], micro["attention_mask"],
                                          micro["completion_ids"], micro["completion_mask"])
        current, _ = completion_logprobs(module.policy.model, micro["input_ids"], micro["attention_mask"],
                                         micro["completion_ids"], micro["completion_mask"])
    assert torch.allclose(reference, expected, atol=1e-5)
    assert not torch.allclose(current, expected, atol=1e-3)  # the adapter was trained and is back on


@pytest.mark.parametrize("aggregation", ["grpo", "dr_grpo", "dapo"])
def test_micro_batches_accumulate_to_the_full_batch_update(tiny_dir, tmp_path, aggregation):
    def one_step(micro: int | None) -> dict[str, torch.Tensor]:
        L.seed_everything(0)
        module = toy_module(tiny_dir, lr=1e-3, grpo=GRPOConfig(aggregation=aggregation, micro_batch_size=micro))
        trainer(tmp_path, 1).fit(module, loader([induction(1), induction(2)], 2))
        return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}

    full, split = one_step(None), one_step(3)
    assert any((p != 0).any() for n, p in full.items() if "lora_B" in n)
    for name, param in full.items():
        assert torch.allclose(param, split[name], atol=1e-6), name


def test_learning_rate_follows_the_schedule(tiny_dir, tmp_path):
    record = StepMetrics()
    module = GRPOModule(policy=PolicyConfig(model=tiny_dir, lora_r=2, device="cpu"),
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=2),
                        optim=OptimConfig(lr=1e-3, warmup_ratio=0.25, scheduler="cosine"),
                        sandbox=SandboxConfig(backend="none"), reward=CharacterShareReward())
    trainer(tmp_path, 4, [record]).fit(module, loader([induction(1)] * 4, 1))
    expected = [1e-3 * WarmupDecaySchedule(4, 1, "cosine")(s) for s in range(4)]
    assert record.series("train/lr") == pytest.approx(expected)


def test_schedule_is_resized_when_the_pool_grows_after_the_optimizer_exists(tiny_dir, tmp_path):
    """A bootstrap/refresh fills the pool after `configure_optimizers`: the schedule must follow."""
    from laimark_pl.datamodules.curriculum import CurriculumDataModule

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    class Bootstrap(Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.datamodule.set_pool([induction(i) for i in range(4)])

    record = StepMetrics()
    module = GRPOModule(policy=PolicyConfig(model=tiny_dir, lora_r=2, device="cpu"),
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=2),
                        optim=OptimConfig(lr=1e-3, warmup_ratio=0.25, scheduler="cosine"),
                        sandbox=SandboxConfig(backend="none"), reward=CharacterShareReward())
    data = CurriculumDataModule(path=str(empty), batch_size=1, shuffle=False, eval_set="none")
    L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              default_root_dir=str(tmp_path), reload_dataloaders_every_n_epochs=1,
              callbacks=[Bootstrap(), record]).fit(module, data)
    lrs = record.series("train/lr")
    expected = [1e-3 * WarmupDecaySchedule(8, 2, "cosine")(s) for s in range(8)]
    assert lrs == pytest.approx(expected)  # 8 steps, 2 of warm-up: not "1 step, then 0"


def test_adapter_weights_stay_float32_under_bf16_true(tiny_dir, tmp_path):
    module = GRPOModule(policy=PolicyConfig(model=tiny_dir, lora_r=2, device="cpu"),
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=2),
                        sandbox=SandboxConfig(backend="none"), reward=CharacterShareReward())
    trainer(tmp_path, 1, precision="bf16-true").fit(module, loader([induction(1)], 1))
    dtypes = {p.dtype for p in module.policy.trainable_parameters()}
    frozen = {p.dtype for p in module.parameters() if not p.requires_grad}
    assert dtypes == {torch.float32} and frozen == {torch.bfloat16}


def test_checkpoint_keeps_the_evolved_system_prompt(tiny_dir, tmp_path):
    module = toy_module(tiny_dir, system_prompt="initial")
    tr = trainer(tmp_path, 1)
    tr.fit(module, loader([induction(1)], 1))
    module.system_prompt = "evolved by prompt evolution"
    tr.save_checkpoint(tmp_path / "p.ckpt")
    loaded = GRPOModule.load_from_checkpoint(tmp_path / "p.ckpt", reward=CharacterShareReward("etaoin"))
    assert loaded.system_prompt == "evolved by prompt evolution"


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="num_generations"):
        SamplingConfig(num_generations=1)
    with pytest.raises(ValueError, match="MLflow"):
        EvalConfig(metric_name="pass@1")
    with pytest.raises(ValueError, match="num_iterations"):
        GRPOConfig(num_iterations=0)
    with pytest.raises(ValueError, match="answer_mode"):
        GRPOModule(answer_mode="half")


def test_code_reward_without_sandbox_fails_clearly(tiny_dir, tmp_path):
    module = GRPOModule(policy=PolicyConfig(model=tiny_dir, lora_r=2, device="cpu"),
                        sampling=SamplingConfig(num_generations=2, max_new_tokens=2),
                        sandbox=SandboxConfig(backend="none"))
    with pytest.raises(ValueError, match="needs a sandbox"):
        trainer(tmp_path, 1).fit(module, loader([induction(1)], 1))


def _gpu_steps(tiny_dir, tmp_path, **policy_kwargs) -> list[dict[str, float]]:
    class OnDevice(StepMetrics):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            self.steps[-1]["on_cuda"] = float(next(pl_module.policy.model.parameters()).is_cuda)
            self.steps[-1]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30

    L.seed_everything(0)
    record = OnDevice()
    module = GRPOModule(
        policy=PolicyConfig(model=tiny_dir, lora_r=8, lora_alpha=16, lora_dropout=0.0, **policy_kwargs),
        sampling=SamplingConfig(num_generations=4, max_new_tokens=16),
        grpo=GRPOConfig(beta=0.04), optim=OptimConfig(lr=1e-2, warmup_ratio=0.0),
        sandbox=SandboxConfig(backend="none"), reward=CharacterShareReward("etaoin"),
    )
    L.Trainer(max_steps=3, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, default_root_dir=str(tmp_path), callbacks=[record]).fit(
        module, loader([induction(i) for i in range(4)] * 3, 4))
    assert all(step["on_cuda"] == 1.0 for step in record.steps)
    print({k: round(v, 4) for k, v in record.steps[-1].items() if k.startswith("time/") or k == "peak_gib"})
    return record.steps


@pytest.mark.gpu
def test_gpu_bf16_steps(tiny_dir, tmp_path):
    steps = _gpu_steps(tiny_dir, tmp_path, dtype="bfloat16", gradient_checkpointing=True)
    assert len(steps) == 3 and all(math.isfinite(s["train/loss"]) for s in steps)
    assert all(0 < s["memory/generation_peak_gib"] <= s["peak_gib"] for s in steps)
    assert all(0 < s["memory/training_peak_gib"] <= s["peak_gib"] for s in steps)


@pytest.mark.gpu
def test_gpu_4bit_steps(tiny_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    steps = _gpu_steps(tiny_dir, tmp_path, dtype="bfloat16", load_in_4bit=True)
    assert len(steps) == 3 and all(math.isfinite(s["train/loss"]) for s in steps)


DDP_SCRIPT = '''
import json
import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from laimark_pl.modules.grpo import GRPOConfig, GRPOModule, SamplingConfig, SandboxConfig
from laimark_pl.modules.policy import PolicyConfig
from laimark_pl.problems import builtin_curriculum_path, read_problems


class RankReward:
    """Rank 0: every group constant (nothing to learn from); rank 1: groups of mixed rewards."""

    def __call__(self, problems, texts, sandbox=None):
        return [0.0 if dist.get_rank() == 0 else float(i % 2) for i in range(len(texts))]


def checksum(module):
    return float(sum(p.detach().double().sum() for p in module.policy.trainable_parameters()))


class Report(pl.Callback):
    def on_train_start(self, trainer, module):
        self.before = checksum(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.trained = float(trainer.callback_metrics["train/trained_completions"])


module = GRPOModule(policy=PolicyConfig(model="tiny", lora_r=4), reward=RankReward(),
                    sampling=SamplingConfig(num_generations=2, max_new_tokens=6),
                    grpo=GRPOConfig(dynamic_sampling=True, micro_batch_size=2), sandbox=SandboxConfig(backend="none"))
problems = read_problems(builtin_curriculum_path())[:8]
report = Report()
trainer = pl.Trainer(max_steps=2, accelerator="cpu", devices=2, strategy="ddp", logger=False, callbacks=[report],
                     enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
trainer.fit(module, DataLoader(problems, batch_size=2, collate_fn=list))
print("RESULT " + json.dumps({"rank": trainer.global_rank, "steps": trainer.global_step, "trained": report.trained,
                              "before": report.before, "after": checksum(module)}), flush=True)
'''


def test_dynamic_sampling_under_ddp_keeps_ranks_in_step(tmp_path):
    """Rank 0 keeps no group, rank 1 keeps all: both still make every backward pass (no hang),
    and the adapter that comes out is the same on both, trained by rank 1's groups."""
    script = tmp_path / "ddp_dynamic_sampling.py"
    script.write_text(DDP_SCRIPT)
    checkout = str(Path(__file__).resolve().parents[1])  # this checkout's package, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (checkout, os.environ.get("PYTHONPATH")))),
           "LAIMARK_CACHE": str(tmp_path / "cache")}  # both ranks build "tiny" at once
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=180)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the two ranks hung: {(exc.stderr or b'')[-2000:]!r}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["rank"]: r for r in (json.loads(line[7:]) for line in done.stdout.splitlines()
                                      if line.startswith("RESULT "))}
    assert set(results) == {0, 1} and all(r["steps"] == 2 for r in results.values())
    assert results[0]["trained"] == 0.0 and results[1]["trained"] == 4.0
    assert results[0]["after"] == pytest.approx(results[1]["after"], rel=1e-9, abs=1e-9)
    assert results[0]["after"] != pytest.approx(results[0]["before"], rel=1e-9, abs=1e-9)
