"""No number from a broken run, no file from a bad one (docs/bad_inputs.md): diverged
training, damaged files, run folders that name code, secrets in URLs, task names as paths."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from moelora.harness.runner import run
from moelora.utils.io import (
    NonFiniteValueError,
    UnsafePathError,
    inside,
    read_json,
    write_json,
    write_jsonl,
)
from moelora.utils.manifest import ManifestError, verify_manifest, write_manifest
from tests.conftest import REPO_ROOT, compose, tiny_overrides


def _run(tiny_world, out: Path, *extra: str, method: str = "lora_full") -> tuple[int, Path]:
    cfg = compose(tiny_overrides(tiny_world, out, f"method={method}", *extra))
    run_dir = out / "job"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, run_dir), run_dir


@pytest.fixture(scope="module")
def finished(tiny_world, tmp_path_factory):
    """One successful MOELoRA run with checkpoints; tests copy it before damaging anything."""
    out = tmp_path_factory.mktemp("robust")
    code, run_dir = _run(tiny_world, out, "trainer.save_every=2", method="moelora_dense")
    assert code == 0
    return out, run_dir


def _copy(finished, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    out, run_dir = finished
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return tmp_path / "out", tmp_path / "out" / "job"


# ---- 1. training that notices ----------------------------------------------------------------
def test_a_diverged_run_fails_with_the_step_the_last_finite_loss_and_the_fix(tiny_world, tmp_path):
    code, run_dir = _run(tiny_world, tmp_path, "trainer.lr=1e3", "trainer.log_every=1")
    assert code == 1
    r = read_json(run_dir / "results.json")  # strict JSON: no literal NaN
    assert r["status"] == "failed" and "scores" not in r
    assert "training diverged" in r["error"] and "lower trainer.lr" in r["error"]
    step, last = r["diverged"]["step"], r["diverged"]["last_finite_loss"]
    assert step >= 1 and (last is None or math.isfinite(last))
    assert f"at step {step}" in r["error"]
    assert not (run_dir / "adapter").exists() and not (run_dir / "predictions.jsonl").exists()
    assert not (run_dir / "manifest.json").exists()
    for saved in run_dir.rglob("adapter_model.safetensors"):  # checkpoints before it: finite
        from safetensors.torch import load_file

        assert all(torch.isfinite(t).all() for t in load_file(str(saved)).values())


def test_no_adapter_is_saved_or_loaded_with_non_finite_weights(tmp_path):
    from moelora.engine.adapters import load_adapter, save_adapter
    from moelora.engine.finite import NonFiniteError

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="weight"):
        save_adapter(model, tmp_path / "a", meta={})
    assert not (tmp_path / "a" / "adapter_model.safetensors").exists()
    with torch.no_grad():
        model.weight[0, 0] = 1.0
    save_adapter(model, tmp_path / "a", meta={})
    from safetensors.torch import save_file

    save_file(
        {"weight": torch.full((2, 2), float("inf")), "bias": torch.zeros(2)},
        str(tmp_path / "a" / "adapter_model.safetensors"),
    )
    with pytest.raises(NonFiniteError, match="adapter_model.safetensors: adapter not loaded"):
        load_adapter(model, tmp_path / "a")


def test_json_writers_refuse_nan_and_infinity_naming_the_key(tmp_path):
    with pytest.raises(NonFiniteValueError, match=r"scores\.avg.*NaN or infinite"):
        write_json(tmp_path / "r.json", {"scores": {"avg": float("nan")}})
    with pytest.raises(NonFiniteValueError, match=r"train\.losses\[1\]\[1\]"):
        write_json(tmp_path / "r.json", {"train": {"losses": [[1, 2.0], [2, float("inf")]]}})
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(NonFiniteValueError, match=r"x\.json"):
        write_jsonl(tmp_path / "x.json", [{"a": 1.0}, {"a": -float("inf")}])
    write_json(tmp_path / "r.json", {"a": 1.5})
    assert read_json(tmp_path / "r.json") == {"a": 1.5}


# ---- 2. integrity on disk --------------------------------------------------------------------
def test_a_finished_run_lists_every_file_it_wrote_in_its_manifest(finished):
    _, run_dir = finished
    files = read_json(run_dir / "manifest.json")["files"]
    assert {
        "results.json",
        "config.yaml",
        "predictions.jsonl",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "checkpoints/step-000004/optimizer.safetensors",
    } <= set(files)
    assert read_json(run_dir / "results.json")["manifest"] == "manifest.json"
    assert verify_manifest(run_dir)


def test_a_cut_adapter_is_not_skipped_as_done_nor_loaded(finished, tiny_world, tmp_path, capsys):
    from moelora.inference.load import RunLoadError, load_run

    out, run_dir = _copy(finished, tmp_path)
    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    before = (run_dir / "results.json").read_text()
    adapter.write_bytes(adapter.read_bytes()[:1000])
    code, _ = _run(tiny_world, out, "trainer.save_every=2", method="moelora_dense")
    err = capsys.readouterr().err
    assert code == 1 and "[skip]" not in err and "[damaged]" in err
    assert "adapter_model.safetensors: 1000 bytes" in err and "overwrite=true" in err
    assert (run_dir / "results.json").read_text() == before  # nothing overwritten
    with pytest.raises(RunLoadError, match=r"adapter_model\.safetensors: 1000 bytes"):
        load_run(run_dir)


def test_overwritten_bytes_with_an_intact_header_are_refused(finished, tmp_path, capsys):
    from moelora.inference.load import RunLoadError, load_run
    from moelora.inference.predict import main as predict_main

    _, run_dir = _copy(finished, tmp_path)
    adapter = run_dir / "adapter" / "adapter_model.safetensors"
    data = bytearray(adapter.read_bytes())
    data[-64:] = b"\x00" * 64  # same size, header untouched
    adapter.write_bytes(bytes(data))
    with pytest.raises(RunLoadError, match="SHA-256.*differs"):
        load_run(run_dir)
    args = [str(run_dir), "--input", str(run_dir / "predictions.jsonl")]
    assert predict_main([*args, "--out", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "[predict] error:" in err and "adapter_model.safetensors: its SHA-256" in err
    assert not (tmp_path / "p.jsonl").exists()
    from moelora.inference.export import main as export_main

    with pytest.raises(RunLoadError, match="adapter_model.safetensors: its SHA-256"):
        export_main([str(run_dir), "--out", str(tmp_path / "export")])
    assert not (tmp_path / "export").exists()


def test_a_cut_results_json_is_neither_recomputed_nor_trusted(finished, tiny_world, tmp_path):
    out, run_dir = _copy(finished, tmp_path)
    text = (run_dir / "results.json").read_text()
    (run_dir / "results.json").write_text(text[: len(text) // 2])
    code, _ = _run(tiny_world, out, "trainer.save_every=2", method="moelora_dense")
    assert code == 1
    assert (run_dir / "results.json").read_text() == text[: len(text) // 2]


def test_resume_skips_a_garbled_checkpoint_and_says_so(tmp_path):
    from moelora.engine.checkpoint import save_checkpoint, verified_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for step in (2, 4):
        save_checkpoint(
            tmp_path, step=step, model=model, optimizer=opt, scheduler=sched, adapter_meta={}
        )
    garbled = tmp_path / "step-000004" / "optimizer.safetensors"
    data = bytearray(garbled.read_bytes())
    data[-8:] = b"\xff" * 8
    garbled.write_bytes(bytes(data))
    path, skipped = verified_checkpoint(tmp_path)
    assert path == tmp_path / "step-000002"
    assert len(skipped) == 1 and "step-000004/optimizer.safetensors" in skipped[0]


def test_a_run_without_manifest_is_legacy_but_a_wrong_manifest_never_passes(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert verify_manifest(tmp_path) is False  # legacy: the caller notes it
    write_manifest(tmp_path)
    assert verify_manifest(tmp_path) is True
    (tmp_path / "a.txt").write_text("y")
    with pytest.raises(ManifestError, match=r"a\.txt: its SHA-256"):
        verify_manifest(tmp_path)
    (tmp_path / "a.txt").unlink()
    with pytest.raises(ManifestError, match="missing"):
        verify_manifest(tmp_path)


# ---- 3. run folders are data, not code ---------------------------------------------------------
def test_a_run_folder_cannot_name_a_module_to_import(finished, tmp_path):
    from moelora.inference.load import RunLoadError, load_run, read_run_config

    _, run_dir = _copy(finished, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("pipeline: joint", "pipeline: this.pipeline"))
    with pytest.raises(RunLoadError, match=r"'this\.pipeline'.*not one of the project"):
        read_run_config(run_dir)
    # the adapter's builder: refused by name, before anything is imported
    _, run_dir = _copy(finished, tmp_path / "b")
    meta_path = run_dir / "adapter" / "adapter_config.json"
    meta = read_json(meta_path)
    meta["builder"] = "os.system"
    write_json(meta_path, meta)
    write_manifest(run_dir)  # even a consistent manifest does not make it trusted
    with pytest.raises(RunLoadError, match=r"'os\.system'"):
        load_run(run_dir)


def test_registered_names_include_the_old_spellings():
    from moelora.harness.allowlist import UntrustedNameError, check_name

    assert check_name("joint", kind="method", source="x") == "moelora.harness.context.joint"
    assert (
        check_name("moelora.moe.build", kind="method", source="x") == "moelora.method.model.build"
    )
    assert check_name("baselines.lora_single.pipeline", kind="method", source="x")
    with pytest.raises(UntrustedNameError, match="subprocess.run"):
        check_name("subprocess.run", kind="target", source="x")


def test_trust_remote_code_comes_from_the_caller_only(finished, tmp_path, monkeypatch):
    import moelora.models.loading as loading
    from moelora.inference.load import load_run

    _, run_dir = _copy(finished, tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(
        config.read_text().replace("trust_remote_code: false", "trust_remote_code: true")
    )
    assert "trust_remote_code: true" in config.read_text()
    write_manifest(run_dir)
    seen = []
    real = loading.load_base_model

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_base_model", spy)
    loaded = load_run(run_dir)
    assert seen == [False] and loaded.trust_remote_code is False


# ---- 5. names that cannot escape -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/tmp/evil", "path separator"),
        ("../up", "path separator"),
        ("..", "starts with '.'"),
        ("a\\b", "path separator"),
        ("a\x00b", "control character"),
        ("x" * 65, "65 characters"),
        ("", "is empty"),
    ],
)
def test_task_names_are_checked_where_they_enter(name, problem):
    from moelora.method.tasks import TaskMap

    with pytest.raises(ValueError, match=f"task name .*{problem}.*rename it in data.tasks"):
        TaskMap(["CMeIE", name])


def test_paths_built_from_names_stay_inside_their_folder(tmp_path):
    assert inside(tmp_path, "CMeIE", "snapshots") == tmp_path / "CMeIE" / "snapshots"
    for bad in ("/etc", "../x", "a/../../x"):
        with pytest.raises(UnsafePathError, match="would leave"):
            inside(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePathError):
        inside(tmp_path, "link", "x")


def test_an_absolute_task_name_writes_nothing_outside_the_run(tiny_world, tmp_path):
    evil = tmp_path / "outside"
    code, run_dir = _run(
        tiny_world,
        tmp_path / "out",
        f"data.tasks=[{evil}]",
        "data.drop_unlisted_tasks=true",
        method="lora_single",
    )
    assert code == 1 and not evil.exists()
    assert "path separator" in read_json(run_dir / "results.json")["error"]


def test_export_refuses_a_task_name_that_is_a_path():
    from moelora.method.tasks import check_task_name

    with pytest.raises(ValueError, match="path separator"):
        check_task_name("../../etc")
    assert json.dumps(check_task_name("CHIP-CDN"))


# ---- 7. interrupted jobs say so --------------------------------------------------------------
def _start_sweep(tiny_world, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    args = [
        "-m",
        "method=lora_full",
        "seed=42",
        *tiny_overrides(tiny_world, tmp_path),
        "trainer.max_steps=100000",
        "trainer.save_every=1",
        "trainer.log_every=1",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "outputs").rglob("checkpoints/last.json"))
        if found:
            return proc, found[0].parents[1]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the job saved no checkpoint: {proc.communicate()[1][-3000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_marks_the_job_interrupted_and_prints_the_sweep_summary(tiny_world, tmp_path, sig):
    proc, run_dir = _start_sweep(tiny_world, tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    r = read_json(run_dir / "results.json")
    assert r["status"] == "interrupted", err[-3000:]
    assert r["interrupted"]["signal"] == sig.name and r["interrupted"]["step"] >= 1
    assert f"after optimiser step {r['interrupted']['step']}" in r["error"]
    assert "[sweep] 1 job(s)" in out and "interrupted" in out
    assert "rerun the same command to resume" in out
    from analysis.collect import collect

    _, runs, _ = collect(tmp_path / "outputs")
    assert list(runs["status"]) == ["interrupted"]


def test_report_tells_running_stopped_interrupted_and_invalid_runs_apart(tmp_path):
    from analysis.collect import collect
    from moelora.utils.io import job_lock

    base = {"experiment": "e", "method": "m", "tasks": ["A"], "overrides": []}
    for seed, extra in enumerate(
        [
            {"status": "running"},
            {"status": "running"},
            {"status": "interrupted", "error": "interrupted by SIGTERM after optimiser step 3"},
            {"status": "success", "scores": {"A": 0.5, "avg": 0.5}},
            {"status": "success", "scores": {"A": 0.5, "avg": 0.5}},
        ]
    ):
        d = tmp_path / f"seed={seed}"
        write_json(d / "results.json", {**base, "seed": seed, **extra})
    # seed 3: a diverged run of old code, whose results.json holds a literal NaN
    (tmp_path / "seed=3" / "results.json").write_text(
        json.dumps({**base, "seed": 3, "status": "success", "scores": {"A": math.nan}})
    )
    write_manifest(tmp_path / "seed=4")
    (tmp_path / "seed=4" / "results.json").write_text(
        (tmp_path / "seed=4" / "results.json").read_text().replace("0.5", "0.9")
    )
    with job_lock(tmp_path / "seed=0"):
        _, runs, _ = collect(tmp_path)
    status = dict(zip(runs["seed"], runs["status"], strict=True))
    assert status == {0: "running", 1: "stopped", 2: "interrupted", 3: "invalid", 4: "invalid"}
    errors = dict(zip(runs["seed"], runs["error"], strict=True))
    assert "scores.A is NaN" in errors[3] and "SHA-256" in errors[4]


# ---- 6. all input is checked before the first step ------------------------------------------------
def _world_with(tiny_world, tmp_path: Path, split: str, edit) -> tuple[Path, Path]:
    import shutil

    data_dir, model_dir = tiny_world
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    path = copy / f"{split}.jsonl"
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    text = "".join(line + "\n" for line in edit(lines))
    path.write_text(text, encoding="utf-8")
    return copy, model_dir


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda rows: (
                [json.dumps(rows[0]).replace(json.dumps(rows[0]["sample_id"]), "NaN")]
                + [json.dumps(r) for r in rows[1:]]
            ),
            r"test\.jsonl:1: sample_id nan is not a non-empty string",
        ),
        (
            lambda rows: [json.dumps(r) for r in rows if r["task_dataset"] != "MedDG"],
            r"test\.jsonl: the test split has no line of task\(s\) \['MedDG'\]",
        ),
    ],
    ids=["nan-sample-id", "task-missing-from-test"],
)
def test_bad_test_data_fails_before_the_first_training_step(tiny_world, tmp_path, edit, message):
    world = _world_with(tiny_world, tmp_path, "test", edit)
    code, run_dir = _run(world, tmp_path / "out", "trainer.save_every=1")
    assert code == 1
    r = read_json(run_dir / "results.json")
    assert r["status"] == "failed" and re.search(message, r["error"]), r["error"]
    assert "train" not in r and not (run_dir / "checkpoints").exists()


def test_a_killed_run_with_a_garbled_checkpoint_resumes_from_the_one_before(
    finished, tiny_world, tmp_path, capsys
):
    out, run_dir = _copy(finished, tmp_path)
    results = read_json(run_dir / "results.json")
    write_json(run_dir / "results.json", {**results, "status": "running"})  # as if killed
    (run_dir / "manifest.json").unlink()
    garbled = run_dir / "checkpoints" / "step-000004" / "optimizer.safetensors"
    data = bytearray(garbled.read_bytes())
    data[-16:] = b"\xff" * 16  # NaN bit patterns, header intact
    garbled.write_bytes(bytes(data))
    code, _ = _run(tiny_world, out, "trainer.save_every=2", method="moelora_dense")
    assert code == 0
    printed = capsys.readouterr().out
    assert "[resume] skipped a checkpoint" in printed and "step-000004/optimizer" in printed
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success" and r["train"]["resumed_from"] == 2
    assert r["train"]["losses"] == results["train"]["losses"]  # the same weights as before
    assert verify_manifest(run_dir)


def test_a_composition_uses_its_input_run_only_while_it_verifies(tmp_path):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from baselines.compose import find_input_run

    single = tmp_path / "single"
    write_json(single / "results.json", {"status": "success", "manifest": "manifest.json"})
    (single / "adapters" / "CMeIE").mkdir(parents=True)
    (single / "adapters" / "CMeIE" / "adapter_model.safetensors").write_bytes(b"x" * 100)
    write_manifest(single)
    cfg = OmegaConf.create(
        {
            "seed": 42,
            "method": {
                "name": "task_arithmetic",
                "inputs": {"method": "lora_single", "run_dir": str(single)},
            },
        }
    )
    ctx = SimpleNamespace(cfg=cfg, run_dir=tmp_path / "ta" / "seed=42")
    assert find_input_run(ctx) == single
    (single / "adapters" / "CMeIE" / "adapter_model.safetensors").write_bytes(b"x" * 99)
    with pytest.raises(
        ManifestError, match=r"CMeIE/adapter_model\.safetensors: 99 bytes.*overwrite"
    ):
        find_input_run(ctx)


def test_a_run_from_before_manifests_loads_with_a_note(finished, tmp_path, capsys):
    from moelora.inference.load import RunLoadError, load_run

    _, run_dir = _copy(finished, tmp_path)
    (run_dir / "manifest.json").unlink()
    with pytest.raises(RunLoadError, match="manifest.json: missing, but results.json says"):
        load_run(run_dir)  # a removed manifest does not make a run legacy
    results = read_json(run_dir / "results.json")
    del results["manifest"]
    write_json(run_dir / "results.json", results)
    assert load_run(run_dir).model is not None
    assert "[legacy]" in capsys.readouterr().err
