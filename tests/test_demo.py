"""analysis.demo: docs/results/demo.md and README.md's demo block are the render of the
committed docs/results/demo.json, which holds what the demo job printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis import demo
from moelora.harness.results import score_table

REPO_ROOT = Path(__file__).resolve().parents[1]
README = "# x\n\n## Quick start\n\n" + demo.BEGIN + "\nold\n" + demo.END + "\n\nmore\n"


@pytest.fixture(scope="module")
def demo_run(tiny_world, tmp_path_factory):
    """A finished trainer=smoke job of the demo's method, and what it printed."""
    import contextlib
    import io

    from moelora.harness.runner import run
    from tests.conftest import compose, tiny_overrides

    out = tmp_path_factory.mktemp("demo")
    run_dir = out / "outputs" / "default" / "moelora_dense" / "seed=42"
    run_dir.mkdir(parents=True)
    cfg = compose(tiny_overrides(tiny_world, out, "trainer.max_steps=2", "decoding=greedy"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run(cfg, run_dir) == 0
    return run_dir, printed.getvalue()


def test_the_page_shows_the_table_the_job_printed(demo_run):
    run_dir, printed = demo_run
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    lines = score_table(results)
    assert "\n".join(lines) in printed and "avg" in lines[-1]
    data = demo.extract(run_dir)
    assert demo.table(data) == lines
    page = demo.render_page(data)
    assert "\n".join(lines) in page and data["results_sha256"] in page
    assert f"seed {results['seed']}" in page and results["provenance"]["cpu"]["model"] in page
    assert "\n".join(lines) in demo.render_block(data)


def test_main_writes_page_and_readme_block_from_the_same_data(demo_run, tmp_path):
    run_dir, _ = demo_run
    docs, readme = tmp_path / "docs", tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    argv = ["--run", str(run_dir), "--docs", str(docs), "--readme", str(readme)]
    assert demo.main(argv) == 0
    data = demo.load(docs)
    assert data["run_dir"] == run_dir.as_posix()  # outside the repository: as given
    assert (docs / "demo.md").read_text(encoding="utf-8") == demo.render_page(data)
    text = readme.read_text(encoding="utf-8")
    assert text == README.replace(demo.BEGIN + "\nold\n" + demo.END, demo.render_block(data))
    assert demo.main(["--docs", str(docs), "--readme", str(readme)]) == 0  # re-render only
    assert readme.read_text(encoding="utf-8") == text


def test_readme_without_markers_is_refused_untouched(demo_run, tmp_path, capsys):
    run_dir, _ = demo_run
    readme = tmp_path / "README.md"
    readme.write_text("# x\n" + demo.BEGIN + "\n", encoding="utf-8")
    argv = ["--run", str(run_dir), "--docs", str(tmp_path / "docs"), "--readme", str(readme)]
    assert demo.main(argv) == 1
    err = capsys.readouterr().err
    assert str(readme) in err and demo.END in err and "add them" in err
    assert readme.read_text(encoding="utf-8") == "# x\n" + demo.BEGIN + "\n"
    assert not (tmp_path / "docs" / "demo.md").exists()


def test_a_failed_or_missing_run_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="make demo"):
        demo.extract(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    with pytest.raises(ValueError, match="boom"):
        demo.extract(tmp_path)


def test_committed_demo_page_and_readme_block_are_their_render():
    """Rerun `make publish-demo` (or `python -m analysis.demo`), never edit them by hand."""
    data = demo.load(REPO_ROOT / "docs" / "results")
    page = (REPO_ROOT / "docs" / "results" / "demo.md").read_text(encoding="utf-8")
    assert page == demo.render_page(data)
    readme_path = REPO_ROOT / "README.md"
    text = readme_path.read_text(encoding="utf-8")
    start, end = demo.readme_block(text, readme_path)
    assert text[start:end] == demo.render_block(data)
