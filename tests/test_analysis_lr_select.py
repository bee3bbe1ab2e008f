"""analysis.lr_select: dev-split runs on an lr grid → the lr chosen per method, never the test set."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from analysis import lr_select
from moelora.harness import lr_protocol
from tests.conftest import REPO_ROOT
from tests.test_analysis_collect import write_run

DEV = {"file": "dev.jsonl", "sha256": "d" * 64}
TEST = {"file": "test.jsonl", "sha256": "t" * 64}


def dev_run(
    root,
    method,
    seed,
    scale,
    avg,
    *,
    split=DEV,
    status="success",
    model="m" * 64,
    extra_overrides=(),
    max_steps=None,
):
    """One results.json of the dev sweep: lr = 2e-4 × scale, scored on ``split``."""
    overrides = [
        f"trainer.lr_scale={scale}",
        "data.files.test=dev.jsonl",
        "experiment_name=lr_dev",
        *extra_overrides,
    ]
    return write_run(
        root,
        "lr_dev",
        method,
        seed,
        {"CMeIE": avg, "CHIP-CDN": avg},
        status=status,
        overrides=overrides,
        config={
            "trainer": {
                "lr": None,
                "lr_scale": scale,
                **({"max_steps": max_steps} if max_steps else {}),
            },
            "method": {"optim": {"lr": 2e-4}},
            "data": {"files": {"train": "train.jsonl", "dev": "dev.jsonl", "test": split["file"]}},
        },
        inputs={
            "model": {"fingerprint": model},
            "data": {
                "files": {
                    "train": {"file": "train.jsonl", "sha256": "a" * 64},
                    "dev": DEV,
                    "test": split,
                }
            },
        },
    )


def test_each_method_gets_its_own_best_mean_dev_lr(tmp_path):
    for scale, avgs in {15: (0.70, 0.68), 25: (0.64, 0.66), 50: (0.10, 0.12)}.items():
        for seed, avg in zip((42, 43), avgs):
            dev_run(tmp_path, "lora_full", seed, scale, avg)
    for scale, avg in {15: 0.60, 25: 0.66, 50: 0.69}.items():
        dev_run(tmp_path, "moelora_dense", 42, scale, avg)
    choices = {c.method: c for c in lr_select.read_points(tmp_path)}
    lf, d = choices["lora_full"], choices["moelora_dense"]
    assert lf.best.lr == pytest.approx(3e-3) and lf.best.override == "trainer.lr_scale=15"
    assert lf.best.mean == pytest.approx(0.69) and lf.best.avg_by_seed == {42: 0.70, 43: 0.68}
    assert d.best.lr == pytest.approx(1e-2) and d.best.override == "trainer.lr_scale=50"
    assert lf.at_edge and d.at_edge  # 3e-3 and 1e-2 are the grid's ends
    text = lr_select.to_markdown(list(choices.values()))
    assert "python run.py -m method=lora_full trainer.lr_scale=15 seed=42,43,44" in text
    assert "| **0.003** | `trainer.lr_scale=15` | **0.6900** | 2 |" in text


def test_a_tie_goes_to_the_smaller_lr_and_an_inner_best_is_not_at_the_edge(tmp_path):
    for scale, avg in {10: 0.50, 15: 0.66, 25: 0.66, 35: 0.40}.items():
        dev_run(tmp_path, "lora_full", 42, scale, avg)
    (choice,) = lr_select.read_points(tmp_path)
    assert choice.best.override == "trainer.lr_scale=15" and not choice.at_edge


def test_a_test_split_run_is_refused_with_its_path(tmp_path):
    dev_run(tmp_path, "lora_full", 42, 15, 0.70)
    bad = dev_run(tmp_path, "lora_full", 43, 15, 0.71, split=TEST)
    with pytest.raises(lr_select.NotDevSplitError, match="test.jsonl, not on the dev split") as e:
        lr_select.read_points(tmp_path)
    assert str(bad / "results.json") in str(e.value)
    assert lr_select.main(["--root", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r" / "lr_select.json").exists()  # nothing written from test runs


def test_failed_runs_are_listed_not_chosen_and_variants_and_bases_stay_apart(tmp_path):
    dev_run(tmp_path, "lora_full", 42, 15, 0.60)
    failed = dev_run(tmp_path, "lora_full", 42, 50, None, status="failed")
    dev_run(tmp_path, "lora_full", 42, 15, 0.65, extra_overrides=["trainer.max_steps=2000"])
    dev_run(tmp_path, "lora_full", 42, 25, 0.80, model="x" * 64)  # another base
    choices = lr_select.read_points(tmp_path)
    assert len(choices) == 3
    plain = next(c for c in choices if c.variant == "" and c.model == "m" * 12)
    assert plain.failed == [f"{failed} (failed)"] and [p.lr for p in plain.points] == [
        pytest.approx(3e-3)
    ]
    longer = next(c for c in choices if c.variant == "trainer.max_steps=2000")
    assert longer.best.mean == pytest.approx(0.65)
    assert "trainer.max_steps=2000 seed=42,43,44" in lr_select.to_markdown([longer])


def test_an_explicit_trainer_lr_is_the_lr_and_its_override():
    lr, override = lr_select.effective_lr(
        {"trainer": {"lr": 0.004, "lr_scale": 25}, "method": {"optim": {"lr": 2e-4}}}
    )
    assert lr == 0.004 and override == "trainer.lr=0.004"


def test_main_writes_the_report_and_the_choices(tmp_path):
    for scale, avg in {15: 0.62, 25: 0.66, 35: 0.61}.items():
        dev_run(tmp_path / "runs", "moelora_dense", 42, scale, avg)
    assert lr_select.main(["--root", str(tmp_path / "runs"), "--out", str(tmp_path / "r")]) == 0
    (row,) = json.loads((tmp_path / "r" / "lr_select.json").read_text())
    assert row["method"] == "moelora_dense" and row["override"] == "trainer.lr_scale=25"
    assert row["dev_avg"] == pytest.approx(0.66) and row["at_edge"] is False
    assert (tmp_path / "r" / "lr_select.md").read_text().startswith("# Learning rate per method")
    assert lr_select.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2


def test_the_documented_override_scores_the_dev_file():
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["data.files.test=dev.jsonl", "trainer.lr_scale=15"])
    assert cfg.data.files.test == cfg.data.files.dev == "dev.jsonl"
    assert lr_select.effective_lr(
        {
            "trainer": {"lr": cfg.trainer.lr, "lr_scale": cfg.trainer.lr_scale},
            "method": {"optim": {"lr": cfg.method.optim.lr}},
        }
    ) == (pytest.approx(3e-3), "trainer.lr_scale=15")


def test_the_choices_become_an_lr_protocol_that_trains_each_method_at_its_lr(tmp_path):
    for scale, avg in {10: 0.62, 15: 0.67, 25: 0.63}.items():
        dev_run(tmp_path / "runs", "lora_full", 42, scale, avg, max_steps=1000)
    for scale, avg in {25: 0.69, 35: 0.71, 50: 0.67}.items():
        dev_run(tmp_path / "runs", "moelora_dense", 42, scale, avg, max_steps=1000)
    path = tmp_path / "conf" / "dev.yaml"
    assert (
        lr_select.main(
            [
                "--root",
                str(tmp_path / "runs"),
                "--out",
                str(tmp_path / "r"),
                "--protocol",
                str(path),
            ]
        )
        == 0
    )
    text = path.read_text()
    table = yaml.safe_load(text)
    assert table == {
        "name": "dev",
        "lr_scale": {"lora_full": 15, "moelora_dense": 35},
        "chosen_with": {"trainer.max_steps": 1000},
    }
    assert "#   lora_full (seeds 42): 10: 0.6200 | [15: 0.6700] | 25: 0.6300" in text
    cfg = OmegaConf.create(
        {
            "method": {"name": "moelora_dense", "optim": {"lr": 2e-4}},
            "trainer": {"lr": None, "lr_scale": 25.0, "max_steps": 1000},
            "lr_protocol": table,
        }
    )
    lr_protocol.apply(cfg)
    assert cfg.trainer.lr_scale == 35


def test_a_protocol_holds_one_sweep(tmp_path):
    dev_run(tmp_path / "runs", "lora_full", 42, 15, 0.6)
    dev_run(tmp_path / "runs", "lora_full", 42, 25, 0.7, model="x" * 64)  # another base
    path = tmp_path / "dev.yaml"
    with pytest.raises(ValueError, match="several variants or base models for lora_full"):
        lr_select.to_protocol(lr_select.read_points(tmp_path / "runs"))
    assert (
        lr_select.main(
            [
                "--root",
                str(tmp_path / "runs"),
                "--out",
                str(tmp_path / "r"),
                "--protocol",
                str(path),
            ]
        )
        == 2
    )
    assert not path.exists() and not (tmp_path / "r" / "lr_select.json").exists()
    other = tmp_path / "other"
    dev_run(other, "lora_full", 42, 15, 0.6, max_steps=1000)
    dev_run(other, "molora", 42, 15, 0.6, max_steps=2000)
    with pytest.raises(ValueError, match=r"swept under other settings \(trainer.max_steps\)"):
        lr_select.to_protocol(lr_select.read_points(other))
