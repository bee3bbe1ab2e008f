# %% [markdown]
# # Tables 2 and 3: per-task test scores, mean ± std over seeds, marks, significance
# ``python -m analysis.tables --reports reports [--paired]`` reads ``reports/results.csv``
# (from ``analysis.collect``) and writes ``table2_<benchmark>.{md,tex,csv}`` and
# ``table3_<benchmark>.{md,tex,csv}``. One table per benchmark × scorer mode × variant (the
# overrides beyond the grid, e.g. ``trainer=smoke``): runs that differ there are never mixed.
# Below each measured row: the paper's row for that method (analysis/paper_numbers.py), labelled
# with its benchmark; last: the floor row (the best trivial predictor per task, from the runs'
# ``floors``, moelora/evaluation/floors.py).

# %%
from __future__ import annotations

import argparse
import hashlib
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import paper_numbers
from analysis.stats import (
    ALPHA,
    MIN_N,
    Summary,
    TestResult,
    best_baseline,
    format_mean_std,
    is_significant_improvement,
    rank_marks,
    summarize,
    ttest,
)

# (row key, display name, reported-only). Row keys are method names (results' "method").
TABLE2_ROWS: list[tuple[str, str, bool]] = [
    ("chatgpt", "ChatGPT", True),
    ("huatuo", "Huatuo", True),
    ("icl", "ICL (local LLM)", False),
    ("ptuning", "P-Tuning", False),
    ("lora_full", "LoRA (Full)", False),
    ("lora_single", "LoRA (Single)", False),
    ("lora_full_tp", "LoRA (Full+TP)", False),
    ("task_arithmetic", "Task-Arithmetic", False),
    ("lorahub", "LoRAHub", False),
    ("molora", "MoLoRA", False),
    ("moelora_dense", "MOELoRA (D)", False),
    ("moelora_sparse", "MOELoRA (S)", False),
]
TABLE3_ROWS: list[tuple[str, str, bool]] = [
    ("lora_full", "w/o MOE", False),
    ("moelora_no_gate", "w/o gate", False),
    ("moelora_multi_gate", "w multiple gate", False),
    ("moelora_bt", "w BT", False),
    ("moelora_rbt", "w RBT", False),
    ("lora_full_qkv", "LoRA (Full)-QKV", False),
    ("moelora_dense_qkv", "MOELoRA(D)-QKV", False),
    ("moelora_dense", "MOELoRA (D)", False),
]
TABLES = {
    "table2": {
        "title": "Table 2",
        "rows": TABLE2_ROWS,
        "paper": paper_numbers.TABLE2,
        "paper_significant": paper_numbers.TABLE2_SIGNIFICANT,
        "proposed": ("moelora_dense", "moelora_sparse"),
        "reuse": {},
    },
    # Table 3 repeats Table 2's LoRA (Full) ("w/o MOE") and MOELoRA (D) rows (methods.md §7).
    "table3": {
        "title": "Table 3",
        "rows": TABLE3_ROWS,
        "paper": paper_numbers.TABLE3,
        "paper_significant": paper_numbers.TABLE3_SIGNIFICANT,
        "proposed": ("moelora_dense",),
        "reuse": {"lora_full": "table2", "moelora_dense": "table2"},
    },
}
PLAIN_EXPERIMENT = "default"  # conf/config.yaml experiment_name: runs outside any grid
BENCHMARK_LABELS = {
    "medsynth": "MedSynth-8 (the embedded generated benchmark, not PromptCBLUE)",
    "promptcblue": "PromptCBLUE (the paper's 8 tasks, test split)",
    "promptcblue_toy": "the PromptCBLUE toy examples (format check only)",
}
SHORT_LABELS = {
    "medsynth": "MedSynth-8",
    "promptcblue": "PromptCBLUE",
    "promptcblue_toy": "PromptCBLUE toy",
}
PAPER_NOTE = f"paper, {SHORT_LABELS[paper_numbers.BENCHMARK]}"  # "LoRA (Full) (paper, PromptCBLUE)"
FLOOR_KEY = "floor"
FLOOR_DISPLAY = "Floor (empty / majority / copy input)"
FLOOR_TAGS = {"empty": "empty", "majority": "majority", "copy_input": "copy"}


def short_task(task: str) -> str:
    """Column header as in the paper: ``CHIP-CDN`` → ``CDN``; ``avg`` → ``Avg``."""
    if task == "avg":
        return "Avg"
    return re.sub(r"^(CHIP-|KUAKE-|IMCS-V2-)", "", task)


@dataclass
class Cell:
    summary: Summary
    mark: str = ""  # best | second | ""
    star: bool = False  # ours: significant improvement over the best baseline
    value: float | None = None  # paper and floor rows: the one value shown
    paper_star: bool = False  # paper rows: the paper printed a * on this cell
    floor_by: str | None = None  # floor rows: the trivial predictor that gave the value


NO_SUMMARY = Summary(math.nan, math.nan, 0)


@dataclass
class Row:
    key: str
    display: str
    source: str  # ours | paper | floor
    cells: dict[str, Cell] = field(default_factory=dict)
    note: str = ""


@dataclass
class Table:
    name: str
    benchmark: str
    scorer_mode: str
    variant: str
    columns: list[str]
    rows: list[Row]
    tests: dict[str, dict[str, TestResult]]  # column → proposed → test vs best baseline
    baselines: dict[str, str | None]  # column → best baseline row key
    caption: str
    untested: str = ""  # why no significance is marked at all, if so


# %% [markdown]
# ## Building a table from the tidy results


# %%
def row_sources(name: str, method: str) -> list[str]:
    """Where a table's row looks for runs, in order: the table's own grid, the grid it reuses
    for that row (Table 3 → Table 2), then plain ``python run.py method=…`` runs (experiment
    ``default``, the same settings), so ``python run.py -m method=a,b seed=42,43,44`` followed
    by ``make tables`` tabulates those methods."""
    sources = [name]
    reused = TABLES[name]["reuse"].get(method)
    if reused:
        sources.append(reused)
    if PLAIN_EXPERIMENT not in sources:
        sources.append(PLAIN_EXPERIMENT)
    return sources


def per_seed(tidy: pd.DataFrame, method: str, task: str) -> dict[int, float]:
    """seed → score of one method and task (successful runs only, NaN scores dropped)."""
    sel = tidy[(tidy["method"] == method) & (tidy["task"] == task)].dropna(subset=["score"])
    return {int(s): float(v) for s, v in zip(sel["seed"], sel["score"])}


def ordered_columns(tidy: pd.DataFrame) -> list[str]:
    """The paper's task order first, then any other tasks, then ``avg``."""
    present = [t for t in tidy.sort_values("task_index")["task"].dropna().unique() if t != "avg"]
    paper = [t for t in paper_numbers.TASK_COLUMNS if t in present]
    return paper + [t for t in present if t not in paper] + ["avg"]


def build_table(
    tidy: pd.DataFrame,
    name: str,
    *,
    benchmark: str,
    scorer_mode: str,
    variant: str,
    paired: bool = False,
) -> Table:
    """One Table 2 / Table 3 for one (benchmark, scorer mode, variant) group of ``tidy``."""
    spec = TABLES[name]
    ok = tidy[
        (tidy["status"] == "success")
        & (tidy["benchmark"] == benchmark)
        & (tidy["scorer_mode"].fillna("") == scorer_mode)
        & (tidy["variant"].fillna("") == variant)
    ]
    parts, plain = [], []
    for key, display, reported_only in spec["rows"]:
        if reported_only:
            continue
        for source in row_sources(name, key):
            runs = ok[(ok["experiment"] == source) & (ok["method"] == key)]
            if not runs.empty:
                parts.append(runs)
                if source == PLAIN_EXPERIMENT and name != PLAIN_EXPERIMENT:
                    plain.append(display)
                break
    data = pd.concat(parts, ignore_index=True) if parts else ok.iloc[0:0]
    columns = ordered_columns(data) if not data.empty else list(paper_numbers.TASK_COLUMNS)
    ours = [(k, d) for k, d, reported_only in spec["rows"] if not reported_only]
    scores = {k: {c: per_seed(data, k, c) for c in columns} for k, _ in ours}
    summaries = {k: {c: summarize(list(scores[k][c].values())) for c in columns} for k, _ in ours}
    baselines_keys = [k for k, _ in ours if k not in spec["proposed"]]
    marks, tests, best = {}, {}, {}
    for c in columns:
        means = {k: summaries[k][c].mean for k, _ in ours}
        marks[c] = rank_marks(means)
        best[c] = best_baseline(means, baselines_keys)
        tests[c] = {
            p: ttest(scores[p][c], scores[best[c]][c], paired=paired)
            for p in spec["proposed"]
            if best[c] is not None
        }
    untested = "trainer=smoke" if is_smoke(data, variant) else ""
    rows: list[Row] = []
    for key, display, reported_only in spec["rows"]:
        if not reported_only:
            row = Row(key, display, "ours")
            for c in columns:
                star = (
                    not untested
                    and c in tests
                    and key in tests[c]
                    and is_significant_improvement(tests[c][key])
                )
                row.cells[c] = Cell(summaries[key][c], marks[c][key], star)
            rows.append(row)
        paper = spec["paper"].get(key)
        if paper is not None:
            prow = Row(key, display, "paper", note=PAPER_NOTE)
            for c in columns:
                prow.cells[c] = Cell(
                    NO_SUMMARY, value=paper.get(c), paper_star=(key, c) in spec["paper_significant"]
                )
            rows.append(prow)
    floor, floors_differ = floor_row(data, columns)
    if floor is not None:
        rows.append(floor)
    test_name = next((t.test for c in tests for t in tests[c].values()), _test_name(paired))
    ns = sorted({s.n for k, _ in ours for s in summaries[k].values() if s.n})
    text = caption(
        name,
        benchmark,
        scorer_mode,
        variant,
        test_name,
        data,
        ns=ns,
        untested=untested,
        columns=columns,
        floor=floor is not None,
        floors_differ=floors_differ,
    )
    if plain:
        text += (
            f" Rows {', '.join(plain)} come from plain runs (python run.py method=…, "
            f"experiment {PLAIN_EXPERIMENT}): same settings as the {name} grid."
        )
    return Table(name, benchmark, scorer_mode, variant, columns, rows, tests, best, text, untested)


def floor_row(data: pd.DataFrame, columns: list[str]) -> tuple[Row | None, list[str]]:
    """The floor row of a table: per task, the highest floor among the table's runs (they share
    the test split, so their floors agree unless the split differs) and the predictor that gave
    it; Avg is the mean of those task floors. Returns (row or None when no run recorded floors,
    the tasks whose floors differ across runs)."""
    if data.empty or "floor" not in data:
        return None, []
    row, differ, values = Row(FLOOR_KEY, FLOOR_DISPLAY, "floor"), [], []
    for c in columns:
        if c == "avg":
            continue
        sel = data[data["task"] == c].dropna(subset=["floor"])
        if sel.empty:
            row.cells[c] = Cell(NO_SUMMARY)
            continue
        best = sel.loc[sel["floor"].idxmax()]
        if float(sel["floor"].max()) - float(sel["floor"].min()) > 1e-12:
            differ.append(c)
        by = best["floor_by"] if isinstance(best["floor_by"], str) else None
        row.cells[c] = Cell(NO_SUMMARY, value=float(best["floor"]), floor_by=by)
        values.append(float(best["floor"]))
    if not values:
        return None, []
    complete = len(values) == len([c for c in columns if c != "avg"])
    row.cells["avg"] = Cell(NO_SUMMARY, value=sum(values) / len(values) if complete else None)
    return row, differ


def is_smoke(data: pd.DataFrame, variant: str) -> bool:
    """Whether any run of the table is a ``trainer=smoke`` run (a wiring check, never a result):
    from results.json's Hydra choices (column ``trainer``) or, for older runs, the overrides."""
    if "trainer" in data and (data["trainer"].fillna("") == "smoke").any():
        return True
    return "trainer=smoke" in str(variant or "").split(",")


def _test_name(paired: bool) -> str:
    return ttest({0: 0.0}, {0: 0.0}, paired=paired).test


def caption(
    name: str,
    benchmark: str,
    scorer_mode: str,
    variant: str,
    test_name: str,
    data: pd.DataFrame,
    *,
    ns: list[int] | None = None,
    untested: str = "",
    columns: list[str] | None = None,
    floor: bool = False,
    floors_differ: list[str] | None = None,
) -> str:
    """What the table shows, on what data, and what the marks and the test are.

    ``ns``: the numbers of seeds per cell that occur; ``untested``: why no significance is
    marked (``trainer=smoke``); ``columns``: the table's columns; ``floor``: whether the table
    has a floor row; ``floors_differ``: tasks whose floors differ across the runs."""
    spec = TABLES[name]
    decoding = ", ".join(sorted(str(d) for d in data["decoding"].dropna().unique())) or "n/a"
    seeds = ", ".join(str(int(s)) for s in sorted(data["seed"].dropna().unique())) or "none"
    proposed = " and ".join(d for k, d, _ in spec["rows"] if k in spec["proposed"])
    n_text = "0" if not ns else str(ns[0]) if ns[0] == ns[-1] else f"{ns[0]}–{ns[-1]}"
    if untested:
        star = f"No significance is marked: these are {untested} runs (wiring checks, not results)."
    else:
        star = (
            f"*: the improvement of {proposed} over the best baseline of that column is "
            f"significant under a two-sided {test_name}, p < {ALPHA}; tested only where both "
            f"have n ≥ {MIN_N} seeds."
        )
    paper_label = SHORT_LABELS[paper_numbers.BENCHMARK]
    paper_seeds = ", ".join(str(s) for s in paper_numbers.SEEDS)
    text = (
        f"The paper's {spec['title']} reproduced on {BENCHMARK_LABELS.get(benchmark, benchmark)}: "
        f"test score per task "
        f"({scorer_mode or 'n/a'} scorer, 0–1), mean ± sample std over seeds ({seeds}; n = "
        f"{n_text} seeds per cell), decoding: {decoding}. Bold: best, underline: second best "
        f"per column among our rows. {star} Rows labelled ({PAPER_NOTE}) are not measured "
        f"here: they are the paper's reported numbers (ChatGLM-6B on {paper_label}, mean over "
        f"seeds {paper_seeds}; analysis/paper_numbers.py), each below the measured row of "
        f"its method where there is one; †: the paper's own significance mark (its *: improvement over its "
        f"best baseline, two-sided t-test, p < 0.05)."
    )
    if columns is not None and [c for c in columns if c != "avg"] != [
        c for c in paper_numbers.TASK_COLUMNS if c != "avg"
    ]:
        text += (
            f" The paper's Avg is over its {len(paper_numbers.TASK_COLUMNS) - 1} tasks; "
            "a paper cell of a task it does not report is –."
        )
    if benchmark != paper_numbers.BENCHMARK:
        text += (
            f" Our rows are on {SHORT_LABELS.get(benchmark, benchmark)}, not {paper_label}: "
            f"their absolute values are not comparable with the paper rows."
        )
    if floor:
        text += (
            f" {FLOOR_DISPLAY}: per task, the best of three trivial predictors on the same "
            "test split, scored by the same scorer: an empty answer, the task's most frequent "
            "training target (majority), a copy of the input (copy); the one that gives it is "
            "named. Its Avg is the mean of the task floors. A method learns a task only where "
            "it scores clearly above its floor."
        )
        if floors_differ:
            text += (
                f" The runs' floors differ on {', '.join(floors_differ)} (different test "
                "splits?): the highest is shown."
            )
    else:
        text += (
            " No floor row: the runs record no floors (results.json → floors; rerun with "
            "overwrite=true to add them)."
        )
    if spec["reuse"]:
        reused = ", ".join(d for k, d, _ in spec["rows"] if k in spec["reuse"])
        text += f" Rows {reused} reuse the table2 runs (methods.md §7)."
    if variant:
        text += f" Runs with overrides: {variant}."
    if "repeat_mode" in data and (data["repeat_mode"] == "decode_only").any():
        text += " Seeds vary decoding only (repeat_mode=decode_only): one training run."
    return text


# %% [markdown]
# ## Rendering: Markdown, LaTeX, CSV


# %%
def _n_text(row: Row) -> str:
    ns = sorted({c.summary.n for c in row.cells.values()})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def _cell_text(cell: Cell, row_n: str, latex: bool) -> str:
    """One cell: a paper value (with the paper's mark), a floor (with its predictor), or
    mean ± std with its marks; – where there is no value."""
    if row_n in ("paper", "floor"):
        if cell.value is None:
            return "–"
        text = f"{cell.value:.4f}"
        if cell.paper_star:
            text += r"$^{\dagger}$" if latex else "†"
        if cell.floor_by:
            tag = FLOOR_TAGS.get(cell.floor_by, cell.floor_by)
            text += rf" {{\scriptsize ({tag})}}" if latex else f" ({tag})"
        return text
    text = format_mean_std(cell.summary)
    if cell.summary.n and "–" in row_n:  # n differs across the row: show it per cell
        text += f" (n={cell.summary.n})"
    if latex:
        text = text.replace("±", r"$\pm$").replace("–", "--")
    if cell.mark == "best":
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    elif cell.mark == "second":
        text = rf"\underline{{{text}}}" if latex else f"<u>{text}</u>"
    if cell.star:
        text += "$^{*}$" if latex else "\\*"
    return text


def _row_n(row: Row) -> str:
    return row.source if row.source in ("paper", "floor") else _n_text(row)


def to_markdown(table: Table) -> str:
    """The table as GitHub Markdown: caption, table, then the significance tests."""
    head = ["Method", *[short_task(c) for c in table.columns], "n"]
    lines = [
        f"**{TABLES[table.name]['title']}.** {table.caption.replace('*:', chr(92) + '*:')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in table.rows:
        n = _row_n(row)
        label = row.display + (f" ({row.note})" if row.note else "")
        cells = [_cell_text(row.cells[c], n, latex=False) for c in table.columns]
        lines.append("| " + " | ".join([label, *cells, n if row.source == "ours" else "–"]) + " |")
    lines += ["", "Significance (proposed vs the best baseline of each column):", ""]
    lines += [
        "| column | proposed | best baseline | t | p | significant |",
        "|---|---|---|---|---|---|",
    ]
    names = {k: d for k, d, _ in TABLES[table.name]["rows"]}
    for c in table.columns:
        for p, res in table.tests.get(c, {}).items():
            sig = (
                f"not tested ({table.untested})"
                if table.untested
                else f"not tested (n < {MIN_N})"
                if min(res.n_a, res.n_b) < MIN_N
                else "yes"
                if is_significant_improvement(res)
                else "no"
            )
            lines.append(
                f"| {short_task(c)} | {names[p]} | {names[table.baselines[c]]} | "
                f"{_fmt(res.statistic, 3)} | {_fmt(res.p_value, 4)} | {sig} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def _tex_escape(text: str) -> str:
    return re.sub(r"([&%$#_{}])", r"\\\1", text)


def to_latex(table: Table) -> str:
    """The table as a LaTeX ``table`` environment (booktabs)."""
    cols = "l" + "c" * len(table.columns)
    head = " & ".join(["Method", *[short_task(c) for c in table.columns]]) + r" \\"
    lines = [
        r"\begin{table*}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{_tex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}-{_slug(table.benchmark)}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        head,
        r"\midrule",
    ]
    for row in table.rows:
        n = _row_n(row)
        label = _tex_escape(row.display + (f" ({row.note})" if row.note else ""))
        if row.source == "ours":
            label += f" (n={n})"
        cells = [_cell_text(row.cells[c], n, latex=True) for c in table.columns]
        lines.append(" & ".join([label, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(lines) + "\n"


def to_frame(table: Table) -> pd.DataFrame:
    """Long CSV: one line per row × column with mean, std, n, marks and the test."""
    out = []
    for row in table.rows:
        for c in table.columns:
            cell = row.cells[c]
            res = table.tests.get(c, {}).get(row.key) if row.source == "ours" else None
            out.append(
                {
                    "table": table.name,
                    "benchmark": table.benchmark,
                    "scorer_mode": table.scorer_mode,
                    "variant": table.variant,
                    "row": row.key,
                    "display": row.display,
                    "source": row.source,
                    "task": c,
                    "mean": cell.summary.mean
                    if row.source == "ours"
                    else (math.nan if cell.value is None else cell.value),
                    "std": cell.summary.std if row.source == "ours" else math.nan,
                    "n": cell.summary.n if row.source == "ours" else math.nan,
                    "mark": cell.mark,
                    "significant": cell.star,
                    "paper_significant": cell.paper_star,
                    "floor_by": cell.floor_by,
                    "compared_to": table.baselines.get(c) if res else None,
                    "t": res.statistic if res else math.nan,
                    "p_value": res.p_value if res else math.nan,
                }
            )
    return pd.DataFrame(out)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def variant_slug(variant: str, max_len: int = 60) -> str:
    """A file-name-safe variant; long ones become ``v-<hash>`` (the text is in the caption)."""
    slug = _slug(variant)
    if len(slug) <= max_len:
        return slug
    return "v-" + hashlib.sha1(variant.encode("utf-8")).hexdigest()[:10]


def file_stem(table: Table) -> str:
    """``table2_medsynth``, plus the scorer mode when not official and the variant if any."""
    parts = [table.name, table.benchmark or "unknown"]
    if table.scorer_mode and table.scorer_mode != "official":
        parts.append(table.scorer_mode)
    if table.variant:
        parts.append(variant_slug(table.variant))
    return _slug("_".join(parts))


# %% [markdown]
# ## Main


# %%
def groups(tidy: pd.DataFrame, name: str) -> list[tuple[str, str, str]]:
    """(benchmark, scorer_mode, variant) groups with successful runs of experiment ``name``, or
    plain runs (experiment ``default``) of a method that only this table shows (Table 3's
    reused rows alone do not make a Table 3)."""
    spec = TABLES[name]
    own_methods = [k for k, _, reported in spec["rows"] if not reported and k not in spec["reuse"]]
    ok = tidy[
        (tidy["status"] == "success")
        & (
            (tidy["experiment"] == name)
            | ((tidy["experiment"] == PLAIN_EXPERIMENT) & tidy["method"].isin(own_methods))
        )
    ]
    keys = ok[["benchmark", "scorer_mode", "variant"]].fillna("").drop_duplicates()
    return sorted(tuple(str(v) for v in r) for r in keys.itertuples(index=False))


def write_tables(tidy: pd.DataFrame, reports: Path, *, paired: bool = False) -> list[Path]:
    """Every table that has data; returns the Markdown paths written."""
    written = []
    for name in TABLES:
        for benchmark, scorer_mode, variant in groups(tidy, name):
            table = build_table(
                tidy,
                name,
                benchmark=benchmark,
                scorer_mode=scorer_mode,
                variant=variant,
                paired=paired,
            )
            stem = reports / file_stem(table)
            stem.with_suffix(".md").write_text(to_markdown(table), encoding="utf-8")
            stem.with_suffix(".tex").write_text(to_latex(table), encoding="utf-8")
            to_frame(table).to_csv(stem.with_suffix(".csv"), index=False)
            written.append(stem.with_suffix(".md"))
    return written


def load_tidy(reports: Path) -> pd.DataFrame | None:
    path = reports / "results.csv"
    if not path.is_file():
        return None
    return pd.read_csv(path, keep_default_na=True, dtype={"variant": str, "scorer_mode": str})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write Tables 2 and 3 (Markdown, LaTeX, CSV).")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument(
        "--paired",
        action="store_true",
        help="paired-by-seed t-test (ttest_rel) instead of ttest_ind",
    )
    args = parser.parse_args(argv)
    tidy = load_tidy(args.reports)
    if tidy is None:
        print(
            f"[tables] no {args.reports / 'results.csv'}; run python -m analysis.collect "
            f"--root outputs --out {args.reports} first",
            file=sys.stderr,
        )
        return 1
    written = write_tables(tidy, args.reports, paired=args.paired)
    if not written:
        print(
            "[tables] no successful runs of a Table 2/3 method in results.csv; nothing to "
            "tabulate (python run.py experiment=table2)",
            file=sys.stderr,
        )
        return 0  # not an error: other artefacts may still be reported
    for path in written:
        print(f"[tables] {path} (+ .tex, .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
