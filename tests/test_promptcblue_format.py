"""The real PromptCBLUE format flows through the data layer and the `prepare` command.

These tests read ``../shared/data/promptcblue_toy`` on purpose: it holds real PromptCBLUE
lines (16 tasks), the only way to check format compatibility with the actual benchmark.
"""

from __future__ import annotations

import pytest

from moelora.data.encoding import load_split
from moelora.data.promptcblue import TABLE1, format_counts, main, prepare
from moelora.method.tasks import PAPER_TASKS, TaskMap
from moelora.utils.io import DataFormatError, read_json, read_jsonl
from tests.conftest import compose


def test_toy_dev_loads_with_the_paper_tasks_and_rejects_others(shared_dir):
    """Real lines carry 16 tasks: the 8 paper tasks load, the rest are refused unless dropped."""
    path = shared_dir / "data" / "promptcblue_toy" / "dev.json"
    with pytest.raises(DataFormatError, match=r"dev.json:\d+: unknown task_dataset"):
        load_split(path, TaskMap(PAPER_TASKS))
    records = load_split(path, TaskMap(PAPER_TASKS), drop_unlisted_tasks=True)
    assert {r["task_dataset"] for r in records} == set(PAPER_TASKS)


def test_toy_test_split_without_gold_is_refused(shared_dir):
    """The toy test split has empty targets: it cannot serve as a gold split."""
    path = shared_dir / "data" / "promptcblue_toy" / "test.json"
    with pytest.raises(DataFormatError, match="every target is empty"):
        load_split(path, TaskMap(PAPER_TASKS), drop_unlisted_tasks=True)


def test_promptcblue_toy_config_points_at_the_shared_folder(shared_dir, repo_root):
    """data=promptcblue_toy reads the shared toy files (dev as test)."""
    cfg = compose(
        ["data=promptcblue_toy", f"paths.root_dir={repo_root}", "model=hf", "model.path=/x"]
    )
    from moelora.harness.runner import load_splits

    splits = load_splits(cfg, TaskMap(cfg.data.tasks))
    assert len(splits["test"]) == 8 * 5 and len(splits["train"]) == 8 * 5


def test_prepare_builds_the_paper_split(shared_dir, tmp_path, capsys):
    """prepare keeps the 8 tasks, dedupes, uses dev as test and carves validation from train."""
    src = tmp_path / "src"
    src.mkdir()
    toy = shared_dir / "data" / "promptcblue_toy"
    train = (toy / "train.json").read_text(encoding="utf-8")
    first = train.splitlines()[0]
    (src / "train.json").write_text(train + first + "\n", encoding="utf-8")  # one duplicate
    (src / "dev.json").write_text((toy / "dev.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["--src", str(src), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "CHIP-CTC" in out and "1100" in out  # counts printed next to Table 1's
    meta = read_json(tmp_path / "out" / "meta.json")
    assert meta["duplicates_removed"]["train"] == 1
    train_out = read_jsonl(tmp_path / "out" / "train.jsonl")
    dev_out = read_jsonl(tmp_path / "out" / "dev.jsonl")
    test_out = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert {r["task_dataset"] for r in test_out} == set(PAPER_TASKS)
    ids = [r["sample_id"] for r in train_out + dev_out]
    assert len(ids) == len(set(ids))  # validation carved out of train, disjoint
    for task in PAPER_TASKS:
        tr, va, te = meta["counts"][task]
        assert (
            te == 5 and va == 2 and tr == 3
        )  # 5 per task: half the pool at most goes to validation
    assert set(TABLE1) == set(PAPER_TASKS)
    assert "2828" in format_counts(meta["counts"])
    # deterministic for a seed
    again = prepare(src, tmp_path / "again", seed=42)
    assert again["counts"] == meta["counts"]
    assert (tmp_path / "again" / "dev.jsonl").read_text() == (
        tmp_path / "out" / "dev.jsonl"
    ).read_text()
