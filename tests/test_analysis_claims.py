"""analysis.claims: synthetic per-seed averages → known effects, p-values and verdicts."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as sps

from analysis import claims, collect, report
from tests.test_analysis_collect import write_run

SEEDS = (42, 43, 44)
HIGH, LOW = [0.60, 0.61, 0.62], [0.50, 0.51, 0.52]  # clearly apart (p ≈ 0.0002)
NOISY_A, NOISY_B = [0.50, 0.60, 0.55], [0.52, 0.58, 0.54]  # overlapping


def frame(runs: dict[tuple, list[float]], seeds=SEEDS, **columns) -> pd.DataFrame:
    """A tidy frame of ``avg`` rows: (experiment, method[, num_experts, rank]) → per-seed avgs."""
    rows = []
    for key, values in runs.items():
        experiment, method, *grid = key
        for seed, value in zip(seeds, values):
            rows.append(
                {
                    "experiment": experiment,
                    "method": method,
                    "seed": seed,
                    "task": "avg",
                    "score": value,
                    "status": "success",
                    "benchmark": "medsynth",
                    "scorer_mode": "official",
                    "variant": "",
                    "trainer": "default",
                    "num_experts": grid[0] if grid else 8,
                    "rank": grid[1] if grid else 16,
                    **columns,
                }
            )
    return pd.DataFrame(rows)


def verdict(tidy: pd.DataFrame, prefix: str) -> claims.Verdict:
    return next(v for v in claims.judge_all(tidy) if v.claim.startswith(prefix))


MAIN = "MOELoRA (D) > LoRA (Full)"


def test_clear_improvement_holds_with_scipys_p_and_the_effect():
    v = verdict(frame({("table2", "moelora_dense"): HIGH, ("table2", "lora_full"): LOW}), MAIN)
    assert v.verdict == "holds" and v.n == "3/3"
    assert v.effect == pytest.approx(0.10)
    assert v.p_value == pytest.approx(sps.ttest_ind(HIGH, LOW).pvalue, rel=1e-9)
    assert v.cohen_d == pytest.approx(0.10 / 0.01)  # pooled sd 0.01
    assert v.measured == "MOELoRA (D) 0.6100 > LoRA (Full) 0.5100"
    assert v.paper == "MOELoRA (D) 0.6236 vs LoRA (Full) 0.6155"


def test_clear_reversal_is_contradicted():
    v = verdict(frame({("table2", "moelora_dense"): LOW, ("table2", "lora_full"): HIGH}), MAIN)
    assert v.verdict == "contradicted" and v.effect == pytest.approx(-0.10)
    assert v.measured.startswith("MOELoRA (D) 0.5100 <")


def test_overlapping_seeds_are_inconclusive():
    v = verdict(
        frame({("table2", "moelora_dense"): NOISY_A, ("table2", "lora_full"): NOISY_B}), MAIN
    )
    assert v.verdict == "inconclusive" and v.p_value > 0.05 and v.effect > 0


def test_two_seeds_are_inconclusive_however_small_p_is():
    tidy = frame(
        {("table2", "moelora_dense"): [0.6000, 0.6001], ("table2", "lora_full"): [0.5000, 0.5001]},
        seeds=(42, 43),
    )
    v = verdict(tidy, MAIN)
    assert v.p_value < 1e-6 and v.verdict == "inconclusive (n < 3)" and v.n == "2/2"


def test_missing_runs_are_not_measured():
    v = verdict(frame({("table2", "moelora_dense"): HIGH}), MAIN)
    assert v.verdict == "inconclusive (not measured)" and "no runs of LoRA (Full)" in v.measured


def test_at_least_claims_hold_on_direction_and_are_contradicted_only_when_significant():
    dense_sparse = "dense ≥ sparse"
    v = verdict(
        frame({("table2", "moelora_dense"): NOISY_A, ("table2", "moelora_sparse"): NOISY_B}),
        dense_sparse,
    )
    assert v.verdict == "holds (direction only, p ≥ 0.05)"
    v = verdict(
        frame({("table2", "moelora_dense"): NOISY_B, ("table2", "moelora_sparse"): NOISY_A}),
        dense_sparse,
    )
    assert v.verdict == "inconclusive"
    v = verdict(
        frame({("table2", "moelora_dense"): LOW, ("table2", "moelora_sparse"): HIGH}), dense_sparse
    )
    assert v.verdict == "contradicted"


def test_much_greater_needs_twice_the_score():
    icl = "fine-tuning ≫ in-context"
    v = verdict(frame({("table2", "lora_full"): HIGH, ("table2", "icl"): LOW}), icl)
    assert v.verdict == "inconclusive (higher, but less than 2×)" and "(1.20×)" in v.measured
    v = verdict(frame({("table2", "lora_full"): HIGH, ("table2", "icl"): [0.20, 0.21, 0.22]}), icl)
    assert v.verdict == "holds" and v.paper == "LoRA (Full) 0.6155 vs ChatGPT 0.4067"


def test_table3_claims_read_the_reused_table2_rows():
    tidy = frame({("table2", "moelora_dense"): HIGH, ("table3", "moelora_no_gate"): LOW})
    assert verdict(tidy, "w/o gate < MOELoRA (D)").verdict == "holds"


def fig4a(points: dict[int, list[float]]) -> claims.Verdict:
    tidy = frame({("fig4_experts", "moelora_dense", n, 16): v for n, v in points.items()})
    return verdict(tidy, "Fig. 4a")


def test_fig4a_peak_at_8():
    base = {1: [0.40, 0.41, 0.42], 2: [0.45, 0.46, 0.47], 4: LOW, 8: HIGH, 16: LOW}
    v = fig4a(base)
    assert v.verdict == "holds" and v.measured.startswith("peak at N = 8;") and v.n == "3/3/3/3/3"
    assert v.effect == pytest.approx(0.10)
    # N = 16 within noise of N = 8: the peak is not shown
    assert fig4a({**base, 16: [0.59, 0.62, 0.60]}).verdict == "inconclusive"
    # N = 4 significantly above N = 8: contradicted
    v = fig4a({**base, 4: [0.70, 0.71, 0.72]})
    assert v.verdict == "contradicted" and v.measured.startswith("peak at N = 4;")
    # N = 16 not run
    v = fig4a({k: x for k, x in base.items() if k != 16})
    assert v.verdict == "inconclusive (not measured)" and "N = 16" in v.measured
    assert fig4a({**base, 2: [0.45, 0.46]}).verdict == "inconclusive (n < 3)"


def fig4b(points: dict[int, list[float]]) -> claims.Verdict:
    tidy = frame({("fig4_rank", "moelora_dense", r // 2, r): v for r, v in points.items()})
    return verdict(tidy, "Fig. 4b")


def test_fig4b_rise_with_r():
    rising = {
        2: [0.30, 0.31, 0.32],
        4: [0.40, 0.41, 0.42],
        8: [0.45, 0.46, 0.47],
        16: LOW,
        32: [0.52, 0.53, 0.54],
    }
    v = fig4b(rising)
    assert v.verdict == "holds" and v.measured.startswith("rises at every step")
    assert v.effect == pytest.approx(0.53 - 0.31)
    # a dip in the middle (not significant): not shown to rise at every step
    v = fig4b({**rising, 16: [0.44, 0.47, 0.45]})
    assert v.verdict == "inconclusive" and v.measured.startswith("not monotone")
    # r = 32 significantly below r = 16: contradicted
    assert fig4b({**rising, 32: [0.40, 0.41, 0.42]}).verdict == "contradicted"
    assert fig4b({2: [0.3, 0.31, 0.32]}).verdict == "inconclusive (not measured)"


def test_files_per_group_no_verdict_for_smoke_and_the_report_section(tmp_path):
    root, reports = tmp_path / "out", tmp_path / "reports"
    for method, values in (("moelora_dense", HIGH), ("lora_full", LOW)):
        for seed, value in zip(SEEDS, values):
            write_run(root, "table2", method, seed, {"CMeIE": value})
            write_run(root, "table2", method, seed, {"CMeIE": value}, overrides=["trainer=smoke"])
    assert collect.main(["--root", str(root), "--out", str(reports)]) == 0
    assert claims.main(["--reports", str(reports)]) == 0
    names = sorted(p.name for p in reports.glob("claims_*"))
    assert names == [
        "claims_medsynth.csv",
        "claims_medsynth.md",
        "claims_medsynth_trainer=smoke.csv",
        "claims_medsynth_trainer=smoke.md",
    ]
    md = (reports / "claims_medsynth.md").read_text(encoding="utf-8")
    assert "| MOELoRA (D) > LoRA (Full) (Table 2) | MOELoRA (D) 0.6100 > LoRA (Full) 0.5100 |" in md
    assert "| **holds** |" in md
    smoke = (reports / "claims_medsynth_trainer=smoke.md").read_text(encoding="utf-8")
    assert (
        "holds" not in smoke
        and smoke.count("no verdict (trainer=smoke)") == len(claims.PAIRWISE) + 2
    )
    table = pd.read_csv(reports / "claims_medsynth.csv")
    assert table.loc[0, "verdict"] == "holds"
    assert table.loc[0, "p_value"] == pytest.approx(sps.ttest_ind(HIGH, LOW).pvalue, rel=1e-9)
    assert report.main(["--reports", str(reports)]) == 0
    text = (reports / "REPORT.md").read_text(encoding="utf-8")
    claims_part = text.split("\n## Claims\n")[1].split("\n## Tables\n")[0]
    assert "### Claims of the paper, tested on MedSynth-8" in claims_part
    assert "| MOELoRA (D) > LoRA (Full) (Table 2) |" in claims_part
