"""Loggers (wandb mode resolution, csv) and secret redaction in saved configs."""

from __future__ import annotations

import csv
import json

import pytest

from moelora.harness.loggers import CSVLogger, WandbLogger, _wandb_mode
from moelora.harness.results import provenance, redact
from moelora.utils.io import read_json, write_json
from moelora.utils.measure import cpu_info


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
    first = WandbLogger(
        tmp_path,
        project="p",
        entity=None,
        group="g",
        name="m-s1",
        job_type="m",
        run_config={"seed": 1},
    )
    first.log({"train/loss": 1.0}, 1)
    first.finish(0)
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert any(p.name.endswith(run_id) for p in (tmp_path / "wandb").glob("offline-run-*"))
    second = WandbLogger(
        tmp_path,
        project="p",
        entity=None,
        group="g",
        name="m-s1",
        job_type="m",
        run_config={"seed": 1},
    )
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
    cfg = {
        "icl": {"openai": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY"}},
        "logger": {"token": "t0k", "project": "p"},
        "list": [{"password": "x"}],
    }
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


def test_csv_logger_of_a_resumed_job_keeps_every_step_and_key_once(tmp_path):
    """#12: a killed job logged steps 1-3, resumed from its step-2 checkpoint it logs 3-4."""
    first = CSVLogger(tmp_path)
    for step in (1, 2, 3):
        first.log({"train/loss": float(step), "a/train/loss": 9.0}, step)
    first.summary({"test/avg/score": 0.1})
    second = CSVLogger(tmp_path)
    for step in (3, 4):
        second.log({"train/loss": step + 0.5}, step)
    second.summary({"test/avg/score": 0.2})
    rows = list(csv.reader((tmp_path / "metrics.csv").open()))[1:]
    assert [r for r in rows if r[1] == "train/loss"] == [
        ["1", "train/loss", "1.0"],
        ["2", "train/loss", "2.0"],
        ["3", "train/loss", "3.5"],
        ["4", "train/loss", "4.5"],
    ]
    assert len([r for r in rows if r[1] == "a/train/loss"]) == 3  # another key: untouched
    assert [r for r in rows if r[0] == "summary"] == [["summary", "test/avg/score", "0.2"]]


def test_secret_keys_are_credentials_not_counts():
    from moelora.utils.redaction import is_secret_key

    for key in (
        "token",
        "logger.api_key",
        "+method.icl.openai.api_key",
        "hf_token",
        "apikey",
        "db.password",
        "client_secret",
        "secrets.x",
        "auth-token",
    ):
        assert is_secret_key(key), key
    for key in (
        "api_key_env",
        "method.icl.openai.api_key_env",
        "max_new_tokens",
        "tokenizer",
        "num_virtual_tokens",
        "context_tokens",
        "seed",
    ):
        assert not is_secret_key(key), key


def test_redacting_stream_masks_a_secret_split_across_writes():
    import io

    from moelora.utils.redaction import RedactingStream, secret_values

    secrets = secret_values(["+a.api_key=sk-abcdef", "seed=42", "x.token=t1,t2-long-one"])
    assert set(secrets) >= {"sk-abcdef", "t2-long-one"} and "42" not in secrets
    sink = io.StringIO()
    stream = RedactingStream(sink, secrets)
    stream.write("key sk-ab")
    stream.write("cdef used\rnext t2-long-one")
    stream.flush()
    assert sink.getvalue() == "key *** used\rnext ***"


def test_long_run_directory_names_are_shortened_not_refused():
    from moelora.harness.naming import MAX_NAME, run_dirname

    settings = {"exclude_keys": ["seed"], "item_sep": ",", "kv_sep": "="}
    items = [f"data.max_source_length={i}" for i in range(40)]
    name = run_dirname(items, settings)
    assert len(name) <= MAX_NAME and "/" not in name and name.split(",")[-1].startswith("+")
    assert name != run_dirname(items[:-1] + ["data.max_source_length=99"], settings)
    assert run_dirname(["seed=3", "trainer=smoke"], settings) == "trainer=smoke"


def test_provenance_records_the_cpu_kernel_flags_that_change_results(tmp_path, monkeypatch):
    """The same config and seed give other weights on a CPU with other bf16/AMX kernels, so a
    run says which of CPU_KERNEL_FLAGS its CPU has (read from /proc/cpuinfo)."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\n"
        "flags\t\t: fpu sse avx2 avx512f amx_bf16 amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n"
    )
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.delenv("MKL_CBWR", raising=False)
    info = cpu_info(cpuinfo)
    assert info["model"] == "Test CPU 9000"
    assert info["kernel_flags"] == ["avx2", "avx512f", "amx_bf16"]
    assert info["onednn_max_cpu_isa"] == "AVX2" and info["mkl_cbwr"] is None
    assert info["capability"]
    monkeypatch.setenv("MKL_CBWR", "AVX512")
    assert cpu_info(cpuinfo)["mkl_cbwr"] == "AVX512"
    missing = cpu_info(tmp_path / "absent")
    assert missing["kernel_flags"] == [] and missing["onednn_max_cpu_isa"] == "AVX2"
    assert set(provenance(tmp_path, "cpu")["cpu"]) == {
        "model",
        "capability",
        "kernel_flags",
        "onednn_max_cpu_isa",
        "mkl_cbwr",
    }
