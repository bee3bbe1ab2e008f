# %% [markdown]
# # The paper's claims, tested on the measured runs
# ``python -m analysis.claims --reports reports`` reads ``reports/results.csv`` (from
# ``analysis.collect``) and writes ``claims_<benchmark>[_<variant>].md`` (and ``.csv``), one per
# benchmark × scorer mode × variant (as the tables): for each claim of the paper, the measured
# direction, the effect size, the two-sided p-value over seeds and one verdict. ``REPORT.md``
# includes them (analysis/report.py).
#
# Every claim is about the average test score over tasks (``avg``), one value per seed. The test
# is ``scipy.stats.ttest_ind`` (two-sided, equal variances; analysis.stats.ttest) of the claimed-
# higher side A against the other side B, α = 0.05. The effect is mean(A) − mean(B), with Cohen's
# d (pooled sample std). Verdicts, each one of **holds**, **contradicted**, **inconclusive**:
#
# * fewer than 3 seeds on a side (``MIN_N``): inconclusive (n < 3), whatever p is;
# * "A > B": holds when A is higher and p < α; contradicted when B is higher and p < α; else
#   inconclusive;
# * "A ≥ B" (the paper's own difference is small and unstarred: the dense vs the sparse gate, one
#   gate vs per-layer gates): contradicted when B is higher and p < α; holds when mean(A) ≥
#   mean(B) (marked "direction only" when p ≥ α); else inconclusive;
# * "A ≫ B" (fine-tuning vs in-context learning): as "A > B", and it holds only when mean(A) is
#   also at least twice mean(B) (#13: ICL scores at most half of LoRA (Full)); a significant gain
#   of less than 2× is inconclusive;
# * Fig. 4a "the average peaks at N = 8" (r = 16): holds when N = 8 has the highest mean of all N
#   and is significantly above both neighbours N = 4 and N = 16; contradicted when some N is
#   significantly above N = 8; else inconclusive (also when N = 4, 8 or 16 was not run);
# * Fig. 4b "the average rises with r" (r/N = 2): holds when the means rise at every step of r
#   and the largest r is significantly above the smallest; contradicted when some larger r is
#   significantly below a smaller one; else inconclusive.
#
# Runs with ``trainer=smoke`` are wiring checks: their claims file shows the numbers but no
# verdict. A claim without runs says so ("inconclusive (not measured)").

# %%
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import paper_numbers
from analysis.stats import ALPHA, MIN_N, summarize, ttest
from analysis.tables import (
    BENCHMARK_LABELS,
    PLAIN_EXPERIMENT,
    SHORT_LABELS,
    _slug,
    is_smoke,
    load_tidy,
    variant_slug,
)

DISPLAY = {
    "icl": "ICL",
    "lora_full": "LoRA (Full)",
    "molora": "MoLoRA",
    "moelora_dense": "MOELoRA (D)",
    "moelora_sparse": "MOELoRA (S)",
    "moelora_no_gate": "w/o gate",
    "moelora_multi_gate": "MOELoRA (M) (per-layer gates)",
    "moelora_bt": "w BT",
    "moelora_rbt": "w RBT",
    "lora_full_qkv": "LoRA (Full)-QKV",
    "moelora_dense_qkv": "MOELoRA (D)-QKV",
    "task_arithmetic": "Task-Arithmetic",
    "chatgpt": "ChatGPT",
}
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"
CLAIM_EXPERIMENTS = ("table2", "table3", "fig4_experts", "fig4_rank", PLAIN_EXPERIMENT)


@dataclass(frozen=True)
class Pairwise:
    """A claim "a <relation> b" on the average test score of two methods.

    ``paper_b`` names the paper's row for side b when it differs from ``b`` (the paper's
    in-context row is ChatGPT; ours is a local model)."""

    claim: str
    a: str
    b: str
    relation: str  # ">" | ">=" | ">>"
    sources: tuple[str, ...]  # experiments to read, in order (then plain runs)
    paper_b: str | None = None


PAIRWISE: tuple[Pairwise, ...] = (
    Pairwise("MOELoRA (D) > LoRA (Full) (Table 2)", "moelora_dense", "lora_full", ">", ("table2",)),
    Pairwise("MOELoRA (D) > MoLoRA (Table 2)", "moelora_dense", "molora", ">", ("table2",)),
    Pairwise("dense ≥ sparse gate (Table 2)", "moelora_dense", "moelora_sparse", ">=", ("table2",)),
    Pairwise(
        "w/o gate < MOELoRA (D) (Table 3)",
        "moelora_dense",
        "moelora_no_gate",
        ">",
        ("table3", "table2"),
    ),
    Pairwise(
        "one shared gate ≥ per-layer gates (Table 3)",
        "moelora_dense",
        "moelora_multi_gate",
        ">=",
        ("table3", "table2"),
    ),
    Pairwise(
        "w BT < random mixing (Table 3)", "moelora_dense", "moelora_bt", ">", ("table3", "table2")
    ),
    Pairwise(
        "w RBT < random mixing (Table 3)", "moelora_dense", "moelora_rbt", ">", ("table3", "table2")
    ),
    Pairwise(
        "LoRA (Full): QKV-only < all layers (Table 3)",
        "lora_full",
        "lora_full_qkv",
        ">",
        ("table3", "table2"),
    ),
    Pairwise(
        "MOELoRA (D): QKV-only < all layers (Table 3)",
        "moelora_dense",
        "moelora_dense_qkv",
        ">",
        ("table3", "table2"),
    ),
    Pairwise(
        "fine-tuning ≫ in-context learning (LoRA (Full) vs ICL, Table 2)",
        "lora_full",
        "icl",
        ">>",
        ("table2",),
        paper_b="chatgpt",
    ),
    Pairwise(
        "Task-Arithmetic < LoRA (Full) (Table 2)", "lora_full", "task_arithmetic", ">", ("table2",)
    ),
)


@dataclass
class Verdict:
    """One claim's line: what was measured, how large and how certain, and the verdict."""

    claim: str
    measured: str
    effect: float  # mean difference, the claimed-higher side minus the other
    cohen_d: float
    p_value: float
    n: str  # seeds per group, "n_a/n_b" (Fig. 4: per grid point)
    verdict: str
    paper: str = ""  # what the paper reports for it (PromptCBLUE)


# %% [markdown]
# ## Reading the per-seed averages


# %%
def avg_by_seed(tidy: pd.DataFrame, method: str, sources: tuple[str, ...]) -> dict[int, float]:
    """seed → average test score of ``method``, from the first of ``sources`` (then plain runs)
    that has successful runs of it."""
    for source in (*sources, PLAIN_EXPERIMENT):
        sel = tidy[
            (tidy["experiment"] == source)
            & (tidy["method"] == method)
            & (tidy["task"] == "avg")
            & (tidy["status"] == "success")
        ].dropna(subset=["score"])
        if not sel.empty:
            return {int(s): float(v) for s, v in zip(sel["seed"], sel["score"])}
    return {}


def by_value(tidy: pd.DataFrame, experiment: str, column: str) -> dict[float, dict[int, float]]:
    """Grid point (``num_experts`` or ``rank``) → seed → average test score."""
    ok = tidy[
        (tidy["experiment"] == experiment) & (tidy["task"] == "avg") & (tidy["status"] == "success")
    ].dropna(subset=["score", column])
    return {
        float(v): {int(s): float(x) for s, x in zip(g["seed"], g["score"])}
        for v, g in ok.groupby(column)
    }


# %% [markdown]
# ## Effect, test and verdict


# %%
def cohen_d(a: list[float], b: list[float]) -> float:
    """(mean a − mean b) / pooled sample std; NaN with fewer than 2 values a side or no spread."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(
        ((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1))
        / (len(a) + len(b) - 2)
    )
    return (float(np.mean(a)) - float(np.mean(b))) / pooled if pooled > 0 else math.nan


@dataclass(frozen=True)
class Comparison:
    effect: float  # mean a − mean b
    d: float
    p: float  # two-sided
    n_a: int
    n_b: int

    @property
    def enough(self) -> bool:
        return min(self.n_a, self.n_b) >= MIN_N

    @property
    def a_higher(self) -> bool:
        """a is significantly higher (p < α) with enough seeds."""
        return self.enough and math.isfinite(self.p) and self.p < ALPHA and self.effect > 0

    @property
    def b_higher(self) -> bool:
        return self.enough and math.isfinite(self.p) and self.p < ALPHA and self.effect < 0


def compare(a: dict[int, float], b: dict[int, float]) -> Comparison:
    """The effect of ``a`` over ``b`` and the two-sided ``ttest_ind`` p-value."""
    sa, sb = summarize(list(a.values())), summarize(list(b.values()))
    return Comparison(
        sa.mean - sb.mean,
        cohen_d(list(a.values()), list(b.values())),
        ttest(a, b).p_value,
        sa.n,
        sb.n,
    )


def _few(n: int) -> str:
    return f"{INCONCLUSIVE} (n < {MIN_N})"


def judge_pairwise(claim: Pairwise, a: dict[int, float], b: dict[int, float]) -> Verdict:
    """The verdict of one pairwise claim (rules in the module header)."""
    paper = _paper_pair(claim)
    if not a or not b:
        missing = " and ".join(DISPLAY.get(m, m) for m, s in ((claim.a, a), (claim.b, b)) if not s)
        return Verdict(
            claim.claim,
            f"no runs of {missing}",
            math.nan,
            math.nan,
            math.nan,
            f"{len(a)}/{len(b)}",
            f"{INCONCLUSIVE} (not measured)",
            paper,
        )
    c = compare(a, b)
    name_a, name_b = DISPLAY.get(claim.a, claim.a), DISPLAY.get(claim.b, claim.b)
    mean_a, mean_b = summarize(list(a.values())).mean, summarize(list(b.values())).mean
    sign = ">" if c.effect > 0 else "<" if c.effect < 0 else "="
    measured = f"{name_a} {mean_a:.4f} {sign} {name_b} {mean_b:.4f}"
    if claim.relation == ">>" and mean_b > 0:
        measured += f" ({mean_a / mean_b:.2f}×)"
    return Verdict(
        claim.claim,
        measured,
        c.effect,
        c.d,
        c.p,
        f"{c.n_a}/{c.n_b}",
        _pairwise_verdict(claim.relation, c, mean_a, mean_b),
        paper,
    )


def _pairwise_verdict(relation: str, c: Comparison, mean_a: float, mean_b: float) -> str:
    if not c.enough:
        return _few(min(c.n_a, c.n_b))
    if c.b_higher:
        return CONTRADICTED
    if relation == ">=":
        if c.effect < 0:
            return INCONCLUSIVE
        return HOLDS if c.a_higher else f"{HOLDS} (direction only, p ≥ {ALPHA})"
    if not c.a_higher:
        return INCONCLUSIVE
    if relation == ">>" and mean_a < 2 * mean_b:
        return f"{INCONCLUSIVE} (higher, but less than 2×)"
    return HOLDS


def _paper_pair(claim: Pairwise) -> str:
    for table in (paper_numbers.TABLE2, paper_numbers.TABLE3):
        b = claim.paper_b or claim.b
        if claim.a in table and b in table:
            return (
                f"{DISPLAY.get(claim.a, claim.a)} {table[claim.a]['avg']:.4f} vs "
                f"{DISPLAY.get(b, b)} {table[b]['avg']:.4f}"
            )
    return ""


def _points_n(points: dict[float, dict[int, float]]) -> str:
    return "/".join(str(len(points[k])) for k in sorted(points))


def _means(points: dict[float, dict[int, float]]) -> dict[float, float]:
    return {k: summarize(list(v.values())).mean for k, v in points.items()}


def judge_fig4a(points: dict[float, dict[int, float]]) -> Verdict:
    """'The average improves with N up to 8 and declines slightly at N = 16' (Fig. 4a)."""
    claim = "Fig. 4a: the average peaks at N = 8 (r = 16)"
    paper = (
        f"N = 8: {paper_numbers.FIG4[(16, 8)]:.4f}, N = 4: ≈ {paper_numbers.FIG4[(16, 4)]:.3f} "
        "(read off the plot); declines slightly at N = 16"
    )
    needed = (4.0, 8.0, 16.0)
    if not all(k in points for k in needed):
        missing = ", ".join(f"N = {int(k)}" for k in needed if k not in points)
        return Verdict(
            claim,
            f"no runs of {missing}",
            math.nan,
            math.nan,
            math.nan,
            _points_n(points),
            f"{INCONCLUSIVE} (not measured)",
            paper,
        )
    means = _means(points)
    peak = max(means, key=means.get)
    neighbours = {k: compare(points[8.0], points[k]) for k in (4.0, 16.0)}
    measured = f"peak at N = {int(peak)}; " + ", ".join(
        f"N={int(k)}: {means[k]:.4f}" for k in sorted(means)
    )
    closest = min(neighbours.values(), key=lambda c: c.effect)
    fewest = min(len(v) for v in points.values())
    if fewest < MIN_N:
        verdict = _few(fewest)
    elif any(compare(points[k], points[8.0]).a_higher for k in points if k != 8.0):
        verdict = CONTRADICTED
    elif peak == 8.0 and all(c.a_higher for c in neighbours.values()):
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    return Verdict(
        claim, measured, closest.effect, closest.d, closest.p, _points_n(points), verdict, paper
    )


def judge_fig4b(points: dict[float, dict[int, float]]) -> Verdict:
    """'The average rises with r' at r/N = 2 (Fig. 4b)."""
    claim = "Fig. 4b: the average rises with r (r/N = 2)"
    paper = "rises with r; r = 16 is the practical choice (no values printed)"
    if len(points) < 2:
        return Verdict(
            claim,
            "fewer than 2 values of r run",
            math.nan,
            math.nan,
            math.nan,
            _points_n(points),
            f"{INCONCLUSIVE} (not measured)",
            paper,
        )
    ranks = sorted(points)
    means = [summarize(list(points[r].values())).mean for r in ranks]
    monotone = all(b > a for a, b in zip(means, means[1:]))
    span = compare(points[ranks[-1]], points[ranks[0]])
    measured = (
        ("rises at every step" if monotone else "not monotone")
        + "; "
        + ", ".join(f"r={int(r)}: {m:.4f}" for r, m in zip(ranks, means))
    )
    fewest = min(len(v) for v in points.values())
    if fewest < MIN_N:
        verdict = _few(fewest)
    elif any(
        compare(points[hi], points[lo]).b_higher
        for i, lo in enumerate(ranks)
        for hi in ranks[i + 1 :]
    ):
        verdict = CONTRADICTED
    elif monotone and span.a_higher:
        verdict = HOLDS
    else:
        verdict = INCONCLUSIVE
    return Verdict(claim, measured, span.effect, span.d, span.p, _points_n(points), verdict, paper)


def judge_all(tidy: pd.DataFrame) -> list[Verdict]:
    """Every claim on the successful runs of one benchmark × scorer mode × variant group."""
    ok = tidy[tidy["status"] == "success"]
    out = [
        judge_pairwise(c, avg_by_seed(ok, c.a, c.sources), avg_by_seed(ok, c.b, c.sources))
        for c in PAIRWISE
    ]
    out.append(judge_fig4a(by_value(ok, "fig4_experts", "num_experts")))
    out.append(judge_fig4b(by_value(ok, "fig4_rank", "rank")))
    return out


# %% [markdown]
# ## Writing the claims files


# %%
def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def to_markdown(
    verdicts: list[Verdict], benchmark: str, scorer_mode: str, variant: str, smoke: bool = False
) -> str:
    """The claims file: what was tested how, then one line per claim."""
    title = f"# Claims of the paper, tested on {BENCHMARK_LABELS.get(benchmark, benchmark)}"
    lines = [
        title + (f" (overrides: {variant})" if variant else ""),
        "",
        f"Average test score over tasks ({scorer_mode} scorer), one value per seed. Effect: "
        f"mean difference, the claimed-higher side minus the other, and Cohen's d (pooled "
        f"sample std). p: two-sided independent two-sample t-test (scipy.stats.ttest_ind, "
        f"equal variances) over seeds; n: seeds per group (Fig. 4: per grid point). α = "
        f"{ALPHA}; a verdict needs n ≥ {MIN_N} per group. Verdict rules: analysis/claims.py. "
        f"The paper column is the paper's own numbers ({SHORT_LABELS[paper_numbers.BENCHMARK]}, "
        f"not measured here).",
        "",
    ]
    if smoke:
        lines += ["No verdicts: these are trainer=smoke runs (wiring checks, not results).", ""]
    lines += [
        "| claim | measured | effect | Cohen's d | p | n | verdict | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        lines.append(
            f"| {v.claim} | {v.measured} | {_fmt(v.effect, 4)} | {_fmt(v.cohen_d, 2)} | "
            f"{_fmt(v.p_value, 4)} | {v.n} | **{v.verdict}** | {v.paper} |"
        )
    return "\n".join(lines) + "\n"


def file_stem(benchmark: str, scorer_mode: str, variant: str) -> str:
    """``claims_medsynth``, plus the scorer mode when not official and the variant if any."""
    parts = ["claims", benchmark or "unknown"]
    if scorer_mode and scorer_mode != "official":
        parts.append(scorer_mode)
    if variant:
        parts.append(variant_slug(variant))
    return _slug("_".join(parts))


def claims_documents(tidy: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """One claims document per (benchmark, scorer mode, variant) with runs of a claim's
    experiment (a Table 2/3 or Fig. 4 grid, or plain runs): ``(file stem, Markdown, verdicts)``."""
    docs = []
    ok = tidy[(tidy["status"] == "success") & tidy["experiment"].isin(CLAIM_EXPERIMENTS)]
    keys = ok[["benchmark", "scorer_mode", "variant"]].fillna("").astype(str)
    for (benchmark, scorer_mode, variant), group in ok.groupby(
        [keys["benchmark"], keys["scorer_mode"], keys["variant"]]
    ):
        verdicts = judge_all(group)
        smoke = is_smoke(group, variant)
        if smoke:  # a wiring check, not a measurement
            verdicts = [
                Verdict(**{**asdict(v), "verdict": "no verdict (trainer=smoke)"}) for v in verdicts
            ]
        docs.append(
            (
                file_stem(benchmark, scorer_mode, variant),
                to_markdown(verdicts, benchmark, scorer_mode, variant, smoke),
                pd.DataFrame([asdict(v) for v in verdicts]),
            )
        )
    return docs


def write_claims(tidy: pd.DataFrame, reports: Path) -> list[Path]:
    """Write :func:`claims_documents` as ``<stem>.md`` and ``<stem>.csv`` under ``reports``.
    Returns the Markdown paths written."""
    written = []
    for stem, markdown, frame in claims_documents(tidy):
        path = reports / f"{stem}.md"
        path.write_text(markdown, encoding="utf-8")
        frame.to_csv(path.with_suffix(".csv"), index=False)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test the paper's claims on the measured runs.")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    tidy = load_tidy(args.reports)
    if tidy is None:
        print(
            f"[claims] no {args.reports / 'results.csv'}; run python -m analysis.collect first",
            file=sys.stderr,
        )
        return 1
    written = write_claims(tidy, args.reports)
    if not written:
        print(
            "[claims] no successful Table 2/3, Fig. 4 or plain runs in results.csv; no claim "
            "to test",
            file=sys.stderr,
        )
    for path in written:
        print(f"[claims] {path} (+ .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
