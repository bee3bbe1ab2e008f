"""LoRA (Single) (docs/methods.md §4.2): step budgets, snapshots, checkpoint selection; end to end
(slow) with resume, and the composition methods built on its adapters."""

from __future__ import annotations

from pathlib import Path

import pytest

from baselines.lora_single import (
    epoch_matched_steps,
    select_fractions,
    snapshot_steps,
    task_step_budgets,
)


def test_epoch_matched_budgets():
    # 8000 × 300/401 = 5985.04 → 5986; 8000 × 100/401 = 1995.01 → 1996; 8000 × 1/401 = 19.95 → 20
    sizes = {"a": 300, "b": 100, "c": 1}
    assert epoch_matched_steps(8000, sizes) == {"a": 5986, "b": 1996, "c": 20}
    # exact multiples stay exact
    assert epoch_matched_steps(400, {"a": 30, "b": 10}) == {"a": 300, "b": 100}
    # a tiny task still gets one step
    assert epoch_matched_steps(4, {"a": 1000, "b": 1}) == {"a": 4, "b": 1}


def test_step_budget_setting():
    sizes = {"a": 3, "b": 1}
    assert task_step_budgets("epoch_matched", 8, sizes) == {"a": 6, "b": 2}
    assert task_step_budgets(8000, 8, sizes) == {"a": 8000, "b": 8000}
    assert task_step_budgets("50", 8, sizes) == {"a": 50, "b": 50}
    with pytest.raises(ValueError, match="epoch_matched"):
        task_step_budgets("epochs", 8, sizes)
    with pytest.raises(ValueError, match="at least 1"):
        task_step_budgets(0, 8, sizes)


def test_snapshots_every_ten_percent():
    assert snapshot_steps(200) == {
        0.1: 20,
        0.2: 40,
        0.3: 60,
        0.4: 80,
        0.5: 100,
        0.6: 120,
        0.7: 140,
        0.8: 160,
        0.9: 180,
        1.0: 200,
    }
    # 4 steps: round(0.4)=0→1, round(0.8)=1, round(1.2)=1, round(1.6)=2, 2.0, round(2.4)=2,
    # round(2.8)=3, round(3.2)=3, round(3.6)=4, 4
    assert list(snapshot_steps(4).values()) == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    assert snapshot_steps(7, 2) == {0.5: 4, 1.0: 7}


SCORES = {  # fraction → task → validation score, built so that the answers differ
    0.2: {"x": 0.20, "y": 0.80},  # avg 0.50, best for y
    0.5: {"x": 0.90, "y": 0.10},  # avg 0.50, best for x
    1.0: {"x": 0.60, "y": 0.60},  # avg 0.60, best average
}


def test_shared_best_average_picks_one_fraction_for_all_tasks():
    assert select_fractions(SCORES, mode="shared_best_avg") == {"x": 1.0, "y": 1.0}


def test_per_task_best_picks_each_tasks_own_fraction():
    assert select_fractions(SCORES, mode="per_task_best") == {"x": 0.5, "y": 0.2}


def test_selection_by_loss_minimises():
    losses = {f: {t: 1.0 - v for t, v in s.items()} for f, s in SCORES.items()}
    assert select_fractions(losses, mode="shared_best_avg", higher_better=False) == {
        "x": 1.0,
        "y": 1.0,
    }
    assert select_fractions(losses, mode="per_task_best", higher_better=False) == {
        "x": 0.5,
        "y": 0.2,
    }


def test_ties_go_to_the_later_fraction_and_bad_mode_fails():
    tied = {0.1: {"x": 0.5}, 0.3: {"x": 0.5}, 0.2: {"x": 0.1}}
    assert select_fractions(tied, mode="shared_best_avg") == {"x": 0.3}
    with pytest.raises(ValueError, match="shared_best_avg"):
        select_fractions(tied, mode="best")


# ---- end to end through the runner (slow) ----------------------------------------------
def _job(tiny_world, out: Path, method: str, *extra: str):
    from moelora.harness.runner import run
    from tests.conftest import compose, tiny_overrides

    cfg = compose(tiny_overrides(tiny_world, out, f"method={method}", *extra))
    run_dir = out / "default" / method / "seed=42"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, run_dir), run_dir


@pytest.mark.slow
def test_lora_single_end_to_end_resume_and_compositions(tiny_world, tmp_path, capsys):
    from moelora.utils.io import read_json

    fast = ["method.single.select_by=loss", "method.single.val_per_task=2"]
    code, run_dir = _job(tiny_world, tmp_path, "lora_single", *fast)
    r = read_json(run_dir / "results.json")
    assert code == 0, r.get("error")
    tasks = r["tasks"]
    assert all((run_dir / "adapters" / t / "adapter_model.safetensors").is_file() for t in tasks)
    chosen = set(r["single"]["chosen_fraction"].values())
    assert len(chosen) == 1  # shared_best_avg
    first = {
        t: (run_dir / "adapters" / t / "adapter_model.safetensors").read_bytes() for t in tasks
    }
    # a rerun (results.json gone) trains nothing again and keeps the same adapters
    (run_dir / "results.json").unlink()
    capsys.readouterr()
    code, _ = _job(tiny_world, tmp_path, "lora_single", *fast)
    assert code == 0
    assert capsys.readouterr().out.count("finished earlier, not retrained") == len(tasks)
    assert all(
        (run_dir / "adapters" / t / "adapter_model.safetensors").read_bytes() == first[t]
        for t in tasks
    )

    code, ta_dir = _job(
        tiny_world,
        tmp_path,
        "task_arithmetic",
        "method.ta.select_by=loss",
        "method.ta.grid=[0.0,0.5,1.0]",
    )
    ta = read_json(ta_dir / "results.json")
    assert code == 0, ta.get("error")
    assert ta["ta"]["lambda"] in (0.0, 0.5, 1.0) and ta["ta"]["combine"] == "exact"
    code, hub_dir = _job(
        tiny_world, tmp_path, "lorahub", "method.lorahub.budget=4", "method.lorahub.n_examples=2"
    )
    hub = read_json(hub_dir / "results.json")
    assert code == 0, hub.get("error")
    assert set(hub["lorahub"]["weights"]) == set(tasks)


@pytest.mark.slow
def test_composition_without_lora_single_fails_with_the_command(tiny_world, tmp_path):
    from moelora.utils.io import read_json

    code, run_dir = _job(tiny_world, tmp_path, "task_arithmetic")
    r = read_json(run_dir / "results.json")
    assert code == 1 and "python run.py method=lora_single seed=42" in r["error"]


@pytest.mark.slow
def test_molora_end_to_end_runs_unmerged(tiny_world, tmp_path):
    from moelora.utils.io import read_json

    code, run_dir = _job(tiny_world, tmp_path, "molora", "method.infer=merged_per_task")
    r = read_json(run_dir / "results.json")
    assert code == 0, r.get("error")
    assert r["molora"]["infer"] == "unmerged" and r["molora"]["mergeable"] is False
