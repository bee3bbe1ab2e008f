"""#12: every result traceable to the inputs that made it, and no silent wrong results.

Job identity (skip / mismatch), run directory names, builds only where the defaults point,
keys nothing reads, bad values named before the run directory is touched, secrets redacted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from moelora.harness.runner import run
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, build_tiny_model, compose, tiny_overrides


def _copy_world(tiny_world, root: Path) -> tuple[Path, Path]:
    """A private copy of the tiny data and model, so a test can change them in place."""
    data_dir, model_dir = tiny_world
    data, model = root / "data", root / "model"
    shutil.copytree(data_dir, data)
    shutil.copytree(model_dir, model)
    return data, model


def _job(world, out: Path, run_dir: Path, *extra: str) -> int:
    cfg = compose(tiny_overrides(world, out, "method=lora_full", "trainer.max_steps=1", *extra))
    run_dir.mkdir(parents=True, exist_ok=True)
    return run(cfg, run_dir)


# ---- 1. a changed model or dataset is never "already done" ------------------------------
def test_a_changed_model_or_dataset_is_never_taken_for_a_finished_run(tiny_world, tmp_path, capsys):
    """The same folder with another model, the same model path with other weights, or other
    data: not [skip], but an error naming what differs; the finished results are untouched."""
    world = _copy_world(tiny_world, tmp_path / "world")
    data, model = world
    run_dir = tmp_path / "job"
    assert _job(world, tmp_path, run_dir) == 0
    before = (run_dir / "results.json").read_text()
    r = json.loads(before)
    assert r["inputs"]["model"]["path"] == str(model) and r["inputs"]["world_size"] == 1
    assert set(r["inputs"]["data"]["files"]) == {"train", "dev", "test"}
    assert len(r["identity"]["job"]) == 64 and r["world_size"] == 1
    assert _job(world, tmp_path, run_dir) == 0 and "[skip]" in capsys.readouterr().out

    other = build_tiny_model(model, tmp_path / "other_model", seed=1)  # same shapes, other weights
    assert _job(world, tmp_path, run_dir, f"model.path={other}") == 1
    err = capsys.readouterr().err
    assert "[mismatch]" in err and "finished run of another job" in err
    assert f'model.path: "{model}" → "{other}"' in err and "overwrite=true" in err

    shutil.copy(other / "model.safetensors", model / "model.safetensors")  # same path, new weights
    assert _job(world, tmp_path, run_dir) == 1
    assert f"model at {model}: files that differ: model.safetensors" in capsys.readouterr().err

    shutil.copy(tiny_world[1] / "model.safetensors", model / "model.safetensors")
    lines = (data / "test.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "test.jsonl").write_text("".join(lines[1:]), encoding="utf-8")
    assert _job(world, tmp_path, run_dir) == 1
    assert "data test (test.jsonl): sha256" in capsys.readouterr().err
    assert (run_dir / "results.json").read_text() == before  # never overwritten

    assert _job(world, tmp_path, run_dir, "overwrite=true") == 0  # the fix it names
    assert (
        read_json(run_dir / "results.json")["inputs"]["data"]["files"]["test"]["sha256"]
        != r["inputs"]["data"]["files"]["test"]["sha256"]
    )


def test_checkpoints_of_another_training_are_never_resumed(tiny_world, tmp_path, capsys):
    """A killed run leaves checkpoints; rerun on other data, they would be resumed silently."""
    world = _copy_world(tiny_world, tmp_path / "world")
    train = world[0] / "train.jsonl"
    run_dir = tmp_path / "job"
    steps = ("trainer.max_steps=2", "trainer.save_every=1")
    assert _job(world, tmp_path, run_dir, *steps) == 0
    res = read_json(run_dir / "results.json")
    res["status"] = "running"  # as a kill after the last checkpoint leaves it
    (run_dir / "results.json").write_text(json.dumps(res))
    original = train.read_text(encoding="utf-8")
    train.write_text("".join(original.splitlines(keepends=True)[1:]), encoding="utf-8")
    assert _job(world, tmp_path, run_dir, *steps) == 1
    err = capsys.readouterr().err
    assert "holds checkpoints of an unfinished run" in err and "data train (train.jsonl)" in err
    train.write_text(original, encoding="utf-8")
    assert _job(world, tmp_path, run_dir, *steps, "decoding=greedy") == 0  # only inference differs
    assert read_json(run_dir / "results.json")["train"]["resumed_from"] == 2


def test_an_unchanged_legacy_run_is_skipped_with_a_note(tiny_world, tmp_path, capsys):
    """Results written before identities existed keep being skipped when their config matches."""
    world = _copy_world(tiny_world, tmp_path / "world")
    run_dir = tmp_path / "job"
    assert _job(world, tmp_path, run_dir) == 0
    res = read_json(run_dir / "results.json")
    for key in ("identity", "inputs", "manifest"):  # as written before both existed
        del res[key]
    (run_dir / "results.json").write_text(json.dumps(res))
    (run_dir / "manifest.json").unlink()
    assert _job(world, tmp_path, run_dir) == 0
    out = capsys.readouterr().out
    assert "recorded before input fingerprints" in out and "no manifest.json" in out
    assert _job(world, tmp_path, run_dir, "seed=7") == 1
    assert "seed: 42 → 7" in capsys.readouterr().err


# ---- run directory names ---------------------------------------------------------------------
def _hydra_run_dir(overrides: list[str]) -> str:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from moelora.harness.naming import register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    hydra = HydraConfig.instance()
    try:
        hydra.set_config(cfg)  # what Hydra does before it resolves hydra.run.dir
        return str(OmegaConf.select(cfg, "hydra.run.dir"))
    finally:
        hydra.cfg = None  # no Hydra state leaks into later tests


def test_run_directory_names_tell_inputs_apart_and_never_nest():
    """Hydra resolves conf/hydra/default.yaml as run.py does: defaults keep their layout, two
    models get two folders, a URL or a secret never becomes nested folders or a file name."""
    assert _hydra_run_dir([]) == "./outputs/default/moelora_dense//seed=42"
    a = _hydra_run_dir(["model=hf", "model.path=/models/A", "trainer=smoke"])
    b = _hydra_run_dir(["model=hf", "model.path=/models/B", "trainer=smoke"])
    assert a != b and "/model.path=A-" in a and ",model=hf,trainer=smoke/seed=42" in a
    assert _hydra_run_dir(["data.root=/data/x/"]).split("/")[-2].startswith("data.root=x-")
    url = _hydra_run_dir(["method=icl", "method.icl.openai.base_url=http://127.0.0.1:8000/v1"])
    assert url.count("/") == _hydra_run_dir(["method=icl"]).count("/")
    assert "base_url=127.0.0.1:8000-" in url
    secret = _hydra_run_dir(["+logger.api_key=sk-abcdef123"])
    assert "sk-abcdef123" not in secret and "+logger.api_key=REDACTED" in secret


# ---- 2. builds only where the defaults point ---------------------------------------------------
@pytest.fixture
def no_builds(monkeypatch):
    """Any MedSynth-8 / tiny-base build records its target instead of running for minutes."""
    import moelora.data.medsynth as medsynth

    calls = []
    for name in ("build_dataset", "build_base"):
        monkeypatch.setattr(
            medsynth, name, lambda *a, _n=name, **k: calls.append((_n, k["out_dir"]))
        )
    return calls


def test_a_mistyped_path_is_an_error_not_a_build(tmp_path, no_builds, capsys):
    missing = tmp_path / "nonexistent"
    for key, group, overrides in [("model.path", "model", []), ("data.root", "data", [])]:
        cfg = compose([f"paths.root_dir={tmp_path}", f"{key}={missing}", "logger=none", *overrides])
        run_dir = tmp_path / group
        run_dir.mkdir()
        assert run(cfg, run_dir) == 1
        err = capsys.readouterr().err
        assert f"{key}={missing} does not exist" in err and f"add {group}.build=true" in err
        assert not missing.exists() and no_builds == []
        assert f"{key}={missing} does not exist" in read_json(run_dir / "results.json")["error"]


def test_builds_go_to_the_default_location_or_where_asked(tmp_path, no_builds):
    from moelora.harness.inputs import check_input_paths, prepare_inputs

    cfg = compose([f"paths.root_dir={tmp_path}"])
    check_input_paths(cfg)
    prepare_inputs(cfg)
    assert no_builds == [
        ("build_dataset", f"{tmp_path}/artifacts/medsynth"),
        ("build_base", f"{tmp_path}/artifacts/base/medsynth-tiny"),
    ]
    no_builds.clear()
    cfg = compose(
        [
            f"paths.root_dir={tmp_path}",
            f"data.root={tmp_path}/mine",
            "data.build=true",
            f"model.path={tmp_path}/base",
            "model.build=true",
        ]
    )
    check_input_paths(cfg)
    prepare_inputs(cfg)
    assert no_builds == [("build_dataset", f"{tmp_path}/mine"), ("build_base", f"{tmp_path}/base")]


# ---- 4. keys nothing reads; bad values; validation before the folder is touched ---------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("+method.num_experts=3", "method.num_experts: no builder or pipeline reads this key"),
        ("+method.adapter.num_expert=3", "Did you mean method.adapter.num_experts?"),
        ("+trainer.max_step=3", "Did you mean trainer.max_steps?"),
        ("seed=abc", "seed='abc': must be an integer; e.g. seed=42"),
        ("trainer.save_every=abc", "trainer.save_every='abc': must be an integer ≥ 0"),
        ("resume=sometimes", "resume='sometimes': must be one of auto, never"),
    ],
    ids=["ignored-key", "adapter-typo", "trainer-typo", "seed", "save_every", "resume"],
)
def test_bad_keys_and_values_are_named_before_anything_runs(
    tiny_world, tmp_path, capsys, override, message
):
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=moelora_dense", override))
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    assert run(cfg, run_dir) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing was run or changed" in err
    assert read_json(run_dir / "results.json")["status"] == "failed"
    assert not (run_dir / "config.yaml").exists()


def test_ignored_key_lists_the_valid_keys(tiny_world, tmp_path, capsys):
    """`+method.num_experts=3`, as the struct error suggests: the message lists the method's
    keys and points at method.adapter.num_experts."""
    cfg = compose(
        tiny_overrides(tiny_world, tmp_path, "method=moelora_dense", "+method.num_experts=3")
    )
    (tmp_path / "job").mkdir()
    assert run(cfg, tmp_path / "job") == 1
    err = capsys.readouterr().err
    assert "Valid keys of method: adapter, chatglm6b_params, infer, name," in err
    assert "Did you mean method.adapter.num_experts?" in err


def test_overwrite_with_an_invalid_resume_loses_nothing(tiny_world, tmp_path, capsys):
    """`overwrite=true resume=sometimes` on a finished run: rejected before results.json is
    moved away or a checkpoint deleted."""
    world = _copy_world(tiny_world, tmp_path / "world")
    run_dir = tmp_path / "job"
    assert _job(world, tmp_path, run_dir) == 0
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".job.lock"}
    assert any("checkpoints" in p.parts for p in files)
    assert _job(world, tmp_path, run_dir, "overwrite=true", "resume=sometimes") == 1
    assert "resume='sometimes'" in capsys.readouterr().err
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".job.lock"}
    assert after == files


# ---- secrets on the command line ----------------------------------------------------------------
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


def test_a_secret_on_the_command_line_is_redacted_everywhere(tiny_world, tmp_path):
    """The run directory name, .hydra/*.yaml, results.json and the console never show it."""
    secret = "sk-do-not-log-0123456789"
    out = _run_py(
        [
            *tiny_overrides(tiny_world, tmp_path),
            "method=icl",
            f"+method.icl.openai.api_key={secret}",
        ],
        tmp_path,
    )
    assert out.returncode == 1
    assert "method.icl.openai.api_key: no builder or pipeline reads this key" in out.stderr
    assert "Did you mean method.icl.openai.api_key_env?" in out.stderr
    (results,) = (tmp_path / "outputs").rglob("results.json")
    assert "+method.icl.openai.api_key=***" in read_json(results)["overrides"]
    assert "api_key=REDACTED" in str(results.parent.parent)
    hydra_files = sorted(p.name for p in results.parent.glob(".hydra/*.yaml"))
    assert hydra_files == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    typo = _run_py(
        [*tiny_overrides(tiny_world, tmp_path), f"method.icl.openai.api_key={secret}"], tmp_path
    )  # Hydra's own error, without '+'
    assert typo.returncode != 0 and "api_key" in typo.stderr
    for text in (out.stdout, out.stderr, typo.stdout, typo.stderr):
        assert secret not in text
    for path in tmp_path.rglob("*"):
        assert secret not in str(path)
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


def test_every_shipped_config_passes_the_checks():
    """No false alarms: every method, model, data, trainer and logger option as shipped."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from moelora.harness.schema import check_config

    conf = REPO_ROOT / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for group in ("method", "model", "data", "trainer", "logger"):
            for path in sorted((conf / group).glob("*.yaml")):
                extra = {"model": ["model.path=/m"], "data": ["data.root=/d"]}.get(group, [])
                cfg = hydra_compose("config", overrides=[f"{group}={path.stem}", *extra])
                check_config(cfg, {group: path.stem})


def test_a_key_added_at_its_earlier_behaviour_keeps_old_identities():
    """trainer.loss_weighting came after identity version 1: at ``token`` (what every job did
    before) a job keeps the identity it had without the key; ``example`` is another job."""
    from moelora.harness.identity import ADDED_KEYS, job_fingerprint

    cfg = OmegaConf.to_container(compose(["method=lora_full"]), resolve=False)
    assert cfg["trainer"]["loss_weighting"] == ADDED_KEYS["trainer.loss_weighting"] == "token"
    before = json.loads(json.dumps(cfg))
    del before["trainer"]["loss_weighting"]
    assert job_fingerprint(cfg) == job_fingerprint(before)
    cfg["trainer"]["loss_weighting"] = "example"
    assert job_fingerprint(cfg) != job_fingerprint(before)
    assert job_fingerprint(cfg, training_only=True) != job_fingerprint(before, training_only=True)
