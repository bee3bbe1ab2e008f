# %% [markdown]
# # REPORT.md: one page with the environment, the git sha, the claims, every table and figure
# ``python -m analysis.report --reports reports`` after ``analysis.collect``, ``analysis.tables``,
# ``analysis.figures`` and ``analysis.claims``.

# %%
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "hydra-core",
    "rouge-chinese",
    "scipy",
    "pandas",
    "matplotlib",
    "numpy",
)
FIGURE_TITLES = {
    "fig4a_experts": "Fig. 4a: number of experts N at total rank r = 16",
    "fig4b_rank": "Fig. 4b: total rank r at r/N = 2",
    "fig5_efficiency": "Fig. 5: parameter ratio, training step time, inference latency",
    "fig6_expert_weights": "Fig. 6: expert weights per task",
}


def git_sha(root: Path = REPO_ROOT) -> str:
    """The analysing checkout's commit (``unknown`` outside git), with ``-dirty`` if modified."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment_lines() -> list[str]:
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            continue
    return [
        f"- analysis checkout: `{git_sha()}`",
        f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}",
        f"- {', '.join(versions)}",
    ]


def runs_lines(reports: Path) -> list[str]:
    """Run counts per experiment and status, and the code versions the runs were made with."""
    path = reports / "runs.csv"
    if not path.is_file():
        return ["No runs.csv: run `python -m analysis.collect` first."]
    runs = pd.read_csv(path)
    counts = runs.groupby(["experiment", "status"]).size().unstack(fill_value=0)
    lines = [
        "| experiment | " + " | ".join(counts.columns) + " |",
        "|---|" + "---|" * len(counts.columns),
    ]
    for exp, row in counts.iterrows():
        lines.append(f"| {exp} | " + " | ".join(str(int(v)) for v in row) + " |")
    shas = sorted(str(s) for s in runs["git_sha"].dropna().unique())
    dirty = (
        bool(runs["git_dirty"].fillna(False).astype(bool).any()) if "git_dirty" in runs else False
    )
    devices = sorted(str(d) for d in runs["device"].dropna().unique())
    lines += [
        "",
        f"Runs made at commit(s): {', '.join(f'`{s}`' for s in shas) or 'unknown'}"
        + (" (some with uncommitted changes)" if dirty else "")
        + f"; device(s): {', '.join(devices) or 'unknown'}.",
    ]
    return lines


def build_report(reports: Path) -> str:
    """The Markdown of REPORT.md from the files under ``reports``."""
    lines = [
        "# MOELoRA reproduction: report",
        "",
        "## Environment",
        "",
        *environment_lines(),
        "",
        "## Runs",
        "",
        *runs_lines(reports),
        "",
    ]
    missing = reports / "missing.md"
    if missing.is_file():
        body = missing.read_text(encoding="utf-8").split("\n", 1)[1].strip()
        body = body.replace("\n## ", "\n### ")
        lines += ["## Missing and failed runs", "", body, ""]
    costs = reports / "costs.md"
    if costs.is_file():
        lines += ["## Cost", "", costs.read_text(encoding="utf-8").split("\n", 1)[1].strip(), ""]
    lines += ["## Claims", ""]
    claims = sorted(reports.glob("claims_*.md"))
    if not claims:
        lines += ["No claims files (`python -m analysis.claims`).", ""]
    for path in claims:
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        lines += [
            f"### {title.lstrip('# ').strip()}",
            "",
            body.strip(),
            "",
            f"Also: [{path.stem}.csv]({path.stem}.csv).",
            "",
        ]
    tables = sorted(reports.glob("table*.md"))
    lines += ["## Tables", ""]
    if not tables:
        lines += ["No tables (`python -m analysis.tables`).", ""]
    for path in tables:
        lines += [
            f"### {path.stem}",
            "",
            path.read_text(encoding="utf-8").strip(),
            "",
            f"Also: [{path.stem}.tex]({path.stem}.tex), [{path.stem}.csv]({path.stem}.csv).",
            "",
        ]
    figures = sorted(reports.glob("fig*.png"))
    lines += ["## Figures", ""]
    if not figures:
        lines += ["No figures (`python -m analysis.figures`).", ""]
    for path in figures:
        title = next((t for k, t in FIGURE_TITLES.items() if path.stem.startswith(k)), path.stem)
        lines += [
            f"### {title} ({path.stem})",
            "",
            f"![{title}]({path.name})",
            "",
            f"PDF: [{path.stem}.pdf]({path.stem}.pdf)",
            "",
        ]
        extra = path.with_suffix(".md")
        if extra.is_file():
            lines += [
                extra.read_text(encoding="utf-8")
                .split("\n", 1)[1]
                .strip()
                .replace("\n# ", "\n#### "),
                "",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write reports/REPORT.md.")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    if not (args.reports / "results.csv").is_file():
        print(
            f"[report] nothing to report: no {args.reports / 'results.csv'}; run "
            f"python -m analysis.collect --root outputs --out {args.reports} first",
            file=sys.stderr,
        )
        return 1
    out = args.reports / "REPORT.md"
    out.write_text(build_report(args.reports), encoding="utf-8")
    print(f"[report] {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
