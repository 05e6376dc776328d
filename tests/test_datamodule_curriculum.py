"""CurriculumDataModule: loading, batching, pool replacement and checkpoint state."""

import json

import pytest

from laimark_pl.datamodules.curriculum import CurriculumDataModule
from laimark_pl.problems import Problem, ProblemFileError, builtin_curriculum_path, read_problems


def _problem(i: int) -> Problem:
    return Problem(prompt=f"def f{i}(x):", tests=f"assert f{i}(1) == {i}", entry_point=f"f{i}")


def test_default_pool_is_the_shipped_curriculum_in_batches():
    dm = CurriculumDataModule(batch_size=4, eval_set="none", shuffle=False)
    dm.setup("fit")
    shipped = read_problems(builtin_curriculum_path())
    batches = list(dm.train_dataloader())
    assert [p for b in batches for p in b] == shipped
    assert all(isinstance(b, list) and len(b) <= 4 for b in batches)


def test_filters_and_cap():
    dm = CurriculumDataModule(problem_types=["deduction"], eval_set="none")
    dm.setup("fit")
    assert dm.pool and {p.problem_type for p in dm.pool} == {"deduction"}
    capped = CurriculumDataModule(max_problems=5, eval_set="none")
    capped.setup("fit")
    assert len(capped.pool) == 5


def test_shuffle_is_seeded():
    import lightning as L

    orders = []
    for _ in range(2):
        L.seed_everything(7)
        dm = CurriculumDataModule(batch_size=3, eval_set="none")
        dm.setup("fit")
        orders.append([p.uid for b in dm.train_dataloader() for p in b])
    assert orders[0] == orders[1]


def test_set_pool_reaches_next_dataloader_and_state_dict_round_trips():
    dm = CurriculumDataModule(batch_size=2, eval_set="none", shuffle=False)
    dm.setup("fit")
    new = [_problem(i) for i in range(3)]
    dm.set_pool(new)
    assert [p for b in dm.train_dataloader() for p in b] == new
    state = json.loads(json.dumps(dm.state_dict()))  # must be plain JSON-able data
    restored = CurriculumDataModule(eval_set="none")
    restored.load_state_dict(state)
    restored.setup("fit")  # a restored pool is not overwritten by the file
    assert restored.pool == new and restored.pool_version == dm.pool_version


def test_eval_sets(tmp_path):
    dm = CurriculumDataModule(eval_set="humaneval", eval_limit=5, eval_batch_size=2)
    dm.setup("validate")
    assert len(dm.eval_problems) == 5 and len(next(iter(dm.val_dataloader()))) == 2
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(_problem(1).to_record()) + "\n")
    dm = CurriculumDataModule(eval_set=str(path))
    dm.setup("test")
    assert len(dm.eval_problems) == 1
    with pytest.raises(ValueError, match="eval_set"):
        CurriculumDataModule(eval_set="nope").setup("validate")


def test_bad_arguments_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="problem_types"):
        CurriculumDataModule(problem_types=["poem"])
    with pytest.raises(ValueError, match="batch_size"):
        CurriculumDataModule(batch_size=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "def f():", "entry_point": "f"}\n')
    with pytest.raises(ProblemFileError, match="bad.jsonl:1: field 'tests'"):
        CurriculumDataModule(path=str(bad), eval_set="none").setup("fit")


def test_empty_pool_gives_an_empty_epoch(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    dm = CurriculumDataModule(path=str(empty), eval_set="none")
    dm.setup("fit")
    assert dm.pool == [] and list(dm.train_dataloader()) == []
