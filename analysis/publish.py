# %% [markdown]
# # Publish a grid's results into docs/results/ (``make publish``)
# ``python -m analysis.publish --root outputs --out docs/results`` reads every results.json
# of one benchmark under the root (analysis.collect) and writes a committed, versioned copy:
#
# - ``docs/results/<page>/``: the compact data the page is rendered from: ``results.csv`` (one
#   row per run × task, as analysis.collect's, with ``path`` = the run's results.json relative
#   to the root's parent and ``results_sha256`` = that file's sha256), ``runs.csv`` (one row per
#   run, plus the CPU and GPU its results.json names), ``expert_weights.json``,
#   ``efficiency.json`` (when measured), ``meta.json`` (the commit published from and, per
#   experiment grid of conf/experiment/, the jobs expected and found), and the figures' PNGs,
#   drawn from that data by analysis.figures;
# - ``docs/results/<page>.md``: :func:`render_page` of that folder, nothing else. Its sections
#   ``## Table 2``, ``## Table 3``, ``## Figure 4``, ``## Figure 5``, ``## Figure 6`` and
#   ``## Claims`` are rendered by analysis.tables, analysis.figures and analysis.claims.
#
# tests/test_publish.py re-renders the committed page from the committed folder and compares.
# Publishing writes into the repository, so it is its own step, never part of ``make report``
# (which writes only under reports/).

# %%
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import claims, collect, tables
from analysis.report import git_sha
from moelora.utils.io import write_json, write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = {"medsynth": "medsynth-8"}  # benchmark → page name under docs/results/
DATA_FILES = ("results.csv", "runs.csv", "expert_weights.json", "efficiency.json", "meta.json")
FIGURES = (
    ("Figure 4", "fig4", "MOELoRA (D)'s average test score against N (Fig. 4a) and r (Fig. 4b)"),
    ("Figure 5", "fig5", "parameter ratio, training step time and inference latency"),
    ("Figure 6", "fig6", "the gate's expert weights per task (Eq. 5)"),
)


# %% [markdown]
# ## The compact data


# %%
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_facts(path: Path) -> dict[str, Any]:
    """sha256, CPU model and GPU of one results.json (None where unreadable)."""
    try:
        sha = sha256_file(path)
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"results_sha256": None, "cpu": None, "gpu": None}
    prov = res.get("provenance") if isinstance(res, dict) else None
    prov = prov if isinstance(prov, dict) else {}
    cpu = prov.get("cpu") if isinstance(prov.get("cpu"), dict) else {}
    return {"results_sha256": sha, "cpu": cpu.get("model"), "gpu": prov.get("gpu")}


def jobs_found(run_df: pd.DataFrame, conf_dir: Path = collect.CONF_DIR) -> list[dict[str, Any]]:
    """Per experiment grid of ``conf_dir/experiment`` and variant: jobs expected, and jobs
    with a successful results.json (a grid with no run at all: one row, 0 found)."""
    missing = collect.missing_runs(run_df, conf_dir)
    rows = []
    for name in sorted(p.stem for p in (conf_dir / "experiment").glob("*.yaml")):
        expected = len(collect.expected_runs(name, conf_dir))
        variants = sorted(
            {
                str(v) if isinstance(v, str) else ""
                for v in run_df.loc[run_df["experiment"] == name, "variant"]
            }
        )
        for variant in variants or [""]:
            n_missing = int(
                ((missing["experiment"] == name) & (missing["variant"] == variant)).sum()
            )
            found = expected - n_missing if variants else 0
            rows.append(
                {"experiment": name, "variant": variant, "expected": expected, "found": found}
            )
    return rows


def compact(
    root: Path, benchmark: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """analysis.collect's tidy, runs, expert weights and efficiency documents of ``benchmark``
    under ``root``, with portable paths (``<root name>/<run folder>/results.json``) and each
    run's ``results_sha256``; runs.csv also gets each run's ``cpu`` and ``gpu``."""
    root = Path(root)
    tidy, run_df, weights = collect.collect(root)
    keep = run_df["benchmark"].isna() | (run_df["benchmark"] == benchmark)  # unreadable: kept
    run_df = run_df[keep].reset_index(drop=True)
    tidy = tidy[tidy["path"].isin(run_df["path"])].reset_index(drop=True)
    weights = [w for w in weights if w.get("benchmark") == benchmark]

    def portable(path: Any) -> Any:
        try:
            return (Path(root.name) / Path(str(path)).relative_to(root)).as_posix()
        except ValueError:
            return path

    facts = {p: _run_facts(Path(p)) for p in run_df["path"]}
    for df in (tidy, run_df):
        df["results_sha256"] = [facts[p]["results_sha256"] for p in df["path"]]
    run_df["cpu"] = [facts[p]["cpu"] for p in run_df["path"]]
    run_df["gpu"] = [facts[p]["gpu"] for p in run_df["path"]]
    for df in (tidy, run_df):
        df["path"] = [portable(p) for p in df["path"]]
    weights = [{**w, "path": portable(w["path"])} for w in weights]
    efficiency = [
        {**d, "source": portable(d["source"])}
        for d in collect.efficiency_documents(root)
        if d.get("benchmark") in (None, benchmark)
    ]
    return tidy, run_df, weights, efficiency


# %% [markdown]
# ## The page (a function of the data folder alone)


# %%
def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    minutes, s = divmod(round(seconds), 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def _demote(markdown: str, level: int = 3) -> str:
    """Headings of an embedded document one level below the page's sections."""
    out = []
    for line in markdown.strip().splitlines():
        if line.startswith("#"):
            line = "#" * (level - 1) + line
        out.append(line)
    return "\n".join(out)


def _values(series: pd.Series) -> list[str]:
    return sorted({str(v) for v in series.dropna() if str(v)})


def load_data(data_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    tidy = tables.load_tidy(data_dir)
    run_df = pd.read_csv(data_dir / "runs.csv", dtype={"variant": str, "scorer_mode": str})
    for df in (tidy, run_df):
        df["variant"] = df["variant"].fillna("")
    wpath = data_dir / "expert_weights.json"
    weights = json.loads(wpath.read_text(encoding="utf-8")) if wpath.is_file() else []
    return meta, tidy, run_df, weights


def header_lines(meta: dict, run_df: pd.DataFrame, page: str) -> list[str]:
    ok = run_df[run_df["status"] == "success"]
    shas = _values(run_df["git_sha"])
    dirty = bool(run_df["git_dirty"].fillna(False).astype(bool).any()) if len(run_df) else False
    cpus, gpus = _values(run_df["cpu"]), _values(run_df["gpu"])
    seeds = sorted({int(s) for s in ok["seed"].dropna()})
    jobs = meta["jobs"]
    found, expected = sum(j["found"] for j in jobs), sum(j["expected"] for j in jobs)
    lines = [
        f"# Results on {tables.BENCHMARK_LABELS.get(meta['benchmark'], meta['benchmark'])}",
        "",
        f"Generated by `make publish` (analysis/publish.py) from the run folders under "
        f"`{meta['results_root']}/`; do not edit. Every number below is rendered from the files "
        f"in [{page}/]({page}/): [results.csv]({page}/results.csv) has one row per run and task "
        "with the run's folder (`path`) and the sha256 of its results.json (`results_sha256`).",
        "",
        f"- Published from commit: `{meta['commit']}`",
        f"- Runs made at commit(s): {', '.join(f'`{s}`' for s in shas) or 'none'}"
        + (" (some with uncommitted changes)" if dirty else ""),
        f"- Host CPU: {'; '.join(cpus) or 'none recorded'}"
        + (f"; GPU: {'; '.join(gpus)}" if gpus else ""),
        f"- Seeds: {', '.join(map(str, seeds)) or 'none'}",
        f"- Runs found: {len(run_df)} ({len(ok)} successful); grid jobs with a successful run: "
        f"{found} of {expected}",
        "",
        "| experiment | variant | jobs found / expected | seeds | wall time (sum of jobs) |",
        "|---|---|---|---|---|",
    ]
    listed = set()
    for job in jobs:
        sel = ok[(ok["experiment"] == job["experiment"]) & (ok["variant"] == job["variant"])]
        listed.add((job["experiment"], job["variant"]))
        lines.append(_job_row(job["experiment"], job["variant"], sel, job))
    for (experiment, variant), sel in ok.groupby(["experiment", "variant"]):
        if (experiment, variant) not in listed:  # runs outside every grid, e.g. `python run.py`
            lines.append(_job_row(str(experiment), str(variant), sel, None))
    lines += [
        "",
        "Generate: `make reproduce-mini` (every grid; or one grid with `make sweep-table2` etc.), "
        "then `make publish`.",
        "",
    ]
    return lines


def _job_row(experiment: str, variant: str, sel: pd.DataFrame, job: dict | None) -> str:
    seeds = ", ".join(str(int(s)) for s in sorted(sel["seed"].dropna().unique())) or "–"
    count = f"{job['found']} / {job['expected']}" if job else f"{len(sel)} (no grid)"
    timed = sel["total_seconds"].dropna()
    wall = _duration(float(timed.sum())) if len(timed) else "n/a" if len(sel) else "–"
    if 0 < len(timed) < len(sel):
        wall += f" ({len(timed)} of {len(sel)} jobs timed)"
    return f"| {experiment} | {variant or '–'} | {count} | {seeds} | {wall} |"


def table_lines(tidy: pd.DataFrame, name: str, jobs: list[dict]) -> list[str]:
    found = [
        tables.build_table(tidy, name, benchmark=b, scorer_mode=m, variant=v)
        for b, m, v in tables.groups(tidy, name)
    ]
    if not found:
        expected = sum(j["expected"] for j in jobs if j["experiment"] == name)
        return [
            f"No successful {name} run in the published data (0 of {expected} jobs). "
            f"Generate: `make sweep-{name}`, then `make publish`.",
            "",
        ]
    lines = []
    for table in found:
        lines += [f"### {tables.file_stem(table)}", "", tables.to_markdown(table).strip(), ""]
    return lines


def figure_lines(
    data_dir: Path, page: str, prefix: str, about: str, weights: list[dict[str, Any]]
) -> list[str]:
    from analysis import figures

    pngs = sorted(p.name for p in data_dir.glob(f"{prefix}*.png"))
    if not pngs:
        return [f"No {prefix} figure in the published data ({about}).", ""]
    lines = []
    for name in pngs:
        stem = name[: -len(".png")]
        lines += [f"### {stem}", "", f"![{stem}: {about}]({page}/{name})", ""]
    if prefix == "fig6":
        for (bench, variant), entries in sorted(figures.fig6_entries(weights).items()):
            md, _ = figures.pairwise_tables(entries, marked=figures.MARKED_TASKS)
            label = f"{bench}" + (f", {variant}" if variant else "")
            lines += [f"Expert-weight similarities ({label}):", "", _demote(md, 4), ""]
    return lines


def claims_lines(tidy: pd.DataFrame) -> list[str]:
    docs = claims.claims_documents(tidy)
    if not docs:
        return ["No successful Table 2/3, Fig. 4 or plain run: no claim to test.", ""]
    lines = []
    for stem, markdown, _ in docs:
        lines += [f"### {stem}", "", _demote(markdown, 4), ""]
    return lines


def render_page(data_dir: Path) -> str:
    """The Markdown of ``docs/results/<page>.md`` from the files in ``data_dir`` alone."""
    data_dir = Path(data_dir)
    page = data_dir.name
    meta, tidy, run_df, weights = load_data(data_dir)
    lines = header_lines(meta, run_df, page)
    for name in ("table2", "table3"):
        lines += [f"## {tables.TABLES[name]['title']}", "", *table_lines(tidy, name, meta["jobs"])]
    for title, prefix, about in FIGURES:
        lines += [f"## {title}", "", *figure_lines(data_dir, page, prefix, about, weights)]
    lines += ["## Claims", "", *claims_lines(tidy)]
    return "\n".join(lines).rstrip() + "\n"


# %% [markdown]
# ## Publishing


# %%
def draw_figures(data_dir: Path) -> list[Path]:
    """Draw analysis.figures from the data in ``data_dir``; keep the PNGs there."""
    from analysis import figures

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in DATA_FILES:
            if (data_dir / name).is_file():
                shutil.copy2(data_dir / name, tmp / name)
        kept = []
        for png in figures.write_figures(tmp):
            shutil.copy2(png, data_dir / png.name)
            kept.append(data_dir / png.name)
    return kept


def publish(root: Path, out: Path, *, benchmark: str = "medsynth", draw: bool = True) -> Path:
    """Write ``out/<page>/`` (the data and figures) and ``out/<page>.md``; returns the page."""
    page = PAGES.get(benchmark, benchmark)
    commit = git_sha(REPO_ROOT)  # before anything is written: the checkout as it was published from
    data_dir = Path(out) / page
    data_dir.mkdir(parents=True, exist_ok=True)
    tidy, run_df, weights, efficiency = compact(root, benchmark)
    for stale in [*data_dir.glob("*.png"), *(data_dir / n for n in DATA_FILES)]:
        stale.unlink(missing_ok=True)
    write_text(data_dir / "results.csv", tidy.to_csv(index=False))
    write_text(data_dir / "runs.csv", run_df.to_csv(index=False))
    write_json(data_dir / "expert_weights.json", weights, indent=1)
    if efficiency:
        write_json(data_dir / "efficiency.json", efficiency, indent=1)
    meta = {
        "benchmark": benchmark,
        "results_root": Path(root).name,
        "commit": commit,
        "jobs": jobs_found(run_df),
    }
    write_json(data_dir / "meta.json", meta, indent=1)
    if draw and len(run_df):
        draw_figures(data_dir)
    path = Path(out) / f"{page}.md"
    write_text(path, render_page(data_dir))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Publish a grid's results into docs/results/.")
    parser.add_argument("--root", type=Path, default=Path("outputs"), help="results root")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--benchmark", default="medsynth")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(
            f"[publish] no results folder {args.root}/: publishing 0 runs (run "
            "`make reproduce-mini` or `make sweep-table2` first for a filled page)",
            file=sys.stderr,
        )
    path = publish(args.root, args.out, benchmark=args.benchmark)
    meta = json.loads((args.out / path.stem / "meta.json").read_text(encoding="utf-8"))
    found = sum(j["found"] for j in meta["jobs"])
    expected = sum(j["expected"] for j in meta["jobs"])
    print(f"[publish] {path} ({found} of {expected} grid jobs); review and commit it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
