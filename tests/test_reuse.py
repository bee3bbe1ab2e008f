"""Job reuse across experiments (moelora/harness/reuse.py): what counts as the same job, and adoption."""

from __future__ import annotations

import copy

from moelora.harness.identity import job_identity
from moelora.harness.reuse import adopt, find_reusable, job_fingerprint
from moelora.utils.io import read_json, write_json

INPUTS = {"model": {"fingerprint": "m0"}, "data": {"fingerprint": "d0"}, "world_size": 1}


def _config(root: str = "./artifacts", out: str = "./outputs", **top) -> dict:
    return {
        "experiment_name": "table2",
        "seed": 42,
        "threads": 2,
        "progress": True,
        "reuse": True,
        "overwrite": False,
        "resume": "auto",
        "logger": {"_target_": "moelora.harness.loggers.WandbLogger"},
        "paths": {"root_dir": ".", "artifacts_dir": root, "output_dir": out},
        "model": {"path": f"{root}/base/medsynth-tiny"},
        "data": {"root": f"{root}/medsynth", "prepare": {"out_dir": f"{root}/medsynth"}},
        "method": {"name": "moelora_dense", "adapter": {"num_experts": 8, "rank": 16}},
        **top,
    }


def test_fingerprint_ignores_where_and_how_a_job_runs():
    a = _config()
    b = _config(
        root="/abs/checkout/artifacts",
        out="/elsewhere/outputs",
        experiment_name="fig6",
        threads=1,
        progress=False,
        logger={"_target_": "moelora.harness.loggers.NoneLogger"},
    )
    assert job_fingerprint(a) == job_fingerprint(b)


def test_fingerprint_changes_with_anything_the_job_computes():
    base = job_fingerprint(_config())
    for change in (
        lambda c: c.update(seed=43),
        lambda c: c["method"]["adapter"].update(num_experts=4),
        lambda c: c["data"].update(root="/data/promptcblue"),
        lambda c: c.update(decoding="greedy"),
    ):
        c = _config()
        change(c)
        assert job_fingerprint(c) != base


def _finished(run_dir, config, status="success", device="cpu", inputs=INPUTS, **extra):
    run_dir.mkdir(parents=True)
    write_json(
        run_dir / "results.json",
        {
            "status": status,
            "config": config,
            "experiment": config["experiment_name"],
            "scores": {"avg": 0.5},
            "provenance": {"device": device},
            "identity": job_identity(config, inputs),
            **extra,
        },
    )
    return run_dir


def test_find_reusable_needs_success_same_device_and_same_job(tmp_path):
    out = tmp_path / "outputs"
    me = out / "fig6" / "moelora_dense" / "seed=42"
    mine = job_identity(_config(experiment_name="fig6"), INPUTS)
    _finished(out / "a", _config(), status="failed")
    _finished(out / "b", _config(), device="cuda:0")
    _finished(out / "c", _config(seed=43))
    assert find_reusable(mine, me, out, "cpu") is None
    good = _finished(out / "d", _config())
    assert find_reusable(mine, me, out, "cpu") == good
    assert find_reusable(mine, me, out, "cuda") == out / "b"


def test_reuse_never_adopts_a_run_on_another_model_data_or_world_size(tmp_path):
    """#12: the same config on other inputs is another job; so is a run without identity."""
    out = tmp_path / "outputs"
    me = out / "fig6" / "job"
    mine = job_identity(_config(experiment_name="fig6"), INPUTS)
    for name, change in [
        ("model", {"model": {"fingerprint": "m1"}}),
        ("data", {"data": {"fingerprint": "d1"}}),
        ("world", {"world_size": 4}),
    ]:
        _finished(out / name, _config(), inputs={**INPUTS, **change})
    legacy = _finished(out / "legacy", _config())
    res = read_json(legacy / "results.json")
    del res["identity"]
    write_json(legacy / "results.json", res)
    assert find_reusable(mine, me, out, "cpu") is None
    assert (
        find_reusable(job_identity(_config(), {**INPUTS, "world_size": 4}), me, out, "cpu")
        == out / "world"
    )


def test_a_job_never_adopts_itself(tmp_path):
    out = tmp_path / "outputs"
    me = _finished(out / "table2" / "job", _config())
    assert find_reusable(job_identity(_config(), INPUTS), me, out, "cpu") is None


def test_adopt_links_outputs_and_names_the_original_source(tmp_path):
    out = tmp_path / "outputs"
    src = _finished(
        out / "default" / "job", _config(experiment_name="default"), timing={"total_seconds": 123.0}
    )
    (src / "predictions.jsonl").write_text("{}\n")
    (src / "adapter").mkdir()
    (src / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    for private in ("checkpoints", "wandb", ".hydra"):
        (src / private).mkdir()
        (src / private / "x").write_text("private")
    (src / "run.log").write_text("log")
    first = out / "table2" / "job"
    first.mkdir(parents=True)
    updates = {"experiment": "table2", "run_dir": str(first), "overrides": [], "config": _config()}
    res = adopt(src, first, copy.deepcopy(updates))
    assert res["experiment"] == "table2" and res["reused_from"]["run_dir"] == str(src)
    assert res["timing"] == {"total_seconds": 123.0} and res["scores"] == {"avg": 0.5}
    assert read_json(first / "results.json") == res
    assert (first / "adapter" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert (first / "predictions.jsonl").read_text() == "{}\n"
    assert not any((first / p).exists() for p in ("checkpoints", "wandb", ".hydra", "run.log"))
    second = out / "fig6" / "job"
    second.mkdir(parents=True)
    res2 = adopt(first, second, {**updates, "experiment": "fig6", "run_dir": str(second)})
    assert res2["reused_from"]["run_dir"] == str(src)  # the run that computed it
