"""analysis.collect: results.json trees → tidy table, runs table, missing/failed runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import collect

TASKS = [
    "CMeIE",
    "CHIP-CDN",
    "CHIP-CDEE",
    "CHIP-MDCFNPC",
    "CHIP-CTC",
    "KUAKE-QIC",
    "IMCS-V2-MRG",
    "MedDG",
]


def write_run(
    root: Path,
    experiment: str,
    method: str,
    seed: int,
    scores: dict[str, float] | None,
    *,
    status: str = "success",
    overrides: list[str] | None = None,
    benchmark: str = "medsynth",
    hparams: dict | None = None,
    **extra,
) -> Path:
    """Write one results.json as the runner does (the contract of the brief).

    ``scores`` maps task → score; ``avg`` is their mean unless given.
    """
    overrides = list(overrides or [])
    sub = ",".join(sorted(o for o in overrides if not o.startswith("paths."))) or "default"
    run_dir = root / experiment / method / sub / f"seed={seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    res = {
        "status": status,
        "experiment": experiment,
        "method": method,
        "seed": seed,
        "overrides": overrides,
        "benchmark": benchmark,
        "scorer_mode": "official",
        "tasks": list(scores or {}) if scores else TASKS,
        "decoding": "sample",
        "hparams": hparams or {"rank": 16, "num_experts": 8, "alpha": 32},
        "provenance": {"git_sha": "abc123", "git_dirty": False, "device": "cpu"},
        "config": {},
    }
    if status == "success":
        full = dict(scores)
        full.setdefault("avg", sum(scores.values()) / len(scores))
        res["scores"] = full
    else:
        res["error"] = "RuntimeError: boom"
    res.update(extra)
    (run_dir / "results.json").write_text(json.dumps(res), encoding="utf-8")
    return run_dir


def two_task_scores(a: float, b: float) -> dict[str, float]:
    return {"CMeIE": a, "CHIP-CDN": b}


def test_tidy_rows_per_task_and_avg(tmp_path):
    write_run(tmp_path, "table2", "lora_full", 42, two_task_scores(0.2, 0.4))
    write_run(tmp_path, "table2", "lora_full", 43, two_task_scores(0.3, 0.5))
    tidy, runs, _ = collect.collect(tmp_path)
    assert len(runs) == 2
    assert len(tidy) == 6  # 2 runs × (2 tasks + avg)
    avg = tidy[tidy["task"] == "avg"].set_index("seed")["score"]
    assert avg[42] == pytest.approx(0.3) and avg[43] == pytest.approx(0.4)
    assert list(tidy[tidy["seed"] == 42]["task"]) == ["CMeIE", "CHIP-CDN", "avg"]
    assert set(tidy["benchmark"]) == {"medsynth"} and set(tidy["scorer_mode"]) == {"official"}


def test_failed_runs_are_kept_and_missing_grid_jobs_listed(tmp_path):
    for seed in (42, 43):
        write_run(tmp_path, "table3", "moelora_bt", seed, two_task_scores(0.1, 0.2))
    write_run(tmp_path, "table3", "moelora_rbt", 42, None, status="failed")
    tidy, runs, _ = collect.collect(tmp_path)
    failed = tidy[tidy["status"] == "failed"]
    assert len(failed) == 1 and math.isnan(failed["score"].iloc[0])
    missing = collect.missing_runs(runs)
    jobs = set(zip(missing["job"], missing["status"]))
    # table3's grid: 6 methods × 3 seeds = 18 jobs; 2 succeeded, 1 failed, 15 missing.
    assert len(missing) == 16
    assert ("method=moelora_rbt seed=42", "failed") in jobs
    assert ("method=moelora_bt seed=44", "missing") in jobs
    assert not any(j.startswith("method=moelora_bt seed=42") for j, _ in jobs)
    md = collect.missing_markdown(missing, runs)
    assert (
        "RuntimeError: boom" in md and "| table3 | – | method=moelora_rbt seed=42 | failed |" in md
    )


def test_grid_keys_beyond_method_and_seed_are_matched(tmp_path):
    """fig4_rank pairs (N, r) in one dict override; a run matches only its own point."""
    write_run(
        tmp_path,
        "fig4_rank",
        "moelora_dense",
        42,
        two_task_scores(0.5, 0.5),
        overrides=["method.adapter={num_experts: 4, rank: 8}"],
    )
    _, runs, _ = collect.collect(tmp_path)
    missing = collect.missing_runs(runs)
    assert len(missing) == 14  # 5 points × 3 seeds − 1
    assert not any("rank:8" in j and "seed=42" in j for j in missing["job"])


def test_variants_are_separated_and_ignored_keys_dropped(tmp_path):
    write_run(
        tmp_path,
        "table2",
        "lora_full",
        42,
        two_task_scores(0.2, 0.4),
        overrides=["paths.output_dir=/x", "logger=none"],
    )
    write_run(
        tmp_path,
        "table2",
        "lora_full",
        42,
        two_task_scores(0.1, 0.1),
        overrides=["trainer=smoke", "logger=none"],
    )
    _, runs, _ = collect.collect(tmp_path)
    assert sorted(runs["variant"].fillna("")) == ["", "trainer=smoke"]


def test_main_writes_files_and_says_when_there_is_nothing(tmp_path, capsys):
    assert collect.main(["--root", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 1
    assert "no results folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert collect.main(["--root", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 1
    write_run(
        tmp_path / "out", "table2", "molora", 42, two_task_scores(0.2, 0.4), expert_weights=None
    )
    assert collect.main(["--root", str(tmp_path / "out"), "--out", str(tmp_path / "r")]) == 0
    df = pd.read_csv(tmp_path / "r" / "results.csv")
    assert len(df) == 3
    text = (tmp_path / "r" / "missing.md").read_text()
    assert text.count("| table2 |") == 29
    assert "not run at all (every job missing): fig4_experts, fig4_rank" in text
    assert "table2" not in text.split("not run at all")[1].split("\n")[0]


def test_cost_counts_computed_evaluate_only_and_adopted_jobs(tmp_path):
    s = two_task_scores(0.2, 0.4)
    write_run(tmp_path, "table2", "moelora_dense", 42, s, timing={"total_seconds": 600.0})
    write_run(
        tmp_path,
        "table2",
        "moelora_dense",
        43,
        s,  # resumed once: 100 s before
        timing={"total_seconds": 400.0, "previous_attempts_seconds": 100.0},
    )
    write_run(
        tmp_path, "table2", "lora_full", 44, s, status="failed", timing={"total_seconds": 9999.0}
    )
    write_run(
        tmp_path,
        "fig6_expert_weights",
        "moelora_dense",
        42,
        s,
        timing={"total_seconds": 600.0},
        reused_from={"run_dir": "x"},
    )
    write_run(
        tmp_path,
        "fig5_efficiency",
        "moelora_dense",
        42,
        s,
        overrides=["method.infer=merged_per_task"],
        timing={"total_seconds": 30.0},
        trained_by="y",
    )
    _, runs, _ = collect.collect(tmp_path)
    costs = collect.cost_frame(runs).set_index("experiment")
    assert costs.loc["table2", ["jobs", "computed", "adopted"]].tolist() == [2, 2, 0]
    assert costs.loc["table2", "computed_s"] == 1100.0  # the failed run is not counted
    assert costs.loc["fig6_expert_weights", ["computed", "adopted"]].tolist() == [0, 1]
    assert costs.loc["fig6_expert_weights", ["computed_s", "standalone_s"]].tolist() == [0.0, 600.0]
    assert costs.loc["fig5_efficiency", ["computed", "evaluate_only", "computed_s"]].tolist() == [
        0,
        1,
        30.0,
    ]
    text = collect.cost_markdown(collect.cost_frame(runs))
    assert "| **all** | | 4 | 2 | 1 | 1 | 18.8 min |" in text  # (600+500+30) s


def test_standalone_cost_adds_the_training_an_evaluate_only_job_stands_on(tmp_path):
    """A chain: fig5 trains (500 s, 40 s of it evaluation), a fig5 job only evaluates its
    weights (30 s), and table3 adopts that evaluate-only job. Standalone, each of the two later
    jobs costs its own time plus the 460 s of training; a source not found is reported."""
    s = two_task_scores(0.2, 0.4)
    src = write_run(
        tmp_path / "elsewhere" / "outputs",
        "fig5_efficiency",
        "moelora_multi_gate",
        42,
        s,
        overrides=["method.infer=merged_per_task"],
        timing={"total_seconds": 500.0, "eval_seconds": 40.0},
    )
    copied = tmp_path / "root"  # the tree was copied: absolute paths differ
    src_rel = src.relative_to(tmp_path / "elsewhere" / "outputs")
    (copied / src_rel).mkdir(parents=True)
    (copied / src_rel / "results.json").write_bytes((src / "results.json").read_bytes())
    write_run(
        copied,
        "fig5_efficiency",
        "moelora_multi_gate",
        42,
        s,
        overrides=["method.infer=unmerged"],
        timing={"total_seconds": 30.0},
        trained_by=str(src),
    )
    write_run(
        copied,
        "table3",
        "moelora_multi_gate",
        42,
        s,
        timing={"total_seconds": 30.0},
        trained_by=str(src),
        reused_from={"run_dir": "fig5 unmerged"},
    )
    write_run(
        copied,
        "table3",
        "moelora_multi_gate",
        43,
        s,
        timing={"total_seconds": 30.0},
        trained_by="/nowhere/outputs/other/x/seed=43",
        reused_from={"run_dir": "z"},
    )
    _, runs, _ = collect.collect(copied)
    costs = collect.cost_frame(runs).set_index("experiment")
    assert costs.loc["fig5_efficiency", ["computed_s", "standalone_s"]].tolist() == [530.0, 990.0]
    assert costs.loc["table3", ["computed_s", "standalone_s", "untimed"]].tolist() == [
        0.0,
        520.0,
        1,
    ]
    assert "have no recorded time (or were not found" in collect.cost_markdown(
        collect.cost_frame(runs)
    )
