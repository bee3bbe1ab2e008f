"""#12: bad data is refused with its file, line or sample_id; what the tokenizer makes of the
data (unknown tokens, truncation) is measured per task, warned about and recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from moelora.data.encoding import Encoder, load_split
from moelora.evaluation import ScoringError, score_files
from moelora.harness.runner import run
from moelora.method.tasks import TaskMap
from moelora.models.loading import load_tokenizer
from moelora.utils.io import DataFormatError, read_json
from tests.conftest import compose, tiny_overrides

TASKS = TaskMap(
    [
        "CMeIE",
        "CHIP-CDN",
        "CHIP-CDEE",
        "CHIP-MDCFNPC",
        "CHIP-CTC",
        "KUAKE-QIC",
        "IMCS-V2-MRG",
        "MedDG",
    ]
)


def _lines(tiny_world, split: str = "train") -> list[str]:
    return (tiny_world[0] / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_a_non_utf8_line_is_named_by_file_and_line(tiny_world, tmp_path):
    lines = _lines(tiny_world)
    path = tmp_path / "train.jsonl"
    path.write_bytes(("\n".join(lines[:2]) + "\n").encode() + lines[2].encode("gb18030") + b"\n")
    with pytest.raises(
        DataFormatError, match=rf"{path}:3: not UTF-8 text .*save the file as UTF-8"
    ):
        load_split(path, TASKS)


def test_the_scorer_names_the_line_of_a_non_utf8_prediction(tiny_world, tmp_path):
    gold = _write(tmp_path / "gold.jsonl", _lines(tiny_world, "test"))
    pred = tmp_path / "pred.jsonl"
    lines = _lines(tiny_world, "test")
    pred.write_bytes((lines[0] + "\n\n").encode() + lines[1].encode("gb18030") + b"\n")
    with pytest.raises(ScoringError, match=rf"{pred}:3: not UTF-8 text"):
        score_files(gold, pred)


def test_duplicate_sample_ids_in_any_split_name_the_ids_and_their_lines(tiny_world, tmp_path):
    lines = _lines(tiny_world)
    sid = json.loads(lines[0])["sample_id"]
    path = _write(tmp_path / "train.jsonl", [lines[0], "", *lines[1:4], lines[0]])
    with pytest.raises(
        DataFormatError,
        match=rf"1 duplicate sample_id value\(s\): '{sid}' on "
        rf"lines 1, 6; every sample_id must be unique",
    ):
        load_split(path, TASKS)


def test_a_task_type_that_does_not_fit_its_task_is_refused(tiny_world, tmp_path):
    rec = json.loads(_lines(tiny_world)[0])
    rec["task_type"] = "ner"
    path = _write(tmp_path / "train.jsonl", [json.dumps(rec, ensure_ascii=False)])
    with pytest.raises(
        DataFormatError,
        match=rf"{path}:1: task_type 'ner' does not fit task_dataset "
        rf"'{rec['task_dataset']}'",
    ):
        load_split(path, TASKS)


@pytest.fixture(scope="module")
def encoder(tiny_world):
    return Encoder(
        tokenizer=load_tokenizer(tiny_world[1]),
        task_map=TASKS,
        max_source_length=40,
        max_target_length=8,
    )


def test_token_stats_measure_unknown_tokens_and_truncation_per_task(encoder):
    from moelora.data.encoding import token_warnings

    # Digits and Latin letters are one token each in the MedSynth-8 tokenizer (pre-tokenizer),
    # an emoji is outside its alphabet: one unknown token.
    records = [
        {"input": "3" * 60, "target": "abc😀", "task_dataset": "CMeIE", "sample_id": "a"},
        {"input": "33😀😀", "target": "是", "task_dataset": "CMeIE", "sample_id": "b"},
        {"input": "3", "target": "是", "task_dataset": "MedDG", "sample_id": "c"},
    ]
    stats = encoder.token_stats(records, split="train")
    cme, meddg = stats["tasks"]["CMeIE"], stats["tasks"]["MedDG"]
    assert cme["samples"] == 2 and cme["prompt_tokens"] == 60 + 4
    assert cme["prompt_unk_share"] == pytest.approx(2 / 64, abs=1e-6)  # two emoji
    assert cme["answer_unk_share"] == pytest.approx(1 / 5, abs=1e-6)
    assert cme["prompt_truncated_share"] == 0.5 and meddg["prompt_unk_share"] == 0.0
    assert stats["truncated"] == 1 and stats["longest"] == 60
    warnings = token_warnings(stats, "train", max_source_length=40, max_target_length=8)
    assert warnings[0] == (
        "train: share of prompt tokens that are the unknown token (the "
        "tokenizer does not cover this text; check model.path): CMeIE 3.1%"
    )
    assert warnings[2] == (
        "train: share of prompts longer than data.max_source_length=40 tokens,"
        " which are cut: CMeIE 50.0%"
    )
    assert len(warnings) == 3 and not any("MedDG" in w for w in warnings)


def test_a_prompt_that_encodes_to_nothing_is_refused_by_run(tiny_world, tmp_path, capsys):
    """An empty encoding trains on nothing (the loss stays flat); the job stops instead, naming
    the sample and the file, and the warning about unknown tokens reaches the console."""
    data = tmp_path / "data"
    shutil.copytree(tiny_world[0], data)
    lines = _lines(tiny_world)
    bad = json.loads(lines[1])
    bad["input"] = ""
    unk = json.loads(lines[2])
    unk["input"] = "😀" * 40 + unk["input"]
    _write(
        data / "train.jsonl",
        [
            lines[0],
            json.dumps(bad, ensure_ascii=False),
            json.dumps(unk, ensure_ascii=False),
            *lines[3:],
        ],
    )
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full", f"data.root={data}"))
    (tmp_path / "job").mkdir()
    assert run(cfg, tmp_path / "job") == 1
    error = read_json(tmp_path / "job" / "results.json")["error"]
    assert (
        f"{data / 'train.jsonl'}: sample_id '{bad['sample_id']}' ({bad['task_dataset']}): "
        "its prompt (0 characters) encodes to zero tokens" in error
    )
    bad["input"] = "患者"
    _write(
        data / "train.jsonl",
        [
            lines[0],
            json.dumps(bad, ensure_ascii=False),
            json.dumps(unk, ensure_ascii=False),
            *lines[3:],
        ],
    )
    capsys.readouterr()
    cfg = compose(
        tiny_overrides(
            tiny_world,
            tmp_path,
            "method=lora_full",
            f"data.root={data}",
            "trainer.max_steps=1",
            "overwrite=true",
        )
    )
    assert run(cfg, tmp_path / "job") == 0
    out = capsys.readouterr().out
    assert "[tokens] warning: train: share of prompt tokens that are the unknown token" in out
    assert f"{unk['task_dataset']} " in out.split("unknown token", 1)[1].splitlines()[0]
    share = read_json(tmp_path / "job" / "results.json")["token_stats"]["train"]["tasks"][
        unk["task_dataset"]
    ]["prompt_unk_share"]
    assert share > 0.01
