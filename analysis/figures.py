# %% [markdown]
# # Figures 4–6
# ``python -m analysis.figures --reports reports`` reads ``results.csv``, ``runs.csv`` and
# ``expert_weights.json`` (from ``analysis.collect``) and writes, per benchmark × variant:
# - ``fig4a_experts_*``: average test score vs number of experts N at total rank r = 16;
# - ``fig4b_rank_*``: average test score vs total rank r at r/N = 2;
# - ``fig5_efficiency_*``: trainable-parameter ratio, training step time, inference latency and
#   training memory (analysis/fig5.py; measured by experiments/efficiency.py when
#   ``efficiency.json`` is there);
# - ``fig6_expert_weights_*``: the gate's expert weights per task (Eq. 5), one panel per seed,
#   plus the T×N matrices and the pairwise cosine / Jensen–Shannon tables (CSV, Markdown).
# Each as PNG and PDF.

# %%
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import paper_numbers  # noqa: E402
from analysis.fig5 import DISPLAY, fig5_runs, load_efficiency, plot_fig5  # noqa: E402, F401
from analysis.stats import (  # noqa: E402
    cosine_matrix,
    format_mean_std,
    js_distance_matrix,
    summarize,
)
from analysis.tables import BENCHMARK_LABELS, _slug, load_tidy, variant_slug  # noqa: E402

MARKED_TASKS = ("CHIP-CDN", "KUAKE-QIC")  # the two tasks the paper's Fig. 6 discusses


def _stem(prefix: str, benchmark: str, variant: str) -> str:
    return _slug("_".join(p for p in (prefix, benchmark or "unknown", variant_slug(variant)) if p))


def _save(fig: plt.Figure, reports: Path, stem: str) -> Path:
    png = reports / f"{stem}.png"
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(reports / f"{stem}.pdf", bbox_inches="tight")
    plt.close(fig)
    return png


def _note(fig: plt.Figure, text: str) -> None:
    fig.text(0.01, -0.02, text, ha="left", va="top", fontsize=8, wrap=True)


# %% [markdown]
# ## Fig. 4: hyper-parameters of MOELoRA (D)


# %%
def fig4_points(tidy: pd.DataFrame, runs: pd.DataFrame, experiment: str, x: str) -> pd.DataFrame:
    """Per x value (``num_experts`` or ``rank``): avg score mean/std/n and parameter ratios."""
    ok = tidy[
        (tidy["experiment"] == experiment) & (tidy["status"] == "success") & (tidy["task"] == "avg")
    ]
    out = []
    for value, grp in ok.groupby(x):
        s = summarize(grp["score"].tolist())
        r = runs[
            (runs["experiment"] == experiment)
            & (runs["status"] == "success")
            & (runs[x] == value)
            & runs["path"].isin(grp["path"])
        ]
        out.append(
            {
                x: value,
                "mean": s.mean,
                "std": s.std,
                "n": s.n,
                "num_experts": grp["num_experts"].iloc[0],
                "rank": grp["rank"].iloc[0],
                "ratio": r["params_ratio"].mean(),
                "ratio_chatglm6b": r["params_chatglm6b_ratio"].mean(),
            }
        )
    return pd.DataFrame(out).sort_values(x) if out else pd.DataFrame()


def plot_fig4(
    points: pd.DataFrame, *, x: str, which: str, benchmark: str, variant: str
) -> plt.Figure:
    """Line plot with seed error bars (±1 sample std), each point annotated with its ratio."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    std = points["std"].fillna(0.0)
    ax.errorbar(
        points[x],
        points["mean"],
        yerr=std,
        marker="o",
        capsize=4,
        label=f"MOELoRA (D), ours (mean ± std, n = {int(points['n'].max())} seeds)",
    )
    for (_, p), top in zip(points.iterrows(), points["mean"] + std):
        text = f"{100 * p['ratio']:.3g} %" if math.isfinite(p["ratio"]) else ""
        if math.isfinite(p["ratio_chatglm6b"]):
            text += f"\n(GLM-6B {100 * p['ratio_chatglm6b']:.3g} %)"
        ax.annotate(
            text,
            (p[x], top),
            textcoords="offset points",
            xytext=(0, 5),  # above the bar
            ha="center",
            fontsize=7,
        )
    if benchmark == "promptcblue":
        for (rank, n_exp), value in paper_numbers.FIG4.items():
            px = n_exp if x == "num_experts" else rank
            if (x == "num_experts" and rank == 16) or (x == "rank" and rank == 2 * n_exp):
                approx = (rank, n_exp) in paper_numbers.FIG4_APPROXIMATE
                ax.plot(
                    px,
                    value,
                    marker="*",
                    color="tab:red",
                    ms=11,
                    ls="none",
                    label="paper" + (" (≈, read off Fig. 4a)" if approx else " (Table 2)"),
                )
    ax.margins(x=0.12, y=0.25)  # room for the end labels
    ax.set_xscale("log", base=2)
    ax.set_xticks(points[x].tolist(), [str(int(v)) for v in points[x]])
    if which == "a":
        ax.set_xlabel("number of experts N (total rank r = 16, per-expert rank 16/N)")
        ax.set_title("Fig. 4a: MOELoRA (D), number of experts")
    else:
        ax.set_xlabel("total LoRA rank r (N = r/2 experts of rank 2)")
        ax.set_title("Fig. 4b: MOELoRA (D), rank at r/N = 2")
    ax.set_ylabel("average test score over tasks (0–1)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower right")
    _note(
        fig,
        f"Benchmark: {BENCHMARK_LABELS.get(benchmark, benchmark)}. Labels: trainable "
        f"parameters / base-model parameters of the model in hand (and on ChatGLM-6B's "
        f"shapes when recorded). Error bars: ±1 sample std over seeds."
        + (f" Overrides: {variant}." if variant else ""),
    )
    return fig


# %% [markdown]
# ## Fig. 6: expert weights per task


# %%
def plot_fig6(entries: list[dict], *, benchmark: str, variant: str) -> plt.Figure:
    """One panel per seed: a stacked horizontal bar (length 1) per task, one colour per expert."""
    entries = sorted(entries, key=lambda e: e["seed"])
    fig, axes = plt.subplots(1, len(entries), figsize=(4.6 * len(entries), 3.8), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, e in zip(axes[0], entries):
        w = np.asarray(e["matrix"], dtype=float)  # (T, N)
        tasks = list(e["tasks"])
        left = np.zeros(len(tasks))
        for i in range(w.shape[1]):
            ax.barh(
                np.arange(len(tasks)),
                w[:, i],
                left=left,
                color=cmap(i % 20),
                label=f"expert {i + 1}",
                edgecolor="white",
                linewidth=0.4,
            )
            left += w[:, i]
        ax.set_yticks(
            np.arange(len(tasks)), [f"▶ {t}" if t in MARKED_TASKS else t for t in tasks], fontsize=8
        )
        for tick, t in zip(ax.get_yticklabels(), tasks):
            if t in MARKED_TASKS:
                tick.set_color("tab:red")
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("gate weight ω (sums to 1 per task)")
        ax.set_title(f"seed {e['seed']}", fontsize=9)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Fig. 6: MOELoRA (D) expert weights per task, ω_j = softmax(W_T e_j) (Eq. 5)")
    _note(
        fig,
        f"Benchmark: {BENCHMARK_LABELS.get(benchmark, benchmark)}; {len(entries)} seeds, "
        f"one panel each (expert indices are not aligned across seeds). ▶ red: CHIP-CDN "
        f"and KUAKE-QIC, the pair the paper compares."
        + (f" Overrides: {variant}." if variant else ""),
    )
    fig.tight_layout()
    return fig


def fig6_entries(weights: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(benchmark, variant) → expert-weight entries of MOELoRA (D): the fig6 grid, else table2,
    else plain runs (experiment ``default``)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for source in ("fig6_expert_weights", "table2", "default"):
        found: dict[tuple[str, str], list[dict]] = {}
        for e in weights:
            if e["experiment"] == source and e["method"] == "moelora_dense" and e.get("matrix"):
                key = (str(e.get("benchmark") or ""), str(e.get("variant") or ""))
                found.setdefault(key, []).append(e)
        for key, entries in found.items():
            out.setdefault(key, entries)
    return out


def pairwise_tables(
    entries: list[dict], marked: tuple[str, ...] = MARKED_TASKS
) -> tuple[str, dict[str, pd.DataFrame]]:
    """Per seed: the T×N matrix, pairwise cosine and JS distance; Markdown with mean ± std.

    Returns:
        (markdown, frames): frames named ``weights_seed<s>``, ``cosine_seed<s>``,
        ``js_seed<s>`` (CSV-ready, tasks as index).
    """
    frames: dict[str, pd.DataFrame] = {}
    cos_all, js_all = [], []
    tasks = list(entries[0]["tasks"])
    for e in sorted(entries, key=lambda e: e["seed"]):
        w = np.asarray(e["matrix"], dtype=float)
        experts = [f"expert_{i + 1}" for i in range(w.shape[1])]
        frames[f"weights_seed{e['seed']}"] = pd.DataFrame(w, index=e["tasks"], columns=experts)
        cos, js = cosine_matrix(w), js_distance_matrix(w)
        frames[f"cosine_seed{e['seed']}"] = pd.DataFrame(cos, index=e["tasks"], columns=e["tasks"])
        frames[f"js_seed{e['seed']}"] = pd.DataFrame(js, index=e["tasks"], columns=e["tasks"])
        if list(e["tasks"]) == tasks:
            cos_all.append(cos)
            js_all.append(js)
    lines = [
        "# Fig. 6: expert weights per task, pairwise similarity",
        "",
        f"Seeds: {', '.join(str(e['seed']) for e in entries)}. Cosine similarity and "
        "Jensen–Shannon distance (base 2) between tasks' gate-weight vectors, computed "
        "within each seed, then mean ± std over seeds (expert indices are not aligned "
        "across seeds, the similarities are).",
        "",
        "| task A | task B | cosine | JS distance |",
        "|---|---|---|---|",
    ]
    cos_arr, js_arr = np.asarray(cos_all), np.asarray(js_all)
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            c, d = summarize(cos_arr[:, i, j].tolist()), summarize(js_arr[:, i, j].tolist())
            pair = f"{tasks[i]} | {tasks[j]}"
            if tasks[i] in marked and tasks[j] in marked:
                pair = f"**{tasks[i]}** | **{tasks[j]}**"
            lines.append(f"| {pair} | {format_mean_std(c)} | {format_mean_std(d)} |")
    for e in sorted(entries, key=lambda e: e["seed"]):
        lines += [
            "",
            f"T×N weights, seed {e['seed']}:",
            "",
            frames[f"weights_seed{e['seed']}"].round(4).to_markdown(),
        ]
    return "\n".join(lines) + "\n", frames


# %% [markdown]
# ## Main


# %%
def write_figures(reports: Path) -> list[Path]:
    """Every figure that has data; returns the PNG paths written."""
    tidy = load_tidy(reports)
    runs = pd.read_csv(reports / "runs.csv", dtype={"variant": str})
    for df in (tidy, runs):
        df["variant"] = df["variant"].fillna("")
    written = []
    for experiment, x, which, prefix in (
        ("fig4_experts", "num_experts", "a", "fig4a_experts"),
        ("fig4_rank", "rank", "b", "fig4b_rank"),
    ):
        sel = tidy[tidy["experiment"] == experiment]
        for (bench, variant), grp in sel.groupby(["benchmark", "variant"]):
            points = fig4_points(grp, runs[runs["variant"] == variant], experiment, x)
            if not points.empty:
                fig = plot_fig4(points, x=x, which=which, benchmark=bench, variant=variant)
                written.append(_save(fig, reports, _stem(prefix, bench, variant)))
    sel = runs[(runs["experiment"] == "fig5_efficiency") & (runs["status"] == "success")]
    measured = load_efficiency(reports)
    for (bench, variant), grp in sel.groupby(["benchmark", "variant"]):
        fig = plot_fig5(
            grp,
            benchmark=bench,
            variant=variant,
            lookup=runs,
            efficiency=measured.get((str(bench), str(variant))),
        )
        written.append(_save(fig, reports, _stem("fig5_efficiency", bench, variant)))
    wpath = reports / "expert_weights.json"
    weights = json.loads(wpath.read_text(encoding="utf-8")) if wpath.is_file() else []
    for (bench, variant), entries in sorted(fig6_entries(weights).items()):
        stem = _stem("fig6_expert_weights", bench, variant)
        written.append(_save(plot_fig6(entries, benchmark=bench, variant=variant), reports, stem))
        md, frames = pairwise_tables(entries, marked=MARKED_TASKS)
        (reports / f"{stem}.md").write_text(md, encoding="utf-8")
        for name, frame in frames.items():
            frame.to_csv(reports / f"{stem}_{name}.csv")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write Figures 4-6 (PNG and PDF).")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    if not (args.reports / "results.csv").is_file() or not (args.reports / "runs.csv").is_file():
        print(
            f"[figures] no results.csv/runs.csv in {args.reports}/; run python -m "
            f"analysis.collect --root outputs --out {args.reports} first",
            file=sys.stderr,
        )
        return 1
    written = write_figures(args.reports)
    if not written:
        print(
            "[figures] no successful fig4/fig5/fig6 (or table2 MOELoRA (D)) runs; nothing to "
            "plot (python run.py experiment=fig4_experts ...)",
            file=sys.stderr,
        )
        return 0  # not an error: other artefacts may still be reported
    for path in written:
        print(f"[figures] {path} (+ .pdf)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
