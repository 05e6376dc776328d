"""`GRPOModule`: GRPO on a LoRA adapter, as a LightningModule.

One training step, for a batch of `Problem`:

1. sample ``num_generations`` completions for every problem in ONE batched generation call;
2. score all of them in ONE parallel sandbox call (or any `RewardFunction`);
3. group advantages; optionally drop groups whose rewards are all equal (dynamic sampling);
4. reference log-probs (adapter disabled, same weights) when ``beta > 0``;
5. ``num_iterations`` optimizer steps on the rollout (micro-batched, gradients accumulated),
   each followed by an LR-scheduler step.

Validation/test greedily answer a batch of problems (HumanEval from the datamodule), score
them in the sandbox and log the pass rate as ``eval.metric_name``. Checkpoints keep only the
trainable (LoRA) weights and the optimizer state; the base model is reloaded from
``policy.model``. At the end of ``fit`` the adapter is written in peft format to
``<default_root_dir>/adapter``.

Logged every training step (set the trainer's ``log_every_n_steps: 1`` to see each one):
``train/reward_mean``, ``train/reward_std``, ``train/zero_variance_group_share``,
``train/pass_rate/<problem type>`` (share of completions with reward >= 1),
``train/completion_length_mean|max``, ``train/truncated_share``, ``train/kl``,
``train/clip_ratio_low|high|region``, ``train/entropy``, ``train/loss``, ``train/grad_norm``,
``train/lr``, ``train/trained_completions`` (after dynamic sampling),
``time/generation_s|sandbox_s|training_s``, ``train/generated_tokens_per_s`` and, on CUDA,
``memory/generation_peak_gib|training_peak_gib`` (peak allocated memory of each phase; the
CUDA peak statistics are reset at the start of each phase).

Example (YAML for ``laimark fit``)::

    model:
      policy: {model: Qwen/Qwen3-8B, lora_r: 16, lora_alpha: 32}
      sampling: {num_generations: 4, max_new_tokens: 1024}
      optim: {lr: 5.0e-6, warmup_ratio: 0.1}
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from laimark_pl.evaluation.humaneval import score
from laimark_pl.modules.logprobs import completion_logprobs
from laimark_pl.modules.losses import (
    AdvantageScaling,
    Aggregation,
    constant_groups,
    group_advantages,
    grpo_loss,
    loss_mask,
    masked_mean,
)
from laimark_pl.modules.policy import Policy, PolicyConfig, Rollout, attention_kernels, load_policy
from laimark_pl.modules.rewards import CodeExecutionReward, RewardFunction
from laimark_pl.modules.schedule import WarmupDecaySchedule
from laimark_pl.problems import Problem
from laimark_pl.prompts import AnswerMode, user_prompt
from laimark_pl.sandbox.types import Sandbox

_MLFLOW_METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-./ ]+$")


@dataclass
class SamplingConfig:
    """How completions are sampled during training.

    Args:
        num_generations: completions per problem (the group size G).
        temperature: sampling temperature (> 0); log-probs use the same temperature.
        top_p: nucleus sampling threshold.
        max_new_tokens: most tokens per completion (also the ``dr_grpo`` normaliser).
    """

    num_generations: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ValueError(f"sampling.num_generations must be >= 2 (GRPO compares within a group), "
                             f"got {self.num_generations}")
        if self.temperature <= 0:
            raise ValueError(f"sampling.temperature must be > 0, got {self.temperature}")


@dataclass
class GRPOConfig:
    """The GRPO objective and how a rollout is trained on.

    Args:
        num_iterations: optimizer steps per rollout; > 1 reuses it with importance ratios
            against its sampling-time log-probs.
        epsilon_low: lower clip range (ratio >= 1 - epsilon_low).
        epsilon_high: upper clip range (ratio <= 1 + epsilon_high); > epsilon_low is
            DAPO's clip-higher.
        beta: weight of the k3 KL penalty against the reference (adapter disabled); 0 skips
            the reference forward pass.
        advantage_scaling: divide centred rewards by the ``group`` std, the ``batch`` std, or
            ``none`` (Dr. GRPO).
        aggregation: token aggregation: ``grpo`` (per-sequence mean), ``dr_grpo`` (sum /
            (sequences * max_new_tokens)), ``dapo`` (mean over the batch's tokens).
        mask_truncated: leave completions that hit ``max_new_tokens`` out of the loss.
        dynamic_sampling: drop groups whose rewards are all equal before the update (under
            several processes they stay in the micro-batches but out of the loss: every rank
            makes the same backward passes, which DDP synchronises).
        micro_batch_size: completions per forward/backward pass (gradients accumulate over
            the rollout); ``None`` = the whole rollout at once.
        logprob_chunk_size: completion tokens per chunk of the log-prob computation.
    """

    num_iterations: int = 1
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    advantage_scaling: AdvantageScaling = "group"
    aggregation: Aggregation = "grpo"
    mask_truncated: bool = False
    dynamic_sampling: bool = False
    micro_batch_size: int | None = None
    logprob_chunk_size: int = 256

    def __post_init__(self) -> None:
        if self.num_iterations < 1:
            raise ValueError(f"grpo.num_iterations must be >= 1, got {self.num_iterations}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ValueError(f"grpo.micro_batch_size must be >= 1 or null, got {self.micro_batch_size}")


@dataclass
class OptimConfig:
    """AdamW on the adapter with linear warm-up and a decay schedule.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_ratio: share of all optimizer steps spent warming up linearly from 0.
        scheduler: decay after warm-up: ``cosine`` (to 0), ``linear`` (to 0) or ``constant``.
        max_grad_norm: clip the gradient norm to this value; ``None`` disables clipping.
    """

    lr: float = 5e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = 0.1
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = 1.0


@dataclass
class SandboxConfig:
    """Where rewards' and evaluation's code runs (`laimark_pl.sandbox.create`).

    Args:
        backend: ``process`` (isolated worker processes), ``docker`` (hardened containers),
            or ``none`` (no sandbox: only for rewards that do not execute code).
        workers: parallel workers; ``None`` = one per CPU core.
        timeout_s: wall-clock limit per program.
        memory_mb: memory limit per program.
    """

    backend: Literal["process", "docker", "none"] = "process"
    workers: int | None = None
    timeout_s: float = 5.0
    memory_mb: int = 512


@dataclass
class EvalConfig:
    """Greedy evaluation in ``validate``/``test`` (HumanEval from the datamodule).

    Args:
        metric_name: name of the logged pass rate (a valid MLflow metric name).
        max_new_tokens: most tokens per answer.
    """

    metric_name: str = "humaneval_pass_at_1"
    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if not _MLFLOW_METRIC_NAME.match(self.metric_name):
            raise ValueError(f"eval.metric_name {self.metric_name!r} is not a valid MLflow metric name "
                             "(letters, digits, '_', '-', '.', '/' and spaces)")


class GRPOModule(L.LightningModule):
    """GRPO training of a LoRA adapter on code problems, with sandboxed rewards.

    Args:
        policy: base model, adapter and generation settings.
        sampling: training-time sampling (group size, temperature, length).
        grpo: the objective (clipping, KL, aggregation, iterations, micro-batches).
        optim: optimizer and learning-rate schedule.
        sandbox: where generated code runs.
        reward: reward function; default `CodeExecutionReward` (1 if the tests pass).
        system_prompt: system message for every prompt (prompt evolution may replace it
            between epochs); ``None`` sends none.
        answer_mode: ask for the function ``body`` or the ``full`` function.
        eval: greedy evaluation settings for ``validate``/``test``.
    """

    def __init__(
        self,
        policy: PolicyConfig = PolicyConfig(),
        sampling: SamplingConfig = SamplingConfig(),
        grpo: GRPOConfig = GRPOConfig(),
        optim: OptimConfig = OptimConfig(),
        sandbox: SandboxConfig = SandboxConfig(),
        reward: RewardFunction | None = None,
        system_prompt: str | None = None,
        answer_mode: AnswerMode = "full",
        eval: EvalConfig = EvalConfig(),
    ):
        super().__init__()
        policy, sampling = _config(PolicyConfig, policy), _config(SamplingConfig, sampling)
        grpo, optim = _config(GRPOConfig, grpo), _config(OptimConfig, optim)
        sandbox, eval = _config(SandboxConfig, sandbox), _config(EvalConfig, eval)
        if answer_mode not in ("full", "body"):
            raise ValueError(f"answer_mode must be 'full' or 'body', got {answer_mode!r}")
        # plain values: loggers flatten them (policy/model, grpo/beta, ...) and weights-only loading reads
        # them; `setup` logs them (renaming one, see `_log_hyperparameters`), not Lightning
        self.save_hyperparameters(_plain({
            "policy": policy, "sampling": sampling, "grpo": grpo, "optim": optim, "sandbox": sandbox,
            "system_prompt": system_prompt, "answer_mode": answer_mode, "eval": eval,
        }), logger=False)
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints carry only the adapter
        self.policy_config = policy
        self.sampling = sampling
        self.grpo = grpo
        self.optim = optim
        self.sandbox_config = sandbox
        self.eval_config = eval
        self.reward = reward if reward is not None else CodeExecutionReward()
        self.system_prompt = system_prompt
        self.answer_mode: AnswerMode = answer_mode
        self.policy: Policy | None = None
        self.sandbox: Sandbox | None = None
        self.final_adapter_dir: Path | None = None
        self.last_eval_records: list[dict[str, Any]] = []
        self._eval_records: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- lifecycle
    def configure_model(self) -> None:
        """Load the policy once, on the trainer's device."""
        if self.policy is not None:
            return
        device = self._trainer.strategy.root_device if self._trainer is not None else None
        self.policy = load_policy(self.policy_config, device=device)

    def setup(self, stage: str) -> None:
        self._log_hyperparameters()
        if self.sandbox is None and self.sandbox_config.backend != "none":
            from laimark_pl.sandbox import create

            cfg = self.sandbox_config
            self.sandbox = create(cfg.backend, workers=cfg.workers, timeout_s=cfg.timeout_s,
                                  memory_mb=cfg.memory_mb)

    def _log_hyperparameters(self) -> None:
        """The init arguments as the loggers' params, the system prompt as ``initial_system_prompt``:
        prompt evolution may replace it during the run, and the model that `RegistryCallback` logs
        at the end records the final one as ``system_prompt`` (MLflow refuses to change a param)."""
        if self._trainer is None:
            return
        hparams = dict(self.hparams_initial)
        hparams["initial_system_prompt"] = hparams.pop("system_prompt", None)
        for logger in self.loggers:
            logger.log_hyperparams(hparams)

    def teardown(self, stage: str) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, list) and all(isinstance(p, Problem) for p in batch):
            return batch  # problems are text; tensors are made on the device after sampling
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self) -> dict:
        params = self._policy().trainable_parameters()
        if not params:
            raise ValueError("the policy has no trainable parameters (policy.trainable is false?)")
        for p in params:  # fp32 master weights: under bf16-true a 5e-6 update of a bf16 weight is lost
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=self.optim.lr, betas=tuple(self.optim.betas),
                                      weight_decay=self.optim.weight_decay)
        total = self._total_optimizer_steps()
        warmup = int(round(self.optim.warmup_ratio * total)) if total else 0
        self._schedule = WarmupDecaySchedule(total, warmup, self.optim.scheduler)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_optimizer_steps(self) -> int | None:
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps  # global_step counts optimizer steps
        batches = trainer.estimated_stepping_batches
        if not math.isfinite(batches):
            return None
        return max(1, int(batches) * self.grpo.num_iterations)

    def on_train_epoch_start(self) -> None:
        """Re-size the LR schedule to the pool this epoch serves: a curriculum refresh (or the
        bootstrap of an empty pool) changes the number of steps left after the optimizer exists."""
        schedule: WarmupDecaySchedule | None = getattr(self, "_schedule", None)
        trainer = self.trainer
        if (schedule is None or (trainer.max_steps or -1) > 0 or trainer.max_epochs is None
                or trainer.max_epochs < 0 or not math.isfinite(trainer.num_training_batches)):
            return
        scheduler = self.lr_schedulers()
        done = scheduler.last_epoch  # scheduler steps taken so far
        left = int(trainer.num_training_batches) * (trainer.max_epochs - trainer.current_epoch)
        schedule.total_steps = max(1, done + left * self.grpo.num_iterations)
        if done == 0:  # nothing trained yet: size the warm-up too, and restart from its first LR
            schedule.warmup_steps = int(round(self.optim.warmup_ratio * schedule.total_steps))
            for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
                group["lr"] = base_lr * schedule(0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep only trainable (adapter) weights (the frozen base is reloaded from the hub/disk) and
        the system prompt in use (prompt evolution may have changed it)."""
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}
        checkpoint["laimark_system_prompt"] = self.system_prompt

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Load the base model first, so ``GRPOModule.load_from_checkpoint`` restores the adapter."""
        self.configure_model()
        if "laimark_system_prompt" in checkpoint:
            self.system_prompt = checkpoint["laimark_system_prompt"]

    @rank_zero_only
    def on_train_end(self) -> None:
        self.final_adapter_dir = self._policy().save_adapter(Path(self.trainer.default_root_dir) / "adapter")

    # ----------------------------------------------------------------- training
    def training_step(self, batch: list[Problem], batch_idx: int) -> None:
        policy = self._policy()
        cfg, group_size = self.sampling, self.sampling.num_generations
        memory = _PeakMemory(self.device)
        start = time.perf_counter()
        rollout = policy.sample([user_prompt(p, self.answer_mode) for p in batch], num_samples=group_size,
                                temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens, system_prompt=self.system_prompt)
        generation_s = time.perf_counter() - start
        generation_peak_gib = memory.peak_gib()
        start = time.perf_counter()
        problems = [p for p in batch for _ in range(group_size)]
        rewards = torch.tensor(self.reward(problems, rollout.texts, sandbox=self.sandbox), dtype=torch.float32)
        sandbox_s = time.perf_counter() - start

        advantages = group_advantages(rewards, group_size, self.grpo.advantage_scaling)
        constant = constant_groups(rewards, group_size)
        metrics = self._rollout_metrics(batch, rollout, rewards, constant)
        metrics["time/generation_s"] = generation_s
        metrics["time/sandbox_s"] = sandbox_s
        metrics["train/generated_tokens_per_s"] = float(rollout.completion_lengths.sum()) / max(generation_s, 1e-9)
        keep = None
        if self.grpo.dynamic_sampling:
            keep = ~constant.repeat_interleave(group_size)
            if self.trainer.world_size == 1:
                rollout, advantages, keep = rollout.select(keep), advantages[keep], None
        trained = float(len(rollout) if keep is None else keep.sum())
        metrics["train/trained_completions"] = trained
        trained_anywhere = trained
        if keep is not None:  # one rank must not skip a backward pass the others make (DDP all-reduces in it)
            trained_anywhere = float(self.trainer.strategy.reduce(torch.tensor(trained, device=self.device),
                                                                  reduce_op="sum"))

        metrics["train/lr"] = self.optimizers().optimizer.param_groups[0]["lr"]
        memory.reset()
        start = time.perf_counter()
        if trained_anywhere:
            with attention_kernels():
                metrics.update(self._optimize(rollout, advantages, keep))
        else:  # every group was constant (on every rank): no update, but the schedule still counts the batch
            for _ in range(self.grpo.num_iterations):
                self.lr_schedulers().step()
        metrics["time/training_s"] = time.perf_counter() - start
        if memory.enabled:
            metrics["memory/generation_peak_gib"] = generation_peak_gib
            metrics["memory/training_peak_gib"] = memory.peak_gib()
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch))
        self.log("reward", metrics["train/reward_mean"], prog_bar=True, logger=False, on_step=True,
                 batch_size=len(batch))

    def _rollout_metrics(self, batch: list[Problem], rollout: Rollout, rewards: Tensor,
                         constant: Tensor) -> dict[str, float]:
        lengths = rollout.completion_lengths.float()
        metrics = {
            "train/reward_mean": rewards.mean().item(),
            "train/reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
            "train/zero_variance_group_share": constant.float().mean().item(),
            "train/completion_length_mean": lengths.mean().item(),
            "train/completion_length_max": lengths.max().item(),
            "train/truncated_share": rollout.truncated.float().mean().item(),
        }
        passed_by_type: dict[str, list[float]] = defaultdict(list)
        for problem, passed in zip(batch, (rewards >= 1.0).view(len(batch), -1), strict=True):
            passed_by_type[problem.problem_type].extend(passed.float().tolist())
        for kind, values in passed_by_type.items():
            metrics[f"train/pass_rate/{kind}"] = sum(values) / len(values)
        return metrics

    def _optimize(self, rollout: Rollout, advantages: Tensor, keep: Tensor | None = None) -> dict[str, float]:
        """``num_iterations`` optimizer steps on one rollout, micro-batched; returns mean stats.

        ``keep``: the rows that count (dynamic sampling under several processes: the others stay
        in the micro-batches, so that every rank makes the same backward passes, but out of the loss).
        """
        policy, grpo = self._policy(), self.grpo
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        device = self.device
        mask = loss_mask(rollout.completion_mask, rollout.truncated, grpo.mask_truncated)
        sequences = len(rollout)
        if keep is not None:
            mask, sequences = mask * keep.float().unsqueeze(1), int(keep.sum())
        advantages = advantages.to(device)
        size = grpo.micro_batch_size or len(rollout)
        slices = [slice(i, min(i + size, len(rollout))) for i in range(0, len(rollout), size)]
        micro = [_micro_batch(rollout, mask, s, device) for s in slices]
        total_tokens = float(mask.sum())
        ref_logps = [self._reference_logps(m) for m in micro] if grpo.beta > 0 else [None] * len(micro)
        old_logps: list[Tensor | None] = [None] * len(micro)
        sums: dict[str, float] = defaultdict(float)
        for iteration in range(grpo.num_iterations):
            optimizer.zero_grad()
            for k, (m, rows) in enumerate(zip(micro, slices, strict=True)):
                logps, entropy = completion_logprobs(
                    policy.model, m["input_ids"], m["attention_mask"], m["completion_ids"],
                    m["completion_mask"], temperature=self.sampling.temperature,
                    chunk_size=grpo.logprob_chunk_size, with_entropy=iteration == 0,
                )
                out = grpo_loss(
                    logps, advantages[rows], m["loss_mask"], old_logps=old_logps[k], ref_logps=ref_logps[k],
                    epsilon_low=grpo.epsilon_low, epsilon_high=grpo.epsilon_high, beta=grpo.beta,
                    aggregation=grpo.aggregation, max_completion_length=self.sampling.max_new_tokens,
                    total_sequences=sequences, total_tokens=total_tokens,
                )
                self.manual_backward(out.loss)
                if grpo.num_iterations > 1 and iteration == 0:
                    old_logps[k] = logps.detach()
                share = float(m["loss_mask"].sum()) / max(total_tokens, 1.0)
                sums["train/loss"] += out.loss.item()
                for name in ("kl", "clip_ratio_low", "clip_ratio_high", "clip_ratio_region"):
                    sums[f"train/{name}"] += getattr(out, name).item() * share / grpo.num_iterations
                if entropy is not None:
                    sums["train/entropy"] += masked_mean(entropy, m["loss_mask"]).item() * share
            if self.optim.max_grad_norm is not None:
                norm = _grad_norm(policy.trainable_parameters())
                self.clip_gradients(optimizer, gradient_clip_val=self.optim.max_grad_norm,
                                    gradient_clip_algorithm="norm")  # through the precision plugin
                sums["train/grad_norm"] += norm / grpo.num_iterations
            optimizer.step()
            scheduler.step()
        sums["train/loss"] /= grpo.num_iterations
        return dict(sums)

    @torch.no_grad()
    def _reference_logps(self, micro: dict[str, Tensor]) -> Tensor:
        """Log-probs under the base model: the same weights with the adapter switched off."""
        model = self._policy().model
        with model.disable_adapter():
            logps, _ = completion_logprobs(model, micro["input_ids"], micro["attention_mask"],
                                           micro["completion_ids"], micro["completion_mask"],
                                           temperature=self.sampling.temperature,
                                           chunk_size=self.grpo.logprob_chunk_size)
        return logps

    # ----------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._eval_records = []

    def on_test_epoch_start(self) -> None:
        self._eval_records = []

    def validation_step(self, batch: list[Problem], batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: list[Problem], batch_idx: int) -> None:
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_pass_rate()

    def on_test_epoch_end(self) -> None:
        self._log_pass_rate()

    def _evaluate(self, batch: list[Problem]) -> None:
        if self.sandbox is None:
            raise ValueError("evaluation runs code: set sandbox.backend to 'process' or 'docker'")
        texts = self._policy().generate_text(
            [user_prompt(p, self.answer_mode) for p in batch], num_samples=1, temperature=0.0,
            max_new_tokens=self.eval_config.max_new_tokens, system_prompt=self.system_prompt,
        )
        report = score(batch, texts, self.sandbox, mode=self.answer_mode, progress=False)  # the HumanEval harness
        for problem, result in zip(batch, report.results, strict=True):
            self._eval_records.append({
                "task_id": result.task_id,
                "uid": problem.uid,
                "problem_type": problem.problem_type,
                "passed": result.passed[0],
                "status": result.statuses[0],
                "detail": result.details[0],
                "completion": result.completions[0],
            })

    def _log_pass_rate(self) -> None:
        records = self._eval_records
        self.last_eval_records = records
        if records:
            rate = sum(r["passed"] for r in records) / len(records)
            self.log(self.eval_config.metric_name, rate, prog_bar=True, batch_size=len(records))

    def _policy(self) -> Policy:
        if self.policy is None:
            raise RuntimeError("the policy is loaded in configure_model(); run through a Trainer or call it")
        return self.policy


class _PeakMemory:
    """Peak CUDA memory of one phase of a step (no-op off CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.enabled = device.type == "cuda"
        self.device = device
        self.reset()

    def reset(self) -> None:
        if self.enabled:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.enabled else 0.0


def _micro_batch(rollout: Rollout, mask: Tensor, rows: slice, device: torch.device) -> dict[str, Tensor]:
    """Tensors for ``rows`` on ``device``, with all-padding prompt/completion columns trimmed."""
    prompt_mask = rollout.prompt_mask[rows]
    completion_mask = rollout.completion_mask[rows]
    first = int((prompt_mask.sum(0) > 0).nonzero()[0]) if prompt_mask.any() else 0
    width = max(1, int(completion_mask.sum(1).max()))
    prompt_ids = rollout.prompt_ids[rows, first:]
    completion_ids = rollout.completion_ids[rows, :width]
    completion_mask = completion_mask[:, :width]
    return {
        "input_ids": torch.cat([prompt_ids, completion_ids], 1).to(device),
        "attention_mask": torch.cat([prompt_mask[:, first:], completion_mask], 1).to(device),
        "completion_ids": completion_ids.to(device),
        "completion_mask": completion_mask.to(device),
        "loss_mask": mask[rows, :width].to(device),
    }


def _grad_norm(params: list[Tensor]) -> float:
    """Global L2 norm of the gradients (before clipping)."""
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _config(cls: type, value: Any) -> Any:
    """Accept a config dataclass or its dict form (as stored in checkpoints)."""
    return cls(**value) if isinstance(value, dict) else value


def _plain(value: Any) -> Any:
    """Dataclasses -> dicts and tuples -> lists, recursively (weights-only-loadable values)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
