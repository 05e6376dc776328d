"""`PromptEvolution`: evolve the training/evaluation system prompt with the policy itself.

At fit start (the study's step 1) and, optionally, every N epochs on the updated weights (its
step 3, "prompt re-optimisation"), it runs `laimark_pl.prompt_evolution.evolve_prompt` seeded
with the module's current system prompt (or the operational one), sets the winner as
``pl_module.system_prompt`` (used by GRPO sampling and evaluation) and logs it: metrics
``prompt_evolution/best_fitness`` and ``prompt_evolution/seed_fitness``, and the prompt text plus
the search history as files (MLflow artifacts when an MLflow logger is attached).

Fitness is measured on a held-out file of SELF-GENERATED problems; a HumanEval-sourced file is
refused at setup. A search that fails keeps the current prompt and training goes on.

Example (YAML for ``laimark fit``)::

    trainer:
      callbacks:
        - class_path: laimark_pl.callbacks.prompt_evolution.PromptEvolution
          init_args: {population: 6, generations: 3, every_n_epochs: 1}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from laimark_pl.callbacks.curriculum_refresh import log_artifacts, publish_metrics, run_seed
from laimark_pl.generation import TextGenerator
from laimark_pl.problems import Problem, builtin_heldout_path, read_problems
from laimark_pl.prompt_evolution import EvolutionConfig, check_heldout, evolve_prompt
from laimark_pl.prompts import OPERATIONAL_SYSTEM_PROMPT

PREFIX = "prompt_evolution/"


class PromptEvolution(pl.Callback):
    """Sets ``pl_module.system_prompt`` to the best prompt found on held-out self-generated problems.

    Args:
        heldout: JSONL of held-out self-generated problems (never HumanEval; keep them out of
            the training pool). ``None``: the small held-out set shipped with the package.
        population: prompts kept per generation.
        generations: generations per search.
        elite: best prompts carried over unchanged.
        crossover_share: share of offspring made by crossover.
        eval_samples: answers per held-out problem when scoring a prompt.
        eval_temperature: scoring temperature (0 = greedy pass@1).
        max_new_tokens: answer length limit when scoring.
        mutation_temperature: sampling temperature of the meta-prompts.
        at_fit_start: search before the first training step.
        every_n_epochs: search again after every N-th epoch on the updated weights (0: never).
        seed: base seed (search ``n`` uses ``seed + n``); ``None``: the run's ``seed_everything``.
        output_dir: where prompts and histories go (default ``<default_root_dir>/prompt_evolution``).
        generator: search with this model instead of ``pl_module.policy``.
    """

    def __init__(
        self,
        heldout: str | None = None,
        population: int = 6,
        generations: int = 3,
        elite: int = 2,
        crossover_share: float = 0.3,
        eval_samples: int = 1,
        eval_temperature: float = 0.0,
        max_new_tokens: int = 1024,
        mutation_temperature: float = 0.9,
        at_fit_start: bool = True,
        every_n_epochs: int = 0,
        seed: int | None = None,
        output_dir: str | None = None,
        generator: TextGenerator | None = None,
    ) -> None:
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0, got {every_n_epochs}")
        self.heldout_path = heldout or str(builtin_heldout_path())
        self.config = EvolutionConfig(
            population=population, generations=generations, elite=elite, crossover_share=crossover_share,
            eval_samples=eval_samples, eval_temperature=eval_temperature, eval_max_new_tokens=max_new_tokens,
            mutation_temperature=mutation_temperature)
        self.seed = seed
        self.at_fit_start = at_fit_start
        self.every_n_epochs = every_n_epochs
        self.output_dir = output_dir
        self.generator = generator
        self.searches = 0
        self.heldout: list[Problem] = []
        self.history: list[dict[str, Any]] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.heldout:
            return
        if not Path(self.heldout_path).is_file():
            raise FileNotFoundError(f"PromptEvolution: held-out file not found: {self.heldout_path}")
        self.heldout = read_problems(self.heldout_path)
        check_heldout(self.heldout)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pool = getattr(trainer.datamodule, "pool", None) or []
        shared = {p.entry_point for p in pool} & {p.entry_point for p in self.heldout}
        if shared:
            rank_zero_warn(f"PromptEvolution: held-out problems also in the training pool: {sorted(shared)[:5]}")
        if self.at_fit_start:
            self.search(trainer, pl_module, trigger="fit start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.search(trainer, pl_module, trigger=f"epoch {trainer.current_epoch}")

    def state_dict(self) -> dict[str, Any]:
        return {"searches": self.searches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.searches = int(state_dict.get("searches", 0))

    def search(self, trainer: pl.Trainer, pl_module: pl.LightningModule, trigger: str = "manual") -> str | None:
        """Run one search now and install the winner; returns the module's system prompt after it.
        Runs on global rank zero; the prompt is broadcast to the other ranks."""
        self.searches += 1
        prompt: str | None = getattr(pl_module, "system_prompt", None)
        if trainer.is_global_zero:
            prompt = self._search(trainer, pl_module, trigger, prompt)
        prompt = trainer.strategy.broadcast(prompt, src=0)
        pl_module.system_prompt = prompt
        return prompt

    def _search(self, trainer: pl.Trainer, pl_module: pl.LightningModule, trigger: str,
                current: str | None) -> str | None:
        if not self.heldout:
            self.setup(trainer, pl_module, "fit")
        generator = self.generator or getattr(pl_module, "policy", None)
        sandbox = getattr(pl_module, "sandbox", None)
        record: dict[str, Any] = {"search": self.searches, "trigger": trigger, "epoch": trainer.current_epoch}
        was_training = pl_module.training
        pl_module.eval()
        try:
            if generator is None or sandbox is None:
                raise AttributeError(f"{type(pl_module).__name__} needs .policy and .sandbox for PromptEvolution")
            config = EvolutionConfig(**{**self.config.__dict__, "seed": run_seed(self.seed) + self.searches})
            with torch.no_grad():
                result = evolve_prompt(generator, sandbox, self.heldout, config,
                                       initial=(current or OPERATIONAL_SYSTEM_PROMPT,), progress=False)
        except Exception as exc:  # a failed search must never stop training
            rank_zero_warn(f"prompt evolution {self.searches} ({trigger}) failed, keeping the current prompt: "
                           f"{type(exc).__name__}: {exc}")
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
            self.history.append(record)
            publish_metrics(trainer, {f"{PREFIX}failed": 1.0})
            return current
        finally:
            pl_module.train(was_training)
        metrics = {f"{PREFIX}best_fitness": result.best.fitness, f"{PREFIX}seed_fitness": result.baseline.fitness,
                   f"{PREFIX}prompts_rejected": float(sum(result.rejected.values())), f"{PREFIX}failed": 0.0}
        record.update(status="ok", best=result.best.__dict__, seed=result.baseline.__dict__,
                      history=result.history, rejected=dict(result.rejected))
        self.history.append(record)
        publish_metrics(trainer, metrics)
        base = Path(self.output_dir or Path(trainer.default_root_dir) / "prompt_evolution")
        base.mkdir(parents=True, exist_ok=True)
        text = base / f"system_prompt_{self.searches:03d}.txt"
        text.write_text(result.best.prompt + "\n", encoding="utf-8")
        history = base / f"search_{self.searches:03d}.json"
        history.write_text(json.dumps(record, indent=1))
        log_artifacts(trainer, [text, history], "prompt_evolution")
        rank_zero_info(f"prompt evolution {self.searches} ({trigger}): fitness {result.baseline.fitness:.3f} -> "
                       f"{result.best.fitness:.3f}")
        return result.best.prompt
