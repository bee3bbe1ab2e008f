# %% [markdown]
# # The paper's claims, tested on the measured runs
# ``python -m analysis.claims --reports reports`` reads ``reports/results.csv`` and writes
# ``reports/claims_<benchmark>.md`` (and ``.csv``): for each claim of the paper, the measured
# direction, the effect size, the two-sided p-value over seeds and one verdict.
#
# Verdicts (α = 0.05, two-sided ``scipy.stats.ttest_ind`` over per-seed averages, n per side
# as shown; a verdict needs n ≥ 3 on both sides, else it is "inconclusive (n < 3)"):
# * "A > B": **holds** when A is higher and p < α; **contradicted** when B is higher and
#   p < α; else **inconclusive**.
# * "A ≥ B" (the paper reports A slightly above B): **contradicted** when B is higher and
#   p < α; **holds** when A's mean is at least B's; else **inconclusive**.
# * "A ≫ B": as "A > B", and holds only when A's mean is also at least twice B's.
# * Fig. 4a "peaks at N = 8": holds when N = 8 has the highest mean and is significantly
#   above both neighbours (N = 4 and N = 16); contradicted when some N is significantly
#   above N = 8; else inconclusive.
# * Runs with ``trainer=smoke`` are wiring checks: they get no verdict.
# * Fig. 4b "rises with r": holds when the means rise at every step of r and the largest r
#   is significantly above the smallest; contradicted when the smallest is significantly
#   above the largest; else inconclusive.

# %%
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import ALPHA, summarize, ttest
from analysis.tables import BENCHMARK_LABELS, PLAIN_EXPERIMENT, load_tidy

MIN_SEEDS = 3
DISPLAY = {
    "icl": "ICL", "lora_full": "LoRA (Full)", "molora": "MoLoRA", "moelora_dense": "MOELoRA (D)",
    "moelora_sparse": "MOELoRA (S)", "moelora_no_gate": "w/o gate",
    "moelora_multi_gate": "MOELoRA (M) (per-layer gates)", "moelora_bt": "w BT",
    "moelora_rbt": "w RBT", "lora_full_qkv": "LoRA (Full)-QKV",
    "moelora_dense_qkv": "MOELoRA (D)-QKV", "task_arithmetic": "Task-Arithmetic",
}


@dataclass(frozen=True)
class Pairwise:
    """A claim "a <relation> b" on the average test score of two methods."""

    claim: str
    a: str
    b: str
    relation: str          # ">" | ">=" | ">>"
    sources: tuple[str, ...]   # experiments to read, in order (then plain runs)


PAIRWISE: tuple[Pairwise, ...] = (
    Pairwise("MOELoRA (D) > LoRA (Full) (Table 2)", "moelora_dense", "lora_full", ">", ("table2",)),
    Pairwise("MOELoRA (D) > MoLoRA (Table 2)", "moelora_dense", "molora", ">", ("table2",)),
    Pairwise("dense ≥ sparse gate (Table 2)", "moelora_dense", "moelora_sparse", ">=", ("table2",)),
    Pairwise("w/o gate < MOELoRA (D) (Table 3)", "moelora_dense", "moelora_no_gate", ">",
             ("table3", "table2")),
    Pairwise("one shared gate ≥ per-layer gates (Table 3)", "moelora_dense", "moelora_multi_gate",
             ">=", ("table3", "table2")),
    Pairwise("w BT < random mixing (Table 3)", "moelora_dense", "moelora_bt", ">",
             ("table3", "table2")),
    Pairwise("w RBT < random mixing (Table 3)", "moelora_dense", "moelora_rbt", ">",
             ("table3", "table2")),
    Pairwise("LoRA (Full): QKV-only < all layers (Table 3)", "lora_full", "lora_full_qkv", ">",
             ("table3", "table2")),
    Pairwise("MOELoRA (D): QKV-only < all layers (Table 3)", "moelora_dense", "moelora_dense_qkv",
             ">", ("table3", "table2")),
    Pairwise("fine-tuning ≫ in-context learning (LoRA (Full) vs ICL, Table 2)", "lora_full", "icl",
             ">>", ("table2",)),
    Pairwise("Task-Arithmetic < LoRA (Full) (Table 2)", "lora_full", "task_arithmetic", ">",
             ("table2",)),
)


@dataclass
class Verdict:
    claim: str
    measured: str
    effect: float          # mean difference, the claimed-higher side minus the other
    cohen_d: float
    p_value: float
    n: str
    verdict: str


def _avg_by_seed(tidy: pd.DataFrame, method: str, sources: tuple[str, ...],
                 extra: Callable[[pd.DataFrame], pd.Series] | None = None) -> dict[int, float]:
    """seed → average test score of ``method``, from the first source experiment that has it."""
    for source in (*sources, PLAIN_EXPERIMENT):
        sel = tidy[(tidy["experiment"] == source) & (tidy["method"] == method)
                   & (tidy["task"] == "avg")].dropna(subset=["score"])
        if extra is not None and not sel.empty:
            sel = sel[extra(sel)]
        if not sel.empty:
            return {int(s): float(v) for s, v in zip(sel["seed"], sel["score"])}
    return {}


def _cohen_d(a: list[float], b: list[float]) -> float:
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + (len(b) - 1) * np.var(b, ddof=1))
                       / (len(a) + len(b) - 2))
    return (float(np.mean(a)) - float(np.mean(b))) / pooled if pooled > 0 else math.nan


def _compare(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, float, str]:
    """(mean difference a − b, Cohen's d, two-sided p, "n_a/n_b")."""
    sa, sb = summarize(list(a.values())), summarize(list(b.values()))
    res = ttest(a, b)
    return sa.mean - sb.mean, _cohen_d(list(a.values()), list(b.values())), res.p_value, \
        f"{sa.n}/{sb.n}"


def judge_pairwise(claim: Pairwise, a: dict[int, float], b: dict[int, float]) -> Verdict:
    """The verdict of one pairwise claim (rules in the module header)."""
    effect, d, p, n = _compare(a, b)
    name_a, name_b = DISPLAY.get(claim.a, claim.a), DISPLAY.get(claim.b, claim.b)
    if not a or not b:
        return Verdict(claim.claim, "no runs", math.nan, math.nan, math.nan, n, "not measured")
    measured = f"{name_a} {'>' if effect > 0 else '<' if effect < 0 else '='} {name_b}"
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return Verdict(claim.claim, measured, effect, d, p, n, f"inconclusive (n < {MIN_SEEDS})")
    significant = math.isfinite(p) and p < ALPHA
    mean_a, mean_b = summarize(list(a.values())).mean, summarize(list(b.values())).mean
    if significant and effect < 0:
        verdict = "contradicted"
    elif claim.relation == ">=":
        verdict = "holds" if effect >= 0 else "inconclusive"
    elif significant and effect > 0:
        verdict = "holds" if claim.relation == ">" or mean_a >= 2 * mean_b else "inconclusive"
    else:
        verdict = "inconclusive"
    return Verdict(claim.claim, measured, effect, d, p, n, verdict)


def _by_value(tidy: pd.DataFrame, experiment: str, column: str) -> dict[float, dict[int, float]]:
    ok = tidy[(tidy["experiment"] == experiment) & (tidy["task"] == "avg")
              & (tidy["status"] == "success")].dropna(subset=["score", column])
    return {float(v): {int(s): float(x) for s, x in zip(g["seed"], g["score"])}
            for v, g in ok.groupby(column)}


def judge_fig4a(points: dict[float, dict[int, float]]) -> Verdict:
    """'The average improves with N up to 8 and declines at N = 16' (Fig. 4a)."""
    claim = "Fig. 4a: the average peaks at N = 8 (r = 16)"
    if 8.0 not in points or len(points) < 3:
        return Verdict(claim, "no runs", math.nan, math.nan, math.nan, "–", "not measured")
    means = {k: summarize(list(v.values())).mean for k, v in points.items()}
    peak = max(means, key=means.get)
    ns = "/".join(str(len(points[k])) for k in sorted(points))
    neighbours = [k for k in (4.0, 16.0) if k in points]
    tests = {k: _compare(points[8.0], points[k]) for k in neighbours}
    measured = f"peak at N = {int(peak)}; " + ", ".join(
        f"N={int(k)}: {means[k]:.4f}" for k in sorted(means))
    if min(len(v) for v in points.values()) < MIN_SEEDS:
        verdict = f"inconclusive (n < {MIN_SEEDS})"
    elif any(ttest(points[k], points[8.0]).statistic > 0 and ttest(points[k], points[8.0]).p_value < ALPHA
             for k in points if k != 8.0):
        verdict = "contradicted"
    elif peak == 8.0 and tests and all(t[0] > 0 and t[2] < ALPHA for t in tests.values()):
        verdict = "holds"
    else:
        verdict = "inconclusive"
    effect, d, p, _ = min(tests.values(), key=lambda t: t[0]) if tests else (math.nan,) * 3 + ("",)
    return Verdict(claim, measured, effect, d, p, ns, verdict)


def judge_fig4b(points: dict[float, dict[int, float]]) -> Verdict:
    """'The average rises with r' at r/N = 2 (Fig. 4b)."""
    claim = "Fig. 4b: the average rises with r (r/N = 2)"
    if len(points) < 2:
        return Verdict(claim, "no runs", math.nan, math.nan, math.nan, "–", "not measured")
    ranks = sorted(points)
    means = [summarize(list(points[r].values())).mean for r in ranks]
    monotone = all(b > a for a, b in zip(means, means[1:]))
    effect, d, p, _ = _compare(points[ranks[-1]], points[ranks[0]])
    ns = "/".join(str(len(points[r])) for r in ranks)
    measured = ("rises at every step" if monotone else "not monotone") + "; " + ", ".join(
        f"r={int(r)}: {m:.4f}" for r, m in zip(ranks, means))
    if min(len(v) for v in points.values()) < MIN_SEEDS:
        verdict = f"inconclusive (n < {MIN_SEEDS})"
    elif effect < 0 and p < ALPHA:
        verdict = "contradicted"
    elif monotone and effect > 0 and p < ALPHA:
        verdict = "holds"
    else:
        verdict = "inconclusive"
    return Verdict(claim, measured, effect, d, p, ns, verdict)


def judge_all(tidy: pd.DataFrame) -> list[Verdict]:
    """Every claim on one benchmark's successful runs (a frame of one benchmark and variant)."""
    ok = tidy[tidy["status"] == "success"]
    out = [judge_pairwise(c, _avg_by_seed(ok, c.a, c.sources), _avg_by_seed(ok, c.b, c.sources))
           for c in PAIRWISE]
    out.append(judge_fig4a(_by_value(ok, "fig4_experts", "num_experts")))
    out.append(judge_fig4b(_by_value(ok, "fig4_rank", "rank")))
    return out


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"


def to_markdown(verdicts: list[Verdict], benchmark: str, variant: str) -> str:
    lines = [f"# Claims of the paper, tested on {BENCHMARK_LABELS.get(benchmark, benchmark)}"
             + (f" (overrides: {variant})" if variant else ""), "",
             f"Average test score over tasks per seed; effect = mean difference (claimed-higher "
             f"side minus the other) and Cohen's d; p: two-sided independent two-sample t-test "
             f"(scipy.stats.ttest_ind) over seeds, n per side shown; α = {ALPHA}. A verdict needs "
             f"n ≥ {MIN_SEEDS} per group. Rules: analysis/claims.py.", "",
             "| claim | measured | effect | Cohen's d | p | n | verdict |",
             "|---|---|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v.claim} | {v.measured} | {_fmt(v.effect, 4)} | {_fmt(v.cohen_d, 2)} | "
                     f"{_fmt(v.p_value, 4)} | {v.n} | **{v.verdict}** |")
    return "\n".join(lines) + "\n"


def write_claims(tidy: pd.DataFrame, reports: Path) -> list[Path]:
    """One claims file per (benchmark, variant) with runs of a Table 2 grid or plain runs."""
    written = []
    ok = tidy[(tidy["status"] == "success") & (tidy["scorer_mode"].fillna("") == "official")]
    for (benchmark, variant), group in ok.groupby([ok["benchmark"].fillna(""),
                                                    ok["variant"].fillna("")]):
        if not group["experiment"].isin(["table2", PLAIN_EXPERIMENT]).any():
            continue
        verdicts = judge_all(group)
        if "trainer=smoke" in variant:   # a wiring check, not a measurement
            verdicts = [Verdict(**{**v.__dict__, "verdict": "not judged (trainer=smoke)"})
                        for v in verdicts]
        stem = "claims_" + "_".join(p for p in (benchmark or "unknown", variant) if p)
        stem = "".join(c if c.isalnum() or c in "._=-" else "_" for c in stem)
        path = reports / f"{stem}.md"
        path.write_text(to_markdown(verdicts, benchmark, variant), encoding="utf-8")
        pd.DataFrame([v.__dict__ for v in verdicts]).to_csv(path.with_suffix(".csv"), index=False)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test the paper's claims on the measured runs.")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    tidy = load_tidy(args.reports)
    if tidy is None:
        print(f"[claims] no {args.reports / 'results.csv'}; run python -m analysis.collect first",
              file=sys.stderr)
        return 1
    for path in write_claims(tidy, args.reports):
        print(f"[claims] {path} (+ .csv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
