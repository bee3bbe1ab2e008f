"""Statistics over seeds: mean ± std (n), best / second best, and the significance test.

The paper (Sec. 4.1, methods.md §1.6) runs every method with seeds 42, 43, 44 and marks
MOELoRA's improvement over the best baseline when a two-sided t-test gives p < 0.05; here only
with n ≥ 3 scores per group (``MIN_N``), and the tables never mark smoke runs. The
test is ``scipy.stats.ttest_ind`` over the per-seed scores (Student's, equal variances) by
default, or ``scipy.stats.ttest_rel`` paired by seed (``paired=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
DECIMALS = 4
MIN_N = 3  # significance is marked only with at least 3 scores per group (#12)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof=1; NaN for n < 2) and count of per-seed scores."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± sample std (ddof=1) over the finite values; NaN mean when there are none."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return Summary(math.nan, math.nan, 0)
    std = float(arr.std(ddof=1)) if arr.size >= 2 else math.nan
    return Summary(float(arr.mean()), std, int(arr.size))


@dataclass(frozen=True)
class TestResult:
    """A two-sided t-test of ``a`` vs ``b``; ``statistic > 0`` means ``a`` is higher."""

    statistic: float
    p_value: float
    test: str
    n_a: int
    n_b: int


def ttest(a: Mapping[int, float], b: Mapping[int, float], *, paired: bool = False) -> TestResult:
    """Two-sided t-test of per-seed scores ``a`` vs ``b`` (dicts seed → score).

    Args:
        a: per-seed scores of the proposed method.
        b: per-seed scores of the baseline.
        paired: False → ``ttest_ind`` (independent samples, equal variances);
            True → ``ttest_rel`` over the seeds present in both.

    Returns:
        The statistic and p-value; NaN when a side has fewer than 2 scores (or 2 shared seeds
        when paired), or when both sides have zero variance.
    """
    name = (
        "paired t-test (scipy.stats.ttest_rel, by seed)"
        if paired
        else "independent two-sample t-test (scipy.stats.ttest_ind, equal variances)"
    )
    if paired:
        seeds = sorted(set(a) & set(b))
        xa = np.asarray([a[s] for s in seeds], dtype=float)
        xb = np.asarray([b[s] for s in seeds], dtype=float)
        if len(seeds) < 2 or np.allclose(xa - xb, (xa - xb)[0]):
            return TestResult(math.nan, math.nan, name, len(seeds), len(seeds))
        res = sps.ttest_rel(xa, xb)
        return TestResult(float(res.statistic), float(res.pvalue), name, len(seeds), len(seeds))
    xa = np.asarray(list(a.values()), dtype=float)
    xb = np.asarray(list(b.values()), dtype=float)
    if xa.size < 2 or xb.size < 2 or (np.ptp(xa) == 0 and np.ptp(xb) == 0):
        return TestResult(math.nan, math.nan, name, int(xa.size), int(xb.size))
    res = sps.ttest_ind(xa, xb)
    return TestResult(float(res.statistic), float(res.pvalue), name, int(xa.size), int(xb.size))


def is_significant_improvement(
    result: TestResult, alpha: float = ALPHA, min_n: int = MIN_N
) -> bool:
    """True when both groups have at least ``min_n`` scores, the proposed side is higher and
    the two-sided p-value is below ``alpha``. Two seeds with a tiny spread give a small p
    that means nothing, so n < 3 is never significant."""
    return (
        min(result.n_a, result.n_b) >= min_n
        and math.isfinite(result.p_value)
        and result.statistic > 0
        and result.p_value < alpha
    )


def rank_marks(means: Mapping[str, float], decimals: int = DECIMALS) -> dict[str, str]:
    """``"best"`` / ``"second"`` / ``""`` for each row, by the mean as printed.

    Means are compared after rounding to ``decimals`` places, so rows that print the same value
    get the same mark (ties share the best; the second best is the next distinct value). A
    column where every row prints the same value has no best: nothing is marked.
    """
    rounded = {
        k: round(v, decimals) for k, v in means.items() if v is not None and math.isfinite(v)
    }
    distinct = sorted(set(rounded.values()), reverse=True)
    marks = {k: "" for k in means}
    if len(distinct) == 1 and len(rounded) > 1:
        return marks
    for k, v in rounded.items():
        if v == distinct[0]:
            marks[k] = "best"
        elif len(distinct) > 1 and v == distinct[1]:
            marks[k] = "second"
    return marks


def best_baseline(means: Mapping[str, float], baselines: Sequence[str]) -> str | None:
    """The baseline row with the highest mean (ties: the first in ``baselines`` order)."""
    best, best_value = None, -math.inf
    for key in baselines:
        value = means.get(key)
        if value is not None and math.isfinite(value) and value > best_value:
            best, best_value = key, value
    return best


def format_mean_std(s: Summary, decimals: int = DECIMALS) -> str:
    """``0.6236 ± 0.0012``; ``0.6236`` alone when n = 1; ``–`` when there is no value."""
    if s.n == 0:
        return "–"
    if s.n < 2 or not math.isfinite(s.std):
        return f"{s.mean:.{decimals}f}"
    return f"{s.mean:.{decimals}f} ± {s.std:.{decimals}f}"


def cosine_matrix(weights: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity between the rows (tasks) of a (T, N) weight matrix."""
    w = np.asarray(weights, dtype=float)
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    return unit @ unit.T


def js_distance_matrix(weights: np.ndarray) -> np.ndarray:
    """Pairwise Jensen–Shannon distance (base 2, in [0, 1]) between rows of a (T, N) matrix.

    ``scipy.spatial.distance.jensenshannon``: the square root of the JS divergence.
    """
    from scipy.spatial.distance import jensenshannon

    w = np.asarray(weights, dtype=float)
    t = w.shape[0]
    out = np.zeros((t, t))
    for i in range(t):
        for j in range(i + 1, t):
            out[i, j] = out[j, i] = jensenshannon(w[i], w[j], base=2)
    return out
