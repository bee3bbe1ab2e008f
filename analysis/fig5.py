# %% [markdown]
# # Fig. 5: efficiency of the PEFT methods
# Panel (a), the trainable-parameter ratio, comes from each run's ``results.json`` (``runs.csv``).
# Panels (b) training step time, (c) generation latency per example and (d) the memory a training
# step adds come from ``efficiency.json``, written by ``experiments/efficiency.py`` (every
# method rebuilt from its saved adapter and measured in one process, interleaved): bars are
# medians over repetitions, error bars min–max, and each bar carries its ratio to LoRA (Full)
# measured within each repetition. Without that file, (b) and (c) fall back to the sweep jobs'
# own timings (uncontrolled, labelled so); an evaluate-only job then takes its step time from
# the job that trained it (``trained_by``), and a missing value is marked on the plot.

# %%
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis import paper_numbers
from analysis.stats import summarize
from analysis.tables import BENCHMARK_LABELS

DISPLAY = {
    "lora_full": "LoRA (Full)",
    "molora": "MoLoRA",
    "moelora_multi_gate": "MOELoRA(M)",
    "moelora_dense": "MOELoRA (D)",
    "moelora_sparse": "MOELoRA (S)",
    "ptuning": "P-Tuning",
}
STRATEGY_LABELS = {
    "grouped_merged": "merged per task (one-task batches)",
    "grouped_unmerged": "unmerged, one-task batches",
    "mixed": "unmerged, mixed-task batches",
}
REFERENCE = "lora_full"
EFFICIENCY_NAME = "efficiency.json"


def load_efficiency(reports: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(benchmark, variant) → the measured group of ``reports/efficiency.json`` (with the
    measurement's device, threads and settings merged in)."""
    path = Path(reports) / EFFICIENCY_NAME
    if not path.is_file():
        return {}
    out = {}
    for doc in json.loads(path.read_text(encoding="utf-8")):
        meta = {k: v for k, v in doc.items() if k != "groups"}
        for g in doc.get("groups", []):
            out[(str(g["benchmark"]), str(g.get("variant") or ""))] = {**g, "measurement": meta}
    return out


def fig5_runs(runs: pd.DataFrame, lookup: pd.DataFrame | None = None) -> pd.DataFrame:
    """The successful runs Fig. 5 shows. MoLoRA cannot be merged: its ``merged_per_task`` jobs run
    unmerged and would count each seed twice, so only the jobs that asked for unmerged stay.
    A job without a step time of its own (it only evaluated) takes the one of the job that
    trained its weights (``trained_by``, looked up in ``lookup``, default ``runs``)."""
    ok = runs[runs["status"] == "success"].copy()
    lookup = runs if lookup is None else lookup
    if "trained_by" in ok and "path" in ok:
        step_by_dir = {
            str(Path(p).parent): s
            for p, s in zip(lookup["path"], lookup["train_step_seconds"])
            if isinstance(p, str) and s == s
        }
        missing = ok["train_step_seconds"].isna() & ok["trained_by"].notna()
        ok.loc[missing, "train_step_seconds"] = [
            step_by_dir.get(str(t), math.nan) for t in ok.loc[missing, "trained_by"]
        ]
    asked_merged = (
        ok["overrides"].fillna("").str.contains("method.infer=merged_per_task", regex=False)
    )
    return ok[~((ok["method"] == "molora") & (asked_merged | (ok["infer_mode"] != "unmerged")))]


def _methods(names: set[str]) -> list[str]:
    return [m for m in DISPLAY if m in names] + sorted(names - set(DISPLAY))


def _label_bars(ax: plt.Axes, xs: np.ndarray, tops: list[float], texts: list[str]) -> None:
    for x, top, text in zip(xs, tops, texts):
        if text and math.isfinite(top):
            ax.annotate(
                text, (x, top), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=6.5
            )


def _missing(ax: plt.Axes, x: float, text: str) -> None:
    ax.annotate(
        text,
        (x, 0),
        textcoords="offset points",
        xytext=(0, 4),
        ha="center",
        va="bottom",
        fontsize=6,
        rotation=90,
        color="0.35",
    )


def _params_panel(ax: plt.Axes, ok: pd.DataFrame, methods: list[str], xs: np.ndarray) -> None:
    def mean(values: pd.Series) -> float:
        return summarize(values.dropna().tolist()).mean

    here = [mean(100 * ok[ok["method"] == m]["params_ratio"]) for m in methods]
    glm = [mean(100 * ok[ok["method"] == m]["params_chatglm6b_ratio"]) for m in methods]
    ax.bar(xs - 0.2, here, 0.4, label="model in hand")
    ax.bar(xs + 0.2, glm, 0.4, label="ChatGLM-6B shapes")
    exp = [paper_numbers.FIG5_RATIO_PERCENT_CHATGLM6B.get(m, math.nan) for m in methods]
    ax.plot(xs + 0.2, exp, "k_", ms=18, mew=2, ls="none", label="expected on ChatGLM-6B (§8)")
    top = np.nanmax([*here, *glm, *exp, 0.0])
    ax.set_ylim(0, 1.45 * top if top > 0 else 1)
    ax.set_ylabel("trainable parameters / base parameters (%)")
    ax.set_title("(a) trainable-parameter ratio")
    ax.legend(fontsize=7, loc="upper center", ncol=2)


def _measured_bars(
    ax: plt.Axes,
    xs: np.ndarray,
    width: float,
    methods: list[str],
    group: dict[str, Any],
    value: Any,
    ratio_key: str,
    scale: float = 1.0,
    label: str | None = None,
    absent: str = "not measured",
) -> None:
    """Median bars with min–max error bars and ratio labels; absent values are marked."""
    meds, lo, hi, tops, texts = [], [], [], [], []
    for x, m in zip(xs, methods):
        entry = group["methods"].get(m)
        s = value(entry) if entry is not None else None
        if s is None:
            meds.append(math.nan)
            lo.append(0.0)
            hi.append(0.0)
            _missing(ax, x, absent if entry is not None else "not measured")
            tops.append(math.nan)
            texts.append("")
            continue
        meds.append(scale * s["median"])
        lo.append(scale * (s["median"] - s["min"]))
        hi.append(scale * (s["max"] - s["median"]))
        tops.append(scale * s["max"])
        r = group.get("ratios", {}).get(m, {}).get(ratio_key)
        r = r["median"] if isinstance(r, dict) else r
        texts.append(f"{r:.2f}×" if r is not None and math.isfinite(r) else "")
    ax.bar(xs, meds, width, yerr=[lo, hi], capsize=3, label=label)
    _label_bars(ax, xs, tops, texts)


def _measured_panels(
    axes: list[plt.Axes], group: dict[str, Any], methods: list[str], xs: np.ndarray
) -> str:
    """Panels (b)-(d) from the measurement; returns the note describing it."""
    meas = group["measurement"]
    settings = meas.get("settings", {})
    ax = axes[1]
    _measured_bars(
        ax,
        xs,
        0.6,
        methods,
        group,
        lambda e: e["summary"]["train_step_seconds"],
        "train_step_seconds",
        1e3,
    )
    ax.set_ylabel("training step: forward + backward + AdamW (ms)")
    ax.set_title("(b) training step time")
    ax = axes[2]
    strategies = [
        s
        for s in STRATEGY_LABELS
        if any(s in e.get("latency", {}) for e in group["methods"].values())
    ]
    width = 0.8 / max(len(strategies), 1)
    for i, s in enumerate(strategies):
        _measured_bars(
            ax,
            xs + (i - (len(strategies) - 1) / 2) * width,
            width,
            methods,
            group,
            lambda e, s=s: e["summary"].get(f"latency_{s}"),
            f"latency_{s}",
            1e3,
            label=STRATEGY_LABELS[s],
            absent="cannot merge" if s == "grouped_merged" else "n/a",
        )
    ax.set_ylabel("generation latency (ms per test example)")
    ax.set_title("(c) inference latency")
    ax.set_ylim(0, 1.35 * ax.get_ylim()[1])
    ax.legend(fontsize=6.5, loc="upper center", ncol=1)
    ax = axes[3]
    _measured_bars(
        ax,
        xs,
        0.6,
        methods,
        group,
        lambda e: {k: e["train_peak_bytes"] / 2**20 for k in ("median", "min", "max")},
        "train_peak_bytes",
    )
    cuda = str(meas.get("device", "")).startswith("cuda")
    ax.set_ylabel("memory a training step adds (MiB)")
    ax.set_title("(d) training memory")
    first = next(iter(group["methods"].values()))
    merges = ", ".join(
        f"{DISPLAY.get(m, m)} {1e3 * e['summary']['merge_seconds']['median']:.1f} ms"
        for m, e in group["methods"].items()
        if "merge_seconds" in e["summary"]
    )
    seeds = ", ".join(f"{DISPLAY.get(m, m)} seed {e['seed']}" for m, e in group["methods"].items())
    gpu = f" ({meas['gpu']})" if meas.get("gpu") else ""
    memory = (
        "peak allocated during a step minus what was allocated before"
        if cuda
        else "tensors saved for backward + trainable parameters, gradients, AdamW moments"
    )
    return (
        f"Measured by experiments/efficiency.py in one process on {meas.get('device')}{gpu}, "
        f"{meas.get('threads')} thread(s), torch {meas.get('versions', {}).get('torch')}: "
        f"{settings.get('repeats')} repetitions, method order alternated; step time = median "
        f"of {settings.get('steps_per_repeat')} steps per repetition on the run's own "
        f"training batches (batch {first.get('train_batch_size')}); latency = generation "
        f"time / examples on {first.get('test_examples')} test examples "
        f"({settings.get('per_task')} per task), greedy, {settings.get('new_tokens')} new "
        f"tokens each; one-off merge time (all tasks, per pass; not in the latency): "
        f"{merges or 'n/a'}. Memory (d): {memory}. "
        f"Bars: median; error bars: min–max; labels: ratio to LoRA (Full) within each "
        f"repetition (median). Rebuilt runs: {seeds}."
    )


def _sweep_panels(
    axes: list[plt.Axes], ok: pd.DataFrame, methods: list[str], xs: np.ndarray
) -> str:
    """Panels (b) and (c) from the sweep jobs' own timings (no measurement available)."""

    def mean_std(values: pd.Series) -> tuple[float, float]:
        s = summarize(values.dropna().tolist())
        return s.mean, (s.std if math.isfinite(s.std) else 0.0)

    ax = axes[1]
    step = [mean_std(ok[ok["method"] == m]["train_step_seconds"]) for m in methods]
    ax.bar(xs, [1e3 * s[0] for s in step], 0.6, yerr=[1e3 * s[1] for s in step], capsize=4)
    for x, s in zip(xs, step):
        if not math.isfinite(s[0]):
            _missing(ax, x, "no step time recorded")
    ax.set_ylabel("training time per optimiser step (ms)")
    ax.set_title("(b) training step time (sweep jobs)")
    ax = axes[2]
    modes = [m for m in ("merged_per_task", "merged", "unmerged") if m in set(ok["infer_mode"])]
    width = 0.8 / max(len(modes), 1)
    for i, mode in enumerate(modes):
        vals = [
            mean_std(ok[(ok["method"] == m) & (ok["infer_mode"] == mode)]["latency_per_example"])
            for m in methods
        ]
        ax.bar(
            xs + (i - (len(modes) - 1) / 2) * width,
            [1e3 * v[0] for v in vals],
            width,
            yerr=[1e3 * v[1] for v in vals],
            capsize=3,
            label=mode,
        )
    ax.set_ylabel("inference latency (ms per test example)")
    ax.set_title("(c) inference latency (sweep jobs)")
    ax.set_ylim(0, 1.3 * ax.get_ylim()[1])
    ax.legend(fontsize=7, title="inference", title_fontsize=7, loc="upper center", ncol=len(modes))
    axes[3].set_axis_off()
    axes[3].text(
        0.5,
        0.5,
        "(d) training memory:\nnot measured\n(make efficiency)",
        ha="center",
        va="center",
        fontsize=9,
        transform=axes[3].transAxes,
    )
    n = int(ok.groupby(["method", "infer_mode"]).size().max()) if len(ok) else 0
    device = ", ".join(sorted(str(d) for d in ok["device"].dropna().unique())) or "n/a"
    return (
        f"Timings of the sweep jobs themselves (uncontrolled machine load; device {device}; up "
        f"to {n} seeds per bar, error bars ±1 sample std); `make efficiency` measures them "
        f"under control. Evaluate-only jobs use the step time of the job that trained them. "
        f"MoLoRA cannot be merged and is shown unmerged only."
    )


def plot_fig5(
    runs: pd.DataFrame,
    *,
    benchmark: str,
    variant: str,
    efficiency: dict[str, Any] | None = None,
    lookup: pd.DataFrame | None = None,
) -> plt.Figure:
    """Four panels: (a) parameter ratio, (b) step time, (c) latency, (d) training memory.

    Args:
        runs: the Fig. 5 runs of one benchmark and variant (runs.csv rows).
        efficiency: that group of ``efficiency.json`` (None: the sweep jobs' timings).
        lookup: every run (runs.csv), where ``trained_by`` is looked up.
    """
    ok = fig5_runs(runs, lookup)
    names = set(ok["method"]) | (set(efficiency["methods"]) if efficiency else set())
    methods = _methods(names)
    xs = np.arange(len(methods))
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    _params_panel(axes[0], ok, methods, xs)
    note = (
        _measured_panels(list(axes), efficiency, methods, xs)
        if efficiency
        else _sweep_panels(list(axes), ok, methods, xs)
    )
    for ax in axes:
        if ax.axison:
            ax.set_xticks(xs, [DISPLAY.get(m, m) for m in methods], rotation=20, ha="right")
            ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Fig. 5: efficiency of the PEFT methods")
    fig.text(
        0.01,
        -0.02,
        f"Benchmark: {BENCHMARK_LABELS.get(benchmark, benchmark)}. {note}"
        + (f" Overrides: {variant}." if variant else ""),
        ha="left",
        va="top",
        fontsize=8,
        wrap=True,
    )
    fig.tight_layout()
    return fig
