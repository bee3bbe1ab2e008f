"""moelora.evaluation.floors on a hand-made split, and the floors a real job records."""

from __future__ import annotations

import json

import pytest

from moelora.evaluation.floors import floor_scores, majority_targets
from moelora.utils.io import read_json

CMEIE_CHOICES = ["并发症", "病因"]
QIC_CHOICES = ["病因分析", "治疗方案", "其他"]


def triple(head: str, tail: str, predicate: str = "并发症") -> str:
    return f"具有{predicate}关系的头尾实体对如下：头实体为{head}，尾实体为{tail}。"


def rec(sid: str, task: str, input_: str, target: str, choices=None) -> dict:
    return {
        "sample_id": sid,
        "task_dataset": task,
        "input": input_,
        "target": target,
        "answer_choices": choices,
        "task_type": "x",
    }


TRAIN = [
    rec("t1", "CMeIE", "找出关系：甲并发乙", triple("甲", "乙"), CMEIE_CHOICES),
    rec("t2", "CMeIE", "找出关系：丙并发丁", triple("丙", "丁"), CMEIE_CHOICES),
    rec("t3", "CMeIE", "找出关系：甲并发乙", triple("甲", "乙"), CMEIE_CHOICES),
    rec("t4", "KUAKE-QIC", "意图：头疼怎么办", "治疗方案", QIC_CHOICES),
    rec("t5", "KUAKE-QIC", "意图：为什么头疼", "病因分析", QIC_CHOICES),
    rec("t6", "KUAKE-QIC", "意图：为什么咳嗽", "病因分析", QIC_CHOICES),
    rec("t7", "MedDG", "患者：发烧了", "注意休息", None),
]
TEST = [
    rec("s1", "CMeIE", "找出关系：甲并发乙", triple("甲", "乙"), CMEIE_CHOICES),
    rec("s2", "CMeIE", "找出关系：戊并发己", triple("戊", "己"), CMEIE_CHOICES),
    rec("s3", "KUAKE-QIC", "意图：为什么发烧", "病因分析", QIC_CHOICES),
    rec("s4", "KUAKE-QIC", "意图：发烧吃什么药", "治疗方案", QIC_CHOICES),
    # the input holds the answer verbatim: copying it is an exact match
    rec("s5", "MedDG", "多喝热水", "多喝热水", None),
    rec("s6", "MedDG", "按时服药", "按时服药", None),
]
TASKS = ["CMeIE", "KUAKE-QIC", "MedDG"]


def test_majority_is_the_most_common_training_target():
    assert majority_targets(TRAIN) == {
        "CMeIE": triple("甲", "乙"),
        "KUAKE-QIC": "病因分析",
        "MedDG": "注意休息",
    }
    # ties: the target seen first
    assert majority_targets([rec("a", "MedDG", "", "x"), rec("b", "MedDG", "", "y")]) == {
        "MedDG": "x"
    }


def test_floors_of_a_hand_made_split():
    f = floor_scores(TRAIN, TEST, tasks=TASKS)
    assert f["mode"] == "official"
    # an empty answer extracts nothing and names no class
    assert f["empty"]["CMeIE"] == 0.0 and f["empty"]["KUAKE-QIC"] == 0.0
    assert f["empty"]["MedDG"] == 0.0
    # majority: CMeIE predicts (甲, 并发症, 乙) twice: TP 1, FP 1, FN 1 → micro-F1 0.5;
    # QIC predicts 病因分析 twice: F1 2/3 for 病因分析, 0 for 治疗方案 → macro-F1 1/3
    assert f["majority"]["CMeIE"] == pytest.approx(0.5)
    assert f["majority"]["KUAKE-QIC"] == pytest.approx(1 / 3)
    assert f["majority"]["MedDG"] == 0.0  # 注意休息 shares no character
    # copy input: no triple or label in the prompts; MedDG copies the exact answer
    assert f["copy_input"]["CMeIE"] == 0.0 and f["copy_input"]["KUAKE-QIC"] == 0.0
    assert f["copy_input"]["MedDG"] == pytest.approx(1.0, abs=1e-6)
    assert f["floor_by"] == {"CMeIE": "majority", "KUAKE-QIC": "majority", "MedDG": "copy_input"}
    assert f["floor"]["CMeIE"] == pytest.approx(0.5)
    assert f["floor"]["avg"] == pytest.approx((0.5 + 1 / 3 + f["copy_input"]["MedDG"]) / 3)


def test_a_task_without_training_records_gets_the_empty_answer_as_majority():
    f = floor_scores([r for r in TRAIN if r["task_dataset"] != "CMeIE"], TEST, tasks=TASKS)
    assert f["majority"]["CMeIE"] == 0.0 and f["floor_by"]["CMeIE"] == "empty"


def test_a_job_records_the_floors_of_its_evaluated_split(tiny_world, tmp_path):
    """The runner scores the floors once per job on the test split as evaluated
    (trainer.eval.limit_per_task applied) with the primary scorer mode."""
    from moelora.harness.runner import run
    from tests.conftest import compose, tiny_overrides

    cfg = compose(
        tiny_overrides(tiny_world, tmp_path, "method=icl", "trainer.eval.limit_per_task=3")
    )
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    assert run(cfg, run_dir) == 0
    results = read_json(run_dir / "results.json")
    data_dir, _ = tiny_world

    def load(name):
        return [
            json.loads(line) for line in (data_dir / name).read_text(encoding="utf-8").splitlines()
        ]

    tasks, seen, evaluated = results["tasks"], {}, []
    for r in load("test.jsonl"):  # the first 3 of each task, in file order
        seen[r["task_dataset"]] = seen.get(r["task_dataset"], 0) + 1
        if seen[r["task_dataset"]] <= 3:
            evaluated.append(r)
    expected = floor_scores(load("train.jsonl"), evaluated, tasks=tasks)
    floors = results["floors"]
    assert floors["seconds"] >= 0.0
    assert {k: floors[k] for k in expected} == expected
    assert set(floors["floor"]) == set(tasks) | {"avg"}
    # ... and a table built from that run shows them in its floor row
    from analysis import collect, tables

    tidy = collect.collect(run_dir)[0]
    table = tables.build_table(
        tidy,
        "table2",
        benchmark="medsynth",
        scorer_mode="official",
        variant=tidy["variant"].iloc[0],
    )
    [row] = [r for r in table.rows if r.source == "floor"]
    assert {c: cell.value for c, cell in row.cells.items()} == pytest.approx(floors["floor"])
    assert {c: row.cells[c].floor_by for c in tasks} == floors["floor_by"]
    assert "| Floor (empty / majority / copy input) |" in tables.to_markdown(table)
