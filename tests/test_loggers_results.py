"""Loggers (wandb mode resolution, csv) and secret redaction in saved configs."""

from __future__ import annotations

import csv
import json

import pytest

from moelora.io import read_json, write_json
from moelora.loggers import CSVLogger, WandbLogger, _wandb_mode
from moelora.results import redact


def test_wandb_is_offline_unless_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert _wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert _wandb_mode("auto") == "online"
    assert _wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")  # the environment wins
    assert _wandb_mode("online") == "offline"


def test_wandb_offline_run_keeps_its_id_for_resume(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = WandbLogger(tmp_path, project="p", entity=None, group="g", name="m-s1", job_type="m",
                        run_config={"seed": 1})
    first.log({"train/loss": 1.0}, 1)
    first.finish(0)
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert any(p.name.endswith(run_id) for p in (tmp_path / "wandb").glob("offline-run-*"))
    second = WandbLogger(tmp_path, project="p", entity=None, group="g", name="m-s1", job_type="m",
                         run_config={"seed": 1})
    second.finish(0)
    assert (tmp_path / "wandb_id.txt").read_text() == run_id


def test_csv_logger_appends_rows(tmp_path):
    log = CSVLogger(tmp_path)
    log.log({"train/loss": 2.5, "train/lr": 0.1}, 10)
    log.summary({"test/avg/score": 0.4, "note": "text is skipped"})
    rows = list(csv.reader((tmp_path / "metrics.csv").open()))
    assert rows[0] == ["step", "key", "value"]
    assert ["10", "train/loss", "2.5"] in rows and ["summary", "test/avg/score", "0.4"] in rows
    assert not any("note" in r for r in rows)


def test_redact_hides_credentials_but_keeps_env_var_names():
    cfg = {"icl": {"openai": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY"}},
           "logger": {"token": "t0k", "project": "p"}, "list": [{"password": "x"}]}
    out = redact(cfg)
    assert out["icl"]["openai"] == {"api_key": "***", "api_key_env": "OPENAI_API_KEY"}
    assert out["logger"] == {"token": "***", "project": "p"}
    assert out["list"] == [{"password": "***"}]
    assert "sk-123" not in json.dumps(out)


def test_results_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(path, {"status": "success"})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        write_json(path, {"status": "failed"})
    assert read_json(path) == {"status": "success"}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left
