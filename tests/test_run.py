"""run.py end to end: results.json, skip/overwrite, failures, bad input, multirun."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moelora.harness.runner import run
from moelora.utils.io import JobBusyError, job_lock, read_json, write_json
from tests.conftest import REPO_ROOT, compose, tiny_overrides


def _run(tiny_world, out: Path, *extra: str) -> tuple[int, Path]:
    cfg = compose(tiny_overrides(tiny_world, out, "method=lora_full", *extra))
    run_dir = out / "job"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, run_dir), run_dir


@pytest.fixture(scope="module")
def finished(tiny_world, tmp_path_factory):
    """One successful run shared by the read-only checks below."""
    out = tmp_path_factory.mktemp("finished")
    code, run_dir = _run(tiny_world, out)
    assert code == 0
    return out, run_dir


def test_run_writes_results_predictions_and_config(finished):
    _, run_dir = finished
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success"
    assert (r["method"], r["seed"], r["experiment"], r["benchmark"]) == (
        "lora_full",
        42,
        "default",
        "medsynth",
    )
    tasks = r["tasks"]
    assert set(r["scores"]) == set(tasks) | {"avg"}
    assert all(0.0 <= v <= 1.0 for v in r["scores"].values())
    assert r["scorer_mode"] == "official"
    assert r["params"]["trainable"] > 0 and r["params"]["total"] > r["params"]["trainable"]
    assert r["train"]["steps"] == 4 and r["timing"]["train_seconds"] > 0
    assert {"git_sha", "git_dirty", "versions", "device"} <= set(r["provenance"])
    preds = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 * len(tasks)
    assert {"input", "target", "answer_choices", "task_dataset", "sample_id"} <= set(preds[0])
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    stats = r["token_stats"]  # #12: unknown tokens and truncation per task
    assert set(stats) == {"train", "dev", "test"} and set(stats["train"]["tasks"]) == set(tasks)
    cell = stats["train"]["tasks"][tasks[0]]
    assert cell["samples"] > 0 and cell["prompt_tokens"] > 0
    assert 0.0 <= cell["prompt_unk_share"] <= 1.0 and 0.0 <= cell["answer_truncated_share"] <= 1.0


def test_same_seed_twice_gives_identical_predictions(tiny_world, tmp_path, finished):
    _, a = finished
    _, b = _run(tiny_world, tmp_path / "b")
    assert (a / "predictions.jsonl").read_text() == (b / "predictions.jsonl").read_text()
    assert (
        read_json(a / "results.json")["train"]["losses"]
        == read_json(b / "results.json")["train"]["losses"]
    )


def test_finished_run_is_skipped_unless_overwrite(tiny_world, tmp_path, capsys):
    _, run_dir = _run(tiny_world, tmp_path, "trainer.max_steps=1")
    before = (run_dir / "results.json").read_text()
    code, _ = _run(tiny_world, tmp_path, "trainer.max_steps=1")
    assert code == 0 and "[skip]" in capsys.readouterr().out
    assert (run_dir / "results.json").read_text() == before
    code, _ = _run(tiny_world, tmp_path, "trainer.max_steps=1", "overwrite=true")
    assert code == 0
    previous = list(run_dir.glob("results.*.previous.json"))
    assert len(previous) == 1 and previous[0].read_text() == before


def test_failed_job_records_status_and_error(tiny_world, tmp_path):
    code, run_dir = _run(
        tiny_world, tmp_path, "data.max_source_length=2", "data.max_truncated_fraction=0.5"
    )
    assert code == 1
    r = read_json(run_dir / "results.json")
    assert r["status"] == "failed"
    assert "max_source_length=2" in r["error"] and "Raise data.max_source_length" in r["error"]


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def bad_data(tiny_world, tmp_path):
    """A copy of the tiny data whose train split we can break."""
    data_dir, _ = tiny_world
    root = tmp_path / "bad"
    root.mkdir()
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
        (root / name).write_text((data_dir / name).read_text(encoding="utf-8"), encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda lines: lines[:2] + ["{not json"] + lines[3:], r"train.jsonl:3: malformed JSON"),
        (
            lambda lines: (
                [
                    json.dumps(
                        {k: v for k, v in json.loads(lines[0]).items() if k != "target"},
                        ensure_ascii=False,
                    )
                ]
                + lines[1:]
            ),
            r"train.jsonl:1: sample is missing field\(s\) \['target'\]",
        ),
        (
            lambda lines: (
                [lines[0].replace('"task_dataset": "', '"task_dataset": "XX-')] + lines[1:]
            ),
            r"train.jsonl:1: unknown task_dataset 'XX-",
        ),
        (lambda lines: [], r"train.jsonl: the split is empty"),
    ],
    ids=["malformed-line", "missing-field", "unknown-task", "empty-split"],
)
def test_bad_data_gets_a_clear_error(tiny_world, tmp_path, bad_data, mutate, message):
    lines = (bad_data / "train.jsonl").read_text(encoding="utf-8").splitlines()
    _write_lines(bad_data / "train.jsonl", mutate(lines))
    code, run_dir = _run(tiny_world, tmp_path, f"data.root={bad_data}")
    assert code == 1
    import re

    assert re.search(message, read_json(run_dir / "results.json")["error"])


def test_model_dir_without_tokenizer_is_rejected_early(tiny_world, tmp_path):
    _, model_dir = tiny_world
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text((model_dir / "config.json").read_text())
    code, run_dir = _run(tiny_world, tmp_path, f"model.path={broken}")
    assert code == 1
    assert "no tokenizer files" in read_json(run_dir / "results.json")["error"]
    code, run_dir = _run(tiny_world, tmp_path / "x", f"model.path={tmp_path / 'nowhere'}")
    assert "is not a directory" in read_json(run_dir / "results.json")["error"]


def _run_py(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_typo_and_unknown_option_are_errors(tiny_world, tmp_path):
    out = _run_py(["trainer.max_stepz=3", *tiny_overrides(tiny_world, tmp_path)], tmp_path)
    assert out.returncode != 0 and "max_stepz" in out.stderr
    out = _run_py(["method=lora_ful", *tiny_overrides(tiny_world, tmp_path)], tmp_path)
    assert out.returncode != 0
    assert "Available options in 'method'" in out.stderr and "lora_full" in out.stderr


def test_multirun_through_run_py_continues_past_a_failure(tiny_world, tmp_path):
    """The real CLI: one sweep, two seeds succeed, one job fails, the sweep goes on."""
    args = ["-m", "method=lora_full", "seed=42,43", *tiny_overrides(tiny_world, tmp_path)]
    out = _run_py(args, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "outputs" / "default" / "lora_full").rglob("results.json"))
    assert [p.parent.name for p in runs] == ["seed=42", "seed=43"]
    # the run dir is named from the config: experiment/method/other overrides/seed
    assert "trainer=smoke" in str(runs[0].parent.parent.name)
    assert all(read_json(p)["status"] == "success" for p in runs)
    assert "[sweep] 2 job(s)" in out.stdout
    base = [
        o
        for o in tiny_overrides(tiny_world, tmp_path)
        if not o.startswith(("data.max_source_length", "data.max_truncated_fraction"))
    ]
    failing = _run_py(
        [
            "-m",
            "method=lora_full",
            "seed=44",
            "data.max_source_length=2,96",
            *base,
            "data.max_truncated_fraction=0.5",
            "trainer.max_steps=1",
        ],
        tmp_path,
    )
    assert failing.returncode == 0
    statuses = sorted(
        read_json(p)["status"] for p in (tmp_path / "outputs").rglob("seed=44/results.json")
    )
    assert statuses == ["failed", "success"]
    # the summary lists this sweep's two jobs, not the earlier sweep's in the same folder
    summary = failing.stdout[failing.stdout.index("[sweep]") :]
    assert "[sweep] 2 job(s)" in summary and "seed=42" not in summary
    assert "[sweep] 1 job(s) failed" in summary
    assert not (tmp_path / "outputs" / "default" / ".sweeps").exists()  # markers removed


@pytest.mark.slow
def test_sweep_runs_in_parallel_with_the_submitit_local_launcher(tiny_world, tmp_path):
    """`hydra/launcher=submitit_local`: the same jobs, launched by submitit (pip extra `slurm`);
    each sweep's summary lists its own jobs, and no literal `.submitit/%j` folder appears."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweeps = []
    for seeds in ("42,43", "44"):
        out = _run_py(
            [
                "-m",
                "hydra/launcher=submitit_local",
                "method=lora_full",
                f"seed={seeds}",
                *tiny_overrides(tiny_world, tmp_path),
                "trainer.max_steps=1",
            ],
            tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        sweeps.append(out.stdout[out.stdout.index("[sweep]") :])
    runs = sorted((tmp_path / "outputs" / "default" / "lora_full").rglob("results.json"))
    assert [read_json(p)["status"] for p in runs] == ["success"] * 3
    assert "[sweep] 2 job(s)" in sweeps[0] and "[sweep] 1 job(s)" in sweeps[1]
    assert "seed=44" in sweeps[1] and "seed=42" not in sweeps[1]
    submitit = tmp_path / "outputs" / "default" / ".submitit"
    assert submitit.is_dir() and not list(tmp_path.rglob("%j"))
    assert len(list(submitit.glob("*_0_log.out"))) == 3


def test_every_trained_method_runs_through_run_py(tiny_world, tmp_path):
    """One smoke run per method through the real CLI, in one sweep.

    ICL, P-Tuning and the LoRA (Single) → Task-Arithmetic → LoRAHub chain go through run.py in
    their own tests (tests/test_baselines_icl.py, test_baselines_ptuning.py, the slow chain)."""
    own_tests = {"icl", "ptuning", "lora_single", "task_arithmetic", "lorahub"}
    methods = sorted(
        p.stem for p in (REPO_ROOT / "conf" / "method").glob("*.yaml") if p.stem not in own_tests
    )
    assert {"lora_full", "moelora_dense", "moelora_rbt", "molora"} <= set(methods)
    out = _run_py(
        ["-m", f"method={','.join(methods)}", "seed=42", *tiny_overrides(tiny_world, tmp_path)],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = {
        read_json(p)["method"]: read_json(p)
        for p in (tmp_path / "outputs" / "default").rglob("results.json")
    }
    assert sorted(results) == methods
    for method, res in results.items():
        assert res["status"] == "success", (method, res.get("error"))
        assert 0.0 <= res["scores"]["avg"] <= 1.0, method


def test_identical_job_of_another_experiment_is_reused(tiny_world, tmp_path, capsys):
    """Fig. 4/6 cells are Table 2 cells: a second experiment adopts the finished job."""
    out = tmp_path / "outputs"  # paths.output_dir under tiny_overrides(tmp_path)

    def job(experiment: str, name: str, *extra: str) -> Path:
        cfg = compose(
            tiny_overrides(
                tiny_world,
                tmp_path,
                "method=lora_full",
                "trainer.max_steps=1",
                f"experiment_name={experiment}",
                *extra,
            )
        )
        run_dir = out / experiment / name
        run_dir.mkdir(parents=True)
        assert run(cfg, run_dir) == 0
        return run_dir

    src = job("default", "a")
    capsys.readouterr()
    dst = job("fig6", "a", "threads=1")
    assert "[reuse]" in capsys.readouterr().out
    a, b = read_json(src / "results.json"), read_json(dst / "results.json")
    assert b["reused_from"]["run_dir"] == str(src) and b["experiment"] == "fig6"
    assert b["scores"] == a["scores"] and b["timing"] == a["timing"]
    assert (dst / "predictions.jsonl").read_text() == (src / "predictions.jsonl").read_text()
    assert (dst / "adapter" / "adapter_model.safetensors").is_file()
    changed = job("fig6", "b", "trainer.max_steps=2")  # another job: trains
    assert "reused_from" not in read_json(changed / "results.json")
    forced = job("fig4", "a", "reuse=false")
    f = read_json(forced / "results.json")
    assert "reused_from" not in f and f["train"]["losses"] == a["train"]["losses"]


def test_job_that_differs_only_in_inference_evaluates_the_trained_weights(
    tiny_world, tmp_path, capsys
):
    """Fig. 5 runs each method merged and unmerged: the second job trains nothing."""
    out = tmp_path / "outputs"

    def job(experiment: str, *extra: str) -> Path:
        cfg = compose(
            tiny_overrides(
                tiny_world,
                tmp_path,
                "method=moelora_dense",
                "trainer.max_steps=2",
                f"experiment_name={experiment}",
                *extra,
            )
        )
        run_dir = out / experiment / "job"
        run_dir.mkdir(parents=True)
        assert run(cfg, run_dir) == 0
        return run_dir

    src = job("table2", "method.infer=unmerged")
    capsys.readouterr()
    dst = job("fig5", "method.infer=merged_per_task")
    assert "only inference differs" in capsys.readouterr().out
    a, b = read_json(src / "results.json"), read_json(dst / "results.json")
    assert b["trained_by"] == str(src) and "reused_from" not in b
    assert (
        b["timing"]["infer_mode"] == "merged_per_task" and a["timing"]["infer_mode"] == "unmerged"
    )
    assert b["train"]["resumed_from"] == 2 and b["train"]["losses"] == a["train"]["losses"]
    assert b["timing"]["train_step_seconds"] is None
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (src, dst))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)


def test_resumed_job_adds_the_time_of_the_killed_attempt(tiny_world, tmp_path):
    """A killed attempt counts from its start to its last saved progress (reports/costs.md)."""
    import time

    run_dir = tmp_path / "job"
    (run_dir / "checkpoints").mkdir(parents=True)
    progress = run_dir / "checkpoints" / "last.json"
    progress.write_text('{"step": 0, "path": "gone"}')
    now = time.time()
    os.utime(progress, (now - 40, now - 40))
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "status": "running",
                "started_at": now - 100,
                "timing": {"previous_attempts_seconds": 7.0},
            }
        )
    )
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full", "trainer.max_steps=1"))
    assert run(cfg, run_dir) == 0
    timing = read_json(run_dir / "results.json")["timing"]
    assert timing["previous_attempts_seconds"] == pytest.approx(7.0 + 60.0, abs=1.0)


def test_a_job_already_running_elsewhere_is_left_alone(tiny_world, tmp_path, capsys):
    """Two sweeps that share a job (or one command started twice) must not write one folder
    at once: the second gets a clear error and the folder is untouched."""
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full"))
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    with job_lock(run_dir):
        assert run(cfg, run_dir) == 1
        assert sorted(p.name for p in run_dir.iterdir()) == [".job.lock"]
    err = capsys.readouterr().err
    assert f"[busy] {run_dir}: another process (pid {os.getpid()}) is running this job" in err


def test_a_killed_job_leaves_no_stale_lock(tmp_path):
    """The lock is the operating system's: a process killed while holding it releases it."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from moelora.utils.io import job_lock\n"
            f"with job_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JobBusyError, match=f"pid {holder.pid}"):
            with job_lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with job_lock(tmp_path):  # free again once the holder is gone
        assert (tmp_path / ".job.lock").read_text() == str(os.getpid())


def test_sweep_summary_tells_failed_running_and_stopped_jobs_apart(tmp_path, capsys):
    """A sweep that meets a job another process runs, or one that was killed, says what to do
    about each instead of calling them all failures; it lists only the jobs it started (the
    callbacks run as Hydra calls them), not those of earlier sweeps into the same folder."""
    from omegaconf import OmegaConf

    from moelora.harness.hydra_callbacks import SweepSummary

    def job_config(num: int, run_dir: Path):
        return OmegaConf.create(
            {
                "hydra": {
                    "sweep": {"dir": str(tmp_path)},
                    "job": {"num": num},
                    "runtime": {"output_dir": str(run_dir)},
                }
            }
        )

    for name, status in [
        ("a", "success"),
        ("b", "failed"),
        ("c", "running"),
        ("d", "running"),
        ("earlier", "success"),
    ]:
        (tmp_path / name).mkdir()
        write_json(
            tmp_path / name / "results.json",
            {"status": status, "method": "lora_full", "seed": 42, "scores": {"avg": 0.5}},
        )
    (tmp_path / "d" / ".job.lock").write_text("12345")  # left by a killed job: lock free
    summary = SweepSummary()
    sweep = job_config(0, tmp_path)
    summary.on_multirun_start(sweep)
    for num, name in enumerate(["a", "b", "c", "d", "e"]):  # e: a job that wrote nothing
        summary.on_job_start(job_config(num, tmp_path / name))
    with job_lock(tmp_path / "c"):
        summary.on_multirun_end(sweep)
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert [r[0] for r in rows] == ["success", "failed", "running", "stopped", "no-result"]
    assert [r[-1] for r in rows] == ["a", "b", "c", "d", "e"]  # not "earlier"
    assert "[sweep] 5 job(s)" in out
    assert "[sweep] 1 job(s) are running in another process" in out
    assert "[sweep] 1 job(s) stopped before finishing (killed or crashed); rerun" in out
    assert "[sweep] 1 job(s) wrote no results.json; see their run.log" in out
    assert "[sweep] 1 job(s) failed; see their results.json 'error'" in out
    assert (tmp_path / "d" / ".job.lock").read_text() == "12345"  # the check wrote nothing
    assert not (tmp_path / ".sweeps").exists()


def test_local_submitit_launcher_keeps_its_files_without_a_literal_job_id_folder():
    """submitit's local executor creates its folder as written: the plugin's default
    `.submitit/%j` would leave a folder named `%j` (run.py registers the fix)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from moelora.harness.hydra_callbacks import register_launchers

    register_launchers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hydra/launcher=submitit_local", "model=hf", "model.path=/x"],
        )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit"
    assert launcher["_target_"].endswith("LocalLauncher")


KILLER = """
import os, runpy, signal, sys
import torch

calls = 0
step = torch.optim.AdamW.step


def dying_step(self, *args, **kwargs):
    global calls
    calls += 1
    if calls == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)      # no cleanup, no flush: a real kill -9
    return step(self, *args, **kwargs)


torch.optim.AdamW.step = dying_step
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_killed_run_py_resumes_to_bit_identical_adapters(tiny_world, tmp_path, finished):
    """kill -9 during training (step 4 of 4, after the step-2 checkpoint and the step-3 log),
    then the same command again: the final adapter is byte for byte the uninterrupted run's
    (``finished``), metrics.csv has every (step, key) once, and the temp file a kill during a
    results.json write leaves is gone."""
    _, reference = finished
    run_dir = tmp_path / "killed"
    overrides = tiny_overrides(tiny_world, tmp_path, "method=lora_full", "logger=csv")
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "KILL_AT_STEP": "4"}
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(REPO_ROOT / "run.py"),
            *overrides,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_json(run_dir / "results.json")["status"] == "running"
    assert json.loads((run_dir / "checkpoints" / "last.json").read_text())["step"] == 2
    stray = run_dir / ".results.json.k1ll3d.tmp"  # what a kill inside write_json leaves
    stray.write_text('{"status": "succ')
    assert run(compose(overrides), run_dir) == 0  # the rerun: resume=auto
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success" and r["train"]["resumed_from"] == 2
    assert r["train"]["losses"] == read_json(reference / "results.json")["train"]["losses"]
    name = "adapter/adapter_model.safetensors"
    assert (run_dir / name).read_bytes() == (reference / name).read_bytes()
    assert (run_dir / "predictions.jsonl").read_text() == (
        reference / "predictions.jsonl"
    ).read_text()
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    keys = [(step, key) for step, key, _ in rows]
    assert (
        len(keys) == len(set(keys)) and ("3", "train/loss") in keys and ("4", "train/loss") in keys
    )
    assert not stray.exists()
