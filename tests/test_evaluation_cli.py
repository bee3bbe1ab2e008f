"""``python -m moelora.evaluation`` end to end (subprocess), bad input included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moelora.utils.io import write_jsonl
from tests.test_evaluation_helpers import rec

REPO = Path(__file__).resolve().parents[1]
CHOICES = ["管状腺瘤", "胃炎"]


def _gold() -> list[dict]:
    return [
        rec("CHIP-CDN", "管状腺瘤", "d1", CHOICES),
        rec("CHIP-CDN", "胃炎", "d2", CHOICES),
        rec("KUAKE-QIC", "就医建议", "q1"),
        rec("MedDG", "多喝水。", "m1"),
    ]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moelora.evaluation", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def files(tmp_path):
    def make(pred: list[dict] | None = None, raw_pred: str | None = None) -> list[str]:
        gold_path, pred_path = tmp_path / "gold.jsonl", tmp_path / "pred.jsonl"
        write_jsonl(gold_path, _gold())
        if raw_pred is not None:
            pred_path.write_text(raw_pred, encoding="utf-8")
        else:
            write_jsonl(pred_path, pred if pred is not None else _gold())
        return ["--gold", str(gold_path), "--pred", str(pred_path)]

    return make


def test_cli_scores_out_and_detail(files, tmp_path):
    pred = _gold()[::-1]
    pred[0] = {**pred[0], "target": "多喝水"}  # MedDG: 3 of 4 tokens
    pred[2] = {**pred[2], "target": "管状腺瘤，胃炎"}  # d2: one FP
    out = tmp_path / "scores.json"
    proc = _run(*files(pred), "--out", str(out), "--detail")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert list(scores) == ["mode", "CHIP-CDN", "KUAKE-QIC", "MedDG", "avg", "detail", "n_samples"]
    assert scores["mode"] == "official"
    assert scores["CHIP-CDN"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))  # TP 2, FP 1
    assert scores["KUAKE-QIC"] == 1.0
    assert scores["MedDG"] == pytest.approx(2 * 0.75 / (1.75 + 1e-8))  # P 1, R 3/4
    assert json.loads(out.read_text(encoding="utf-8")) == scores
    assert scores["detail"]["CHIP-CDN"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "micro_f1": 0.8}
    )
    assert {"rouge_1", "rouge_2", "rouge_l"} <= set(scores["detail"]["MedDG"])


def test_cli_compat_mode_tasks_and_undefined(files):
    pred = _gold()
    pred[0] = {**pred[0], "target": ""}
    pred[1] = {**pred[1], "target": ""}
    proc = _run(*files(pred), "--mode", "moelora_compat", "--tasks", "CHIP-CDN,KUAKE-QIC")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert scores["mode"] == "moelora_compat"
    assert scores["CHIP-CDN"] is None and scores["avg"] is None and scores["KUAKE-QIC"] == 1.0
    assert scores["undefined"]["CHIP-CDN"].startswith("undefined (TP=0)")
    assert "detail" not in scores


def test_cli_toy_dev(shared_dir):
    """Uses ../shared (real PromptCBLUE toy lines): gold against itself, all 16 tasks."""
    dev = shared_dir / "data" / "promptcblue_toy" / "dev.json"
    proc = _run("--gold", str(dev), "--pred", str(dev))
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert len(scores) == 18 and scores["CHIP-CTC"] == 1.0
    assert scores["MedDG"] == pytest.approx(0.999999995, abs=1e-12)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "1 gold sample(s) have no prediction"),
        ("extra", "pred.jsonl:5: extra sample_id 'zzz'"),
        ("duplicate", "pred.jsonl:5: duplicate sample_id 'd1' (first at "),
        ("malformed", "pred.jsonl:3: malformed JSON"),
        ("unknown_task", "pred.jsonl:4: unknown task 'MedDG-V2'"),
        ("unknown_cli_task", "unknown task 'NOPE'"),
    ],
)
def test_cli_bad_input_exits_2(files, case, match):
    gold = _gold()
    lines = [json.dumps(r, ensure_ascii=False) for r in gold]
    extra: list[str] = []
    if case == "missing":
        args = files(gold[:-1])
    elif case == "extra":
        args = files(gold + [rec("MedDG", "x", "zzz")])
    elif case == "duplicate":
        args = files(gold + [gold[0]])
    elif case == "malformed":
        args = files(raw_pred="\n".join(lines[:2] + ['{"sample_id": "q1", '] + lines[3:]) + "\n")
    elif case == "unknown_task":
        args = files([*gold[:3], {**gold[3], "task_dataset": "MedDG-V2"}])
    else:
        args, extra = files(), ["--tasks", "NOPE"]
    proc = _run(*args, *extra)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert match in proc.stderr, proc.stderr


def test_cli_blank_lines_keep_line_numbers(files):
    gold = _gold()
    lines = [json.dumps(r, ensure_ascii=False) for r in gold + [gold[2]]]
    proc = _run(*files(raw_pred="\n\n".join(lines) + "\n"))
    assert proc.returncode == 2
    assert "pred.jsonl:9: duplicate sample_id 'q1' (first at " in proc.stderr
    assert "pred.jsonl:5)" in proc.stderr
