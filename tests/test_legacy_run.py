"""A run folder written before the package moved stays done and loadable (moelora.utils.names).

The fixture (tests/fixtures/legacy_run/README.md) was written by the code before the move: its
config names ``moelora.moe.build`` and ``moelora.samplers.RandomMixSampler``, and its recorded
identity hash was computed from those names.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from moelora.utils.names import MOVED, current_name, identity_name
from tests.conftest import REPO_ROOT, compose

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "legacy_run"
MADE_AT = "/work/scratch/legacy/root"
RUN = Path("outputs/legacy/moelora_dense/seed=42")


@pytest.fixture()
def legacy_root(tmp_path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    for name in ("config.yaml", "results.json", "adapter/adapter_config.json"):
        path = root / RUN / name
        path.write_text(path.read_text().replace(MADE_AT, str(root)))
    return root


def _overrides(root: Path) -> list[str]:
    return [
        f"paths.root_dir={root}",
        f"data.root={root}/artifacts/medsynth/data",
        "data.prepare=null",
        "model=hf",
        f"model.path={root}/artifacts/model",
        "model.dtype=float32",
        "trainer=smoke",
        "logger=none",
        "progress=false",
        "trainer.eval.limit_per_task=1",
        "data.max_target_length=16",
        "data.max_source_length=96",
        "data.max_truncated_fraction=1.0",
        "method=moelora_dense",
        "trainer.max_steps=2",
        "decoding=greedy",
        "experiment_name=legacy",
        "trainer.save_every=0",
    ]


def test_the_fixture_names_the_old_modules():
    text = (FIXTURE / RUN / "config.yaml").read_text()
    assert "moelora.moe.build" in text and "moelora.samplers.RandomMixSampler" in text


def test_alias_map_round_trip():
    assert current_name("moelora.moe.build") == "moelora.method.model.build"
    assert identity_name("moelora.method.model.build") == "moelora.moe.build"
    assert current_name("baselines.lora.build") == "baselines.lora.build"
    for old, new in MOVED.items():
        assert current_name(old + ".x") == new + ".x"
    import importlib

    for new in set(MOVED.values()):
        importlib.import_module(new)


def test_legacy_run_is_skipped_as_done(legacy_root, capsys):
    from moelora.harness.runner import run

    run_dir = legacy_root / RUN
    before = (run_dir / "results.json").read_bytes()
    assert run(compose(_overrides(legacy_root)), run_dir) == 0
    assert "[skip]" in capsys.readouterr().out
    assert (run_dir / "results.json").read_bytes() == before


def test_legacy_run_loads_predicts_and_exports(legacy_root, tmp_path):
    from moelora.inference.export import main as export_main
    from moelora.inference.load import load_run
    from moelora.inference.predict import predict
    from moelora.utils.io import read_jsonl

    run_dir = legacy_root / RUN
    loaded = load_run(run_dir)
    records = read_jsonl(legacy_root / "artifacts/medsynth/data/test.jsonl")[:4]
    out = predict(loaded, records, mode="greedy", max_new_tokens=4, score=False)
    assert [p["sample_id"] for p in out.predictions] == [r["sample_id"] for r in records]
    written = export_main([str(run_dir), "--out", str(tmp_path / "export")])
    assert len(written) == len(loaded.meta["tasks"])
    assert all((p / "adapter_model.safetensors").is_file() for p in written)
