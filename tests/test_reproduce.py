"""experiments/reproduce.py: the order of the grid commands, ``--plan``'s accounting, and
``--jobs N``: the schedule of the real grids and a two-worker run of a tiny grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from analysis.collect import expected_runs
from experiments import reproduce
from experiments.schedule import Job, build_jobs, count_states, run_dir, start_order
from moelora.harness.results import redact
from moelora.utils.io import read_json, write_json
from tests.conftest import compose, tiny_overrides


def test_composing_methods_get_their_inputs_first():
    cmds = reproduce.commands("table2", ["trainer=smoke"])
    assert [c[4:] for c in cmds] == [["method=lora_single", "trainer=smoke"], ["trainer=smoke"]]
    assert all(c[3] == "experiment=table2" for c in cmds)


def test_fig5_measurement_runs_after_the_grids(capsys):
    def commands(*argv):
        assert reproduce.main(["--dry-run", "--results", "out", *argv]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("$")]

    lines = commands("--only", "fig5_efficiency", "table3")
    assert lines[-1].endswith("-m experiments.efficiency --results out")
    assert sum("experiments.efficiency" in line for line in lines) == 1
    assert not any(
        "experiments.efficiency" in line
        for line in commands("--only", "fig5_efficiency", "--no-efficiency")
    )
    assert not any("experiments.efficiency" in line for line in commands("--only", "table3"))


def _finished(root, experiment, *overrides, name):
    cfg = compose([f"experiment={experiment}", *overrides, f"paths.output_dir={root}"])
    run_dir = root / experiment / name
    run_dir.mkdir(parents=True)
    write_json(
        run_dir / "results.json",
        {
            "status": "success",
            "experiment": experiment,
            "config": redact(OmegaConf.to_container(cfg, resolve=True)),
        },
    )


def test_plan_counts_done_adopted_evaluate_only_and_new_jobs(tmp_path):
    root = tmp_path / "outputs"
    _finished(root, "table2", "method=moelora_dense", "seed=42", name="a")  # same job
    _finished(
        root, "table2", "method=moelora_dense", "seed=43", "method.infer=merged_per_task", name="b"
    )  # same weights
    _finished(root, "fig6_expert_weights", "method=moelora_dense", "seed=44", name="c")  # done
    _finished(root, "table2", "method=moelora_dense", "seed=44", "trainer=smoke", name="d")
    extra = [f"paths.output_dir={root}"]
    [row] = reproduce.plan(["fig6_expert_weights"], extra, root)
    assert row == {
        "experiment": "fig6_expert_weights",
        "jobs": 3,
        "done": 1,
        "adopt": 1,
        "evaluate": 1,
        "train": 0,
    }
    [row] = reproduce.plan(["fig6_expert_weights"], [*extra, "reuse=false"], root)
    assert (row["done"], row["adopt"], row["evaluate"], row["train"]) == (1, 0, 0, 2)


# ---- --jobs N: the schedule of the real grids (no training) ----------------------------
@pytest.fixture(scope="module")
def schedule_jobs(tmp_path_factory):
    """Every seed-42 job of every conf/experiment grid (``seed=42`` restricts the grids, as it
    does on the command line; a third of the composing time), planned against an empty
    results folder."""
    return build_jobs(
        reproduce.experiment_names(),
        ["paths.output_dir=out", "seed=42"],
        tmp_path_factory.mktemp("empty"),
    )


def _find(jobs, experiment, **values):
    [job] = [
        j
        for j in jobs
        if j.experiment == experiment and all(j.values.get(k) == str(v) for k, v in values.items())
    ]
    return job


def test_schedule_lists_every_grid_job_once(schedule_jobs):
    for name in reproduce.experiment_names():
        mine = [j.values for j in schedule_jobs if j.experiment == name]
        grid = [j for j in expected_runs(name) if j["seed"] == "42"]
        assert sorted(map(str, mine)) == sorted(map(str, grid)), name
        assert all(j.extra == ["paths.output_dir=out"] for j in schedule_jobs)  # seed is a grid key
    assert (
        [j.index for j in schedule_jobs] == list(range(len(schedule_jobs))) == list(range(105 // 3))
    )
    assert all(i < j.index for j in schedule_jobs for i in j.after)  # no cycles
    rows = {r["experiment"]: r for r in count_states(schedule_jobs, reproduce.experiment_names())}
    assert (rows["fig6_expert_weights"]["adopt"], rows["table2"]["jobs"]) == (1, 10)
    totals = {s: sum(j.state == s for j in schedule_jobs) for s in ("train", "evaluate", "adopt")}
    assert totals == {"train": 24, "evaluate": 4, "adopt": 7}  # a third of --plan's 72, 12, 21


def test_composition_methods_wait_for_their_inputs_of_the_same_seed(schedule_jobs):
    for method in ("task_arithmetic", "lorahub"):
        job = _find(schedule_jobs, "table2", method=method)
        single = _find(schedule_jobs, "table2", method="lora_single")
        assert job.inputs == [single.index] and single.index in job.after
    # lora_single starts before the other table2 trainings (others wait for it)
    order = [
        j for j in start_order(schedule_jobs) if j.experiment == "table2" and j.state == "train"
    ]
    assert order[0].method == "lora_single"


def test_twins_wait_for_the_job_they_adopt_or_evaluate(schedule_jobs):
    n8 = _find(schedule_jobs, "fig4_experts", **{"method.adapter.num_experts": 8})
    assert n8.state == "train" and not n8.after
    for experiment in ("fig6_expert_weights", "table2"):
        twin = _find(schedule_jobs, experiment, method="moelora_dense")
        assert (twin.state, twin.after) == ("adopt", [n8.index])
    # Fig. 5's merged MOELoRA (D) differs only in inference: it evaluates those weights
    fig5 = _find(
        schedule_jobs,
        "fig5_efficiency",
        method="moelora_dense",
        **{"method.infer": "merged_per_task"},
    )
    assert (fig5.state, fig5.after) == ("evaluate", [n8.index])
    # a training job is started before the jobs that wait for it
    position = {j.index: k for k, j in enumerate(start_order(schedule_jobs))}
    assert all(position[i] < position[j.index] for j in schedule_jobs for i in j.after)


@pytest.mark.parametrize("name", reproduce.experiment_names())
def test_a_one_job_multirun_lands_in_the_grid_folder(name):
    """Hydra's basic sweeper gives each one-job command the same override list as the grid's
    multirun gives that job, so both name the same run folder (conf/hydra/default.yaml)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    extra = ["paths.output_dir=out", "trainer=smoke", "threads=1"]
    params = [f"{k}={v}" for k, v in reproduce.sweep_params(name).items()]
    parser = OverridesParser.create()
    grid = [
        sorted(job)
        for [job] in BasicSweeper.split_arguments(
            parser.parse_overrides([*params, f"experiment={name}", *extra]), 1
        )
    ]
    singles = []
    for values in expected_runs(name):
        job = Job(0, name, values, extra)
        [[task]] = BasicSweeper.split_arguments(
            parser.parse_overrides([*params, *job.overrides()]), None
        )
        singles.append(sorted(task))
        assert run_dir(job, Path("out")).parts[:3] == ("out", name, values["method"])
    assert sorted(singles) == sorted(grid)


def test_dry_run_with_jobs_prints_each_job_and_its_waits(capsys):
    assert (
        reproduce.main(
            [
                "--dry-run",
                "--jobs",
                "2",
                "--results",
                "out",
                "seed=42",
                "--only",
                "table2",
                "fig5_efficiency",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("$")]
    assert len(lines) == 10 + 8 + 1 and lines[-1].split("  #")[0].endswith(
        "-m experiments.efficiency --results out"
    )
    ta = next(line for line in lines if "method=task_arithmetic" in line)
    single = next(line for line in lines if "method=lora_single" in line)
    assert "threads=1" in ta and "seed=42" in ta and "seed=43" not in " ".join(lines)
    assert ta.endswith(f"after {single.split('# ')[1].split(':')[0]}")


# ---- --jobs 2 for real, in the tiny world --------------------------------------------------
def test_two_workers_run_a_tiny_grid_in_the_grids_folders(tiny_world, tmp_path, capsys):
    """fig6 and table2 share their MOELoRA (D) cell: two workers train the fig6 jobs side by
    side, and the table2 jobs adopt them once they are done (smoke length, tiny world)."""
    results = tmp_path / "outputs"
    extra = [
        *tiny_overrides(tiny_world, tmp_path, "trainer.max_steps=1", "decoding=greedy"),
        "method=moelora_dense,lora_full",
        "seed=42",
    ]
    argv = [
        "--jobs",
        "2",
        "--results",
        str(results),
        *extra,
        "--only",
        "fig6_expert_weights",
        "table2",
    ]
    assert reproduce.main(argv) == 0
    out = capsys.readouterr().out
    jobs = build_jobs(
        ["fig6_expert_weights", "table2"],
        [f"paths.output_dir={results}", *extra, "threads=1"],
        results,
    )
    assert len(jobs) == 4 and {j.state for j in jobs} == {"done"}
    for job in jobs:
        res = read_json(run_dir(job, results) / "results.json")
        assert res["status"] == "success" and res["experiment"] == job.experiment
        assert ("reused_from" in res) == (job.experiment == "table2")
    assert (
        "| fig6_expert_weights | 2 | 2 | 0 | 0 | 0 |" in out
        and "| table2 | 2 | 2 | 0 | 0 | 0 |" in out
    )
    starts = [line for line in out.splitlines() if line.startswith("[reproduce] start ")]
    assert len(starts) == 4 and "(0/4 finished, 2 running)" in starts[1]  # side by side
    assert all("[adopt]" in line and "table2" in line for line in starts[2:])
    logs = sorted(
        str(p.relative_to(results / "reproduce_logs"))
        for p in (results / "reproduce_logs").rglob("*.log")
    )
    assert logs == [
        f"{e}/method={m},seed=42.log"
        for e in ("fig6_expert_weights", "table2")
        for m in ("lora_full", "moelora_dense")
    ]
    # analysis finds them as the grids' jobs: none of the four is listed as missing
    from analysis import collect

    _, runs, _ = collect.collect(results)
    missing = set(zip(*collect.missing_runs(runs)[["experiment", "job"]].T.values))
    assert ("table2", "method=icl seed=42") in missing  # not run: missing
    assert not {(j.experiment, f"method={j.method} seed=42") for j in jobs} & missing


def test_extra_overrides_restrict_or_extend_the_grid():
    from experiments.schedule import grid_jobs

    jobs, rest = grid_jobs("fig6_expert_weights", ["seed=43", "trainer=smoke"])
    assert jobs == [{"method": "moelora_dense", "seed": "43"}] and rest == ["trainer=smoke"]
    jobs, rest = grid_jobs("fig6_expert_weights", ["decoding=greedy,sample"])
    assert len(jobs) == 6 and {j["decoding"] for j in jobs} == {"greedy", "sample"} and not rest


def test_a_failed_input_skips_the_methods_that_compose_it(tmp_path, capsys):
    """LoRA (Single) fails (its model folder does not exist): Task-Arithmetic is not started."""
    results = tmp_path / "outputs"
    argv = [
        "--jobs",
        "2",
        "--results",
        str(results),
        "method=lora_single,task_arithmetic",
        "seed=42",
        "model=hf",
        f"model.path={tmp_path / 'no_model'}",
        "logger=none",
        "--only",
        "table2",
    ]
    assert reproduce.main(argv) == 1
    out = capsys.readouterr().out
    assert out.count("[reproduce] start ") == 1
    assert (
        "[reproduce] skip  table2 method=task_arithmetic seed=42: its input job(s) table2 "
        "method=lora_single seed=42 did not succeed" in out
    )
    assert "| table2 | 2 | 0 | 1 | 0 | 1 |" in out
    [single] = [
        j
        for j in build_jobs(["table2"], argv[4:8] + [f"paths.output_dir={results}"], results)
        if j.method == "lora_single"
    ]
    assert read_json(run_dir(single, results) / "results.json")["status"] == "failed"


def test_outcome_reads_results_and_the_log(tmp_path):
    job = Job(0, "fig6_expert_weights", {"method": "moelora_dense", "seed": "42"}, [])
    folder, log = run_dir(job, tmp_path), tmp_path / "job.log"
    log.write_text("$ run.py ...\n", encoding="utf-8")
    assert reproduce._outcome(job, tmp_path, 0, log) == "failed"  # no results.json
    write_json(folder / "results.json", {"status": "success"})
    assert reproduce._outcome(job, tmp_path, 0, log) == "success"
    assert reproduce._outcome(job, tmp_path, 1, log) == "failed"
    log.write_text("$ run.py ...\n[mismatch] it holds another job\n", encoding="utf-8")
    assert reproduce._outcome(job, tmp_path, 0, log) == "failed"  # old results kept
    log.write_text("$ run.py ...\n[busy] another process (pid 1) is running this job\n")
    assert reproduce._outcome(job, tmp_path, 0, log) == "busy"


def test_a_composition_method_alone_brings_its_input_jobs(tmp_path, capsys):
    [single, hub] = build_jobs(["table2"], ["method=lorahub", "seed=43"], tmp_path)
    assert (single.values, hub.values) == (
        {"method": "lora_single", "seed": "43"},
        {"method": "lorahub", "seed": "43"},
    )
    assert hub.inputs == hub.after == [single.index]
    # k=v items given after --only are overrides, as before the experiment names
    assert (
        reproduce.main(
            ["--dry-run", "--jobs", "2", "--only", "table2", "method=lorahub", "seed=43"]
        )
        == 0
    )
    assert sum(line.startswith("$") for line in capsys.readouterr().out.splitlines()) == 2
