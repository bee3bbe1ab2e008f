"""lr_protocol: each method at its own dev-chosen lr, or every method at the shared one."""

from __future__ import annotations

import re

import pytest
import yaml
from omegaconf import OmegaConf

from moelora.harness import lr_protocol
from moelora.harness.identity import job_identity
from moelora.harness.runner import run
from moelora.harness.schema import ConfigError
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, compose, tiny_overrides


def _cfg(method="lora_full", *, table=None, chosen_with=None, lr=None, max_steps=1000):
    return OmegaConf.create(
        {
            "method": {"name": method, "optim": {"lr": 2e-4}},
            "trainer": {"lr": lr, "lr_scale": 25.0, "max_steps": max_steps},
            "lr_protocol": {
                "name": "dev" if table else "shared",
                "lr_scale": table or {},
                "chosen_with": chosen_with or {},
            },
        }
    )


def test_a_listed_method_trains_at_its_own_lr_scale():
    cfg = _cfg(
        table={"lora_full": 15, "moelora_dense": 35}, chosen_with={"trainer.max_steps": 1000}
    )
    note = lr_protocol.apply(cfg)
    assert cfg.trainer.lr_scale == 15.0
    assert "lora_full trains at trainer.lr_scale=15 (lr 0.003" in note
    lr_protocol.check_trains(cfg)  # listed: no error


def test_shared_protocol_changes_nothing():
    cfg = _cfg()
    assert lr_protocol.apply(cfg) is None and cfg.trainer.lr_scale == 25.0
    lr_protocol.check_trains(cfg)


def test_an_unlisted_method_is_not_trained_silently_at_the_shared_lr():
    cfg = _cfg("molora", table={"lora_full": 15})
    assert lr_protocol.apply(cfg) is None and cfg.trainer.lr_scale == 25.0
    with pytest.raises(
        ConfigError,
        match=r"conf/lr_protocol/dev\.yaml lists no lr for method "
        r"molora \(it lists lora_full\)",
    ):
        lr_protocol.check_trains(cfg)
    lr_protocol.check_trains(_cfg("molora", table={"lora_full": 15}, lr=1e-3))  # explicit lr


def test_other_settings_than_the_table_was_chosen_under_are_refused():
    cfg = _cfg(table={"lora_full": 15}, chosen_with={"trainer.max_steps": 1000}, max_steps=8000)
    with pytest.raises(ConfigError, match=r"trainer\.max_steps=8000 \(chosen with 1000\)"):
        lr_protocol.apply(cfg)
    assert cfg.trainer.lr_scale == 25.0  # nothing was changed


def test_an_explicit_trainer_lr_still_wins_and_is_said():
    cfg = _cfg(table={"lora_full": 15}, lr=1e-3)
    assert "trainer.lr=0.001 is set and wins" in lr_protocol.apply(cfg)


def test_the_committed_dev_protocol_applies_at_the_settings_it_was_chosen_under():
    """Every method it lists exists, and a job at the settings it was chosen under (its
    ``chosen_with``, given on the command line) gets the listed lr. Since 2026-12-06 the default
    schedule (8 × 2,000 steps) is not the one the committed table was chosen at (16 × 1,000), so
    a plain `python run.py lr_protocol=dev` is refused, naming the keys that differ."""
    path = REPO_ROOT / "conf" / "lr_protocol" / "dev.yaml"
    table = yaml.safe_load(path.read_text())
    assert table["name"] == "dev" and table["lr_scale"]
    chosen = [f"{key}={value}" for key, value in table["chosen_with"].items()]
    for method, scale in table["lr_scale"].items():
        assert (REPO_ROOT / "conf" / "method" / f"{method}.yaml").is_file(), method
        assert scale > 0
        cfg = compose([f"method={method}", "lr_protocol=dev", *chosen])
        for key, value in table["chosen_with"].items():
            assert OmegaConf.select(cfg, key) == value, key
        assert lr_protocol.apply(cfg) is not None and cfg.trainer.lr_scale == float(scale)
        plain = compose([f"method={method}", "lr_protocol=dev"])
        differs = [
            key
            for key, value in table["chosen_with"].items()
            if OmegaConf.select(plain, key) != value
        ]
        if differs:
            with pytest.raises(ConfigError, match=re.escape(differs[0])):
                lr_protocol.apply(plain)
        else:
            assert lr_protocol.apply(plain) is not None


def test_a_smoke_run_under_the_dev_protocol_is_refused_before_it_starts(
    tiny_world, tmp_path, capsys
):
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full", "lr_protocol=dev"))
    run_dir = tmp_path / "job"
    assert run(cfg, run_dir) == 1
    assert "was chosen under other settings" in capsys.readouterr().err
    assert read_json(run_dir / "results.json")["status"] == "failed"
    assert not (run_dir / "adapter").exists()


def _job(tiny_world, tmp_path, name, *extra):
    cfg = compose(
        tiny_overrides(
            tiny_world, tmp_path, "trainer.max_steps=1", "~lr_protocol.chosen_with", *extra
        )
    )
    run_dir = tmp_path / "outputs" / name
    run_dir.mkdir(parents=True)
    return run(cfg, run_dir), run_dir


def test_a_protocol_job_is_the_job_at_that_lr_scale_and_an_unlisted_one_fails_clearly(
    tiny_world, tmp_path, capsys
):
    code, dev = _job(
        tiny_world,
        tmp_path,
        "dev",
        "method=lora_full",
        "lr_protocol=dev",
        "lr_protocol.lr_scale.lora_full=3",
    )
    assert code == 0 and "[lr] lr_protocol=dev: lora_full trains at" in capsys.readouterr().out
    res = read_json(dev / "results.json")
    assert res["config"]["trainer"]["lr_scale"] == 3
    # the same computation under the shared protocol at lr_scale 3 adopts it (same identity)
    code, shared = _job(
        tiny_world,
        tmp_path,
        "shared",
        "method=lora_full",
        "trainer.lr_scale=3",
        "experiment_name=other",
    )
    assert code == 0 and "[reuse]" in capsys.readouterr().out
    assert read_json(shared / "results.json")["identity"] == res["identity"]
    # a method the file does not list (its line deleted here, whatever the committed file holds)
    code, bad = _job(
        tiny_world,
        tmp_path,
        "bad",
        "method=molora",
        "lr_protocol=dev",
        "~lr_protocol.lr_scale.molora",
    )
    assert code == 1
    assert "lists no lr for method molora" in read_json(bad / "results.json")["error"]


def test_identity_ignores_the_table_but_not_the_lr_it_sets():
    inputs = {"model": {"fingerprint": "m"}, "data": {}, "world_size": 1}
    a = _cfg(table={"lora_full": 15, "moelora_dense": 35})
    b = _cfg(table={"lora_full": 15, "molora": 20})
    lr_protocol.apply(a), lr_protocol.apply(b)
    plain = OmegaConf.to_container
    assert job_identity(plain(a), inputs) == job_identity(plain(b), inputs)
    c = _cfg(table={"lora_full": 10})
    lr_protocol.apply(c)
    assert job_identity(plain(c), inputs) != job_identity(plain(a), inputs)


def test_claims_compare_the_methods_each_at_its_own_lr_as_one_variant(tmp_path):
    """Every job of a grid under the protocol carries `lr_protocol=dev`: one claims file holds
    them, apart from the shared-lr runs."""
    from analysis import claims, collect
    from tests.test_analysis_collect import write_run

    root, reports = tmp_path / "out", tmp_path / "reports"
    seeds = (42, 43, 44)
    for method, shared, dev in (
        ("moelora_dense", (0.60, 0.61, 0.62), (0.70, 0.71, 0.72)),
        ("lora_full", (0.60, 0.62, 0.61), (0.50, 0.51, 0.52)),
    ):
        for seed, a, b in zip(seeds, shared, dev):
            write_run(root, "table2", method, seed, {"CMeIE": a})
            write_run(root, "table2", method, seed, {"CMeIE": b}, overrides=["lr_protocol=dev"])
    assert collect.main(["--root", str(root), "--out", str(reports)]) == 0
    assert claims.main(["--reports", str(reports)]) == 0
    dev = (reports / "claims_medsynth_lr_protocol=dev.md").read_text(encoding="utf-8")
    assert "MOELoRA (D) 0.7100 > LoRA (Full) 0.5100" in dev and "lr_protocol=dev" in dev
    shared = (reports / "claims_medsynth.md").read_text(encoding="utf-8")
    assert "MOELoRA (D) 0.6100 = LoRA (Full) 0.6100" in shared
