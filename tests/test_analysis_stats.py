"""analysis.stats: mean ± std over seeds, the t-tests, marks, similarity of gate weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats


def t_cdf_df4(t: float) -> float:
    """CDF of Student's t with 4 degrees of freedom in closed form (independent of scipy):
    F(t) = 1/2 + x (3 - x²) / 4 with x = t / sqrt(4 + t²)."""
    x = t / math.sqrt(4.0 + t * t)
    return 0.5 + x * (3.0 - x * x) / 4.0


def test_t_cdf_df4_reference_is_right():
    """The closed form itself, at points known from tables: F(2.776) ≈ 0.975, F(0) = 0.5."""
    assert t_cdf_df4(0.0) == 0.5
    assert t_cdf_df4(2.7764) == pytest.approx(0.975, abs=1e-4)
    assert t_cdf_df4(4.6041) == pytest.approx(0.995, abs=1e-4)


def test_summarize_mean_and_sample_std():
    s = stats.summarize([0.5, 0.6, 0.7])
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    one = stats.summarize([0.4, float("nan")])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std)
    assert stats.summarize([]).n == 0
    assert stats.format_mean_std(s) == "0.6000 ± 0.1000"
    assert stats.format_mean_std(one) == "0.4000"
    assert stats.format_mean_std(stats.summarize([])) == "–"


def test_ttest_ind_matches_hand_computation_and_scipy():
    a = {42: 0.60, 43: 0.62, 44: 0.64}
    b = {42: 0.50, 43: 0.52, 44: 0.54}
    res = stats.ttest(a, b)
    # Hand: equal sample sds 0.02, pooled sd 0.02, se = 0.02·sqrt(2/3), t = 0.1 / se, df = 4.
    t_hand = 0.1 / (0.02 * math.sqrt(2 / 3))
    p_hand = 2 * (1 - t_cdf_df4(t_hand))
    assert res.statistic == pytest.approx(t_hand, rel=1e-9)
    assert res.p_value == pytest.approx(p_hand, rel=1e-6)
    ref = sps.ttest_ind([0.60, 0.62, 0.64], [0.50, 0.52, 0.54])
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert stats.is_significant_improvement(res)
    assert "ttest_ind" in res.test


def test_ttest_rel_pairs_by_seed_not_by_order():
    a = {44: 0.70, 42: 0.61, 43: 0.66}  # insertion order differs from b's
    b = {42: 0.60, 43: 0.62, 44: 0.65, 45: 0.9}  # seed 45 has no pair
    res = stats.ttest(a, b, paired=True)
    ref = sps.ttest_rel([0.61, 0.66, 0.70], [0.60, 0.62, 0.65])
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12)
    assert res.n_a == res.n_b == 3 and "ttest_rel" in res.test


def test_no_mark_for_a_significant_decrease_or_too_few_seeds():
    worse = stats.ttest({1: 0.1, 2: 0.11, 3: 0.12}, {1: 0.5, 2: 0.51, 3: 0.52})
    assert worse.p_value < 0.05 and not stats.is_significant_improvement(worse)
    single = stats.ttest({1: 0.9}, {1: 0.1, 2: 0.2})
    assert math.isnan(single.p_value) and not stats.is_significant_improvement(single)
    close = stats.ttest({1: 0.50, 2: 0.60, 3: 0.55}, {1: 0.52, 2: 0.58, 3: 0.54})
    assert close.p_value > 0.05 and not stats.is_significant_improvement(close)
    two = stats.ttest({1: 0.5, 2: 0.5001}, {1: 0.4, 2: 0.4001})  # #12: n = 2, std 0.0001
    assert two.p_value < 1e-6 and not stats.is_significant_improvement(two)


def test_rank_marks_leave_an_all_tied_column_unmarked():
    assert stats.rank_marks({"a": 0.0, "b": 0.00001, "c": 0.0}) == {"a": "", "b": "", "c": ""}
    assert stats.rank_marks({"a": 0.2}) == {"a": "best"}


def test_rank_marks_use_printed_values_and_share_ties():
    marks = stats.rank_marks({"a": 0.51, "b": 0.60001, "c": 0.60004, "d": 0.55, "e": math.nan})
    assert marks == {"a": "", "b": "best", "c": "best", "d": "second", "e": ""}
    assert stats.best_baseline({"a": 0.3, "b": 0.5, "p": 0.9}, ["a", "b"]) == "b"


def test_cosine_and_js_distance_by_hand():
    w = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    cos = stats.cosine_matrix(w)
    assert cos[0, 1] == pytest.approx(0.0) and cos[0, 2] == pytest.approx(1 / math.sqrt(2))
    js = stats.js_distance_matrix(w)
    assert js[0, 1] == pytest.approx(1.0)  # disjoint supports: distance 1 in base 2
    # P = (1, 0), Q = (.5, .5), M = (.75, .25): JSD = ½·log2(4/3) + ½·(½·log2(2/3) + ½·log2 2)
    jsd = 0.5 * math.log2(1 / 0.75) + 0.5 * (0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(2))
    assert js[0, 2] == pytest.approx(math.sqrt(jsd)) and js[2, 0] == js[0, 2]
    assert np.allclose(np.diag(js), 0.0)
