"""analysis.publish: docs/results/<page>.md is exactly the render of the data folder it names,
and every number in that data is traceable to one run's results.json (folder + sha256)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis import publish  # noqa: E402
from tests.test_analysis_collect import write_run  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TASKS = ["CMeIE", "CHIP-CDN", "KUAKE-QIC"]
SECTIONS = ["## Table 2", "## Table 3", "## Figure 4", "## Figure 5", "## Figure 6", "## Claims"]
CPU = {"model": "Test CPU 9000", "capability": "AVX2"}


def _weights(seed: int) -> dict:
    w = np.random.default_rng(seed).random((len(TASKS), 4))
    return {"tasks": TASKS, "matrix": (w / w.sum(1, keepdims=True)).tolist()}


def _prov(seed: int) -> dict:
    return {"git_sha": "abc123", "git_dirty": False, "device": "cpu", "cpu": CPU}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A synthetic grid (Table 2 rows, one Fig. 4a grid point, a failed job, a run of another
    benchmark) published into a docs/results folder of its own."""
    root = tmp_path_factory.mktemp("grid") / "outputs"
    for seed in (42, 43, 44):
        for method, base in (("lora_full", 0.61), ("moelora_dense", 0.71)):
            write_run(
                root,
                "table2",
                method,
                seed,
                {t: base + 0.01 * (seed - 42) for t in TASKS},
                provenance=_prov(seed),
                timing={"total_seconds": 100.0 + seed},
                **({"expert_weights": _weights(seed)} if method == "moelora_dense" else {}),
            )
        write_run(
            root,
            "fig4_experts",
            "moelora_dense",
            seed,
            {t: 0.5 for t in TASKS},
            overrides=["method.adapter.num_experts=2", "method.adapter.rank=16"],
            hparams={"num_experts": 2, "rank": 16, "alpha": 32},
            provenance=_prov(seed),
        )
    write_run(root, "table2", "molora", 42, None, status="failed", provenance=_prov(42))
    write_run(  # a plain `python run.py method=ptuning` job: no grid, fills Table 2's row
        root, "default", "ptuning", 42, {t: 0.31 for t in TASKS}, provenance=_prov(42)
    )
    write_run(root, "table2", "ptuning", 42, {t: 0.99 for t in TASKS}, benchmark="promptcblue")
    out = tmp_path_factory.mktemp("docs") / "results"
    page = publish.publish(root, out)
    return root, out, page


def _section(text: str, title: str) -> str:
    start = text.index(title + "\n")
    nxt = [text.index(s + "\n") for s in SECTIONS if text.index(s + "\n") > start]
    return text[start : min(nxt) if nxt else len(text)]


def test_page_is_the_render_of_its_data(published):
    _, out, page = published
    assert page == out / "medsynth-8.md"
    assert page.read_text(encoding="utf-8") == publish.render_page(out / "medsynth-8")


def test_sections_in_order_with_header(published):
    _, _, page = published
    text = page.read_text(encoding="utf-8")
    assert [text.index(s + "\n") for s in SECTIONS] == sorted(
        text.index(s + "\n") for s in SECTIONS
    )
    assert "Host CPU: Test CPU 9000" in text
    assert "Seeds: 42, 43, 44" in text
    assert "Runs made at commit(s): `abc123`" in text
    assert "| table2 | – | 6 / 30 | 42, 43, 44 | 14 min 18 s |" in text  # 2 × (142 + 143 + 144) s
    assert "| table3 | – | 0 / 18 | – | – |" in text
    assert "| default | – | 1 (no grid) | 42 | n/a |" in text


def test_every_row_names_its_run_folder_and_results_sha256(published):
    root, out, _ = published
    data = pd.read_csv(out / "medsynth-8" / "results.csv")
    assert len(data) and data["results_sha256"].notna().all()
    for path, sha in zip(data["path"], data["results_sha256"]):
        assert path.startswith("outputs/")
        assert publish.sha256_file(root.parent / path) == sha
    assert set(data["benchmark"]) == {"medsynth"}  # the promptcblue run belongs elsewhere
    runs = pd.read_csv(out / "medsynth-8" / "runs.csv")
    assert "failed" in set(runs["status"]) and set(runs["cpu"].dropna()) == {CPU["model"]}


def test_table_cells_are_the_runs_scores(published):
    _, _, page = published
    table2 = _section(page.read_text(encoding="utf-8"), "## Table 2")
    row = next(line for line in table2.splitlines() if line.startswith("| LoRA (Full) |"))
    assert "0.6200" in row and "0.7200" not in row  # mean of 0.61, 0.62, 0.63
    row = next(line for line in table2.splitlines() if line.startswith("| MOELoRA (D) |"))
    assert "0.7200" in row
    row = next(line for line in table2.splitlines() if line.startswith("| P-Tuning |"))
    assert "0.3100" in row
    assert "0.9900" not in page.read_text(encoding="utf-8")


def test_figures_are_drawn_from_the_data_and_linked(published):
    _, out, page = published
    text = page.read_text(encoding="utf-8")
    links = re.findall(r"\]\((medsynth-8/[^)]+\.png)\)", text)
    assert any("fig4a" in link for link in links) and any("fig6" in link for link in links)
    for link in links:
        assert (out / link).is_file(), link
    assert "No fig5 figure" in _section(text, "## Figure 5")


def test_a_changed_number_changes_the_page(published, tmp_path):
    _, out, page = published
    import shutil

    copy = tmp_path / "medsynth-8"
    shutil.copytree(out / "medsynth-8", copy)
    data = pd.read_csv(copy / "results.csv")
    data.loc[data["method"] == "lora_full", "score"] += 0.1
    data.to_csv(copy / "results.csv", index=False)
    assert publish.render_page(copy) != page.read_text(encoding="utf-8")


def test_nothing_to_publish_says_zero_of_n(tmp_path):
    page = publish.publish(tmp_path / "outputs", tmp_path / "docs")
    text = page.read_text(encoding="utf-8")
    assert "grid jobs with a successful run: 0 of " in text
    assert "No successful table2 run in the published data (0 of 30 jobs)" in text
    assert all(s + "\n" in text for s in SECTIONS)


def test_committed_result_pages_are_their_render():
    """docs/results/<page>.md == the render of docs/results/<page>/ (rerun `make publish`,
    never edit the page)."""
    pages = [
        p for p in (REPO_ROOT / "docs" / "results").glob("*.md") if (p.with_suffix("")).is_dir()
    ]
    pages = [p for p in pages if (p.with_suffix("") / "meta.json").is_file()]
    assert pages, "no published page under docs/results/ (make publish)"
    for page in pages:
        assert page.read_text(encoding="utf-8") == publish.render_page(page.with_suffix("")), (
            f"{page} is not the render of {page.with_suffix('')}/; run `make publish`"
        )
