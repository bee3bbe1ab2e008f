"""analysis.tables: known synthetic results → known table text, marks and significance."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats as sps

from analysis import collect, tables
from tests.test_analysis_collect import write_run

# Per-seed scores (seeds 42, 43, 44) of two tasks. The per-run avg is the mean of the two.
SCORES = {
    "lora_full": {"CMeIE": [0.50, 0.52, 0.54], "CHIP-CDN": [0.40, 0.40, 0.43]},
    "molora": {"CMeIE": [0.55, 0.56, 0.57], "CHIP-CDN": [0.30, 0.31, 0.32]},
    "moelora_dense": {"CMeIE": [0.60, 0.62, 0.64], "CHIP-CDN": [0.41, 0.40, 0.45]},
}
SEEDS = (42, 43, 44)


def make_tree(root, experiment="table2", scores=SCORES, **kw):
    for method, per_task in scores.items():
        for i, seed in enumerate(SEEDS):
            write_run(root, experiment, method, seed, {t: v[i] for t, v in per_task.items()}, **kw)


@pytest.fixture
def tidy(tmp_path):
    make_tree(tmp_path)
    return collect.collect(tmp_path)[0]


def row_line(md: str, label: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {label} |"))


def test_known_means_stds_marks_and_stars(tidy):
    table = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=""
    )
    md = tables.to_markdown(table)
    # Hand: MOELoRA (D) CMeIE 0.62 ± 0.02; CDN mean 0.42, sd sqrt(0.0014/2) = 0.02646;
    # avg per seed (0.505, 0.51, 0.545): 0.52 ± sqrt(0.00095/2) = 0.02179.
    # CMeIE vs MoLoRA (best baseline, 0.56): t = 0.06/(sqrt(0.00025)·sqrt(2/3)) = 4.65, p ≈ 0.01;
    # CDN vs LoRA (Full) (0.41): p > 0.05; avg vs LoRA (Full) (0.465): t = 3.37, p ≈ 0.03.
    assert row_line(md, "MOELoRA (D)") == (
        "| MOELoRA (D) | **0.6200 ± 0.0200**\\* | **0.4200 ± 0.0265** | **0.5200 ± 0.0218**\\* | 3 |"
    )
    assert row_line(md, "LoRA (Full)") == (
        "| LoRA (Full) | 0.5200 ± 0.0200 | <u>0.4100 ± 0.0173</u> | <u>0.4650 ± 0.0180</u> | 3 |"
    )
    assert row_line(md, "MoLoRA") == (
        "| MoLoRA | <u>0.5600 ± 0.0100</u> | 0.3100 ± 0.0100 | 0.4350 ± 0.0100 | 3 |"
    )
    assert row_line(md, "P-Tuning") == "| P-Tuning | – | – | – | 0 |"
    table_lines = [line for line in md.splitlines() if line.startswith("| ") and "±" in line]
    assert sum(line.count("\\*") for line in table_lines) == 2  # stars only where due
    assert table.baselines == {"CMeIE": "molora", "CHIP-CDN": "lora_full", "avg": "lora_full"}


def test_p_values_equal_scipy_and_paired_option(tidy):
    ind = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=""
    )
    ref = sps.ttest_ind([0.505, 0.51, 0.545], [0.45, 0.46, 0.485])
    assert ind.tests["avg"]["moelora_dense"].p_value == pytest.approx(ref.pvalue, rel=1e-9)
    rel = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant="", paired=True
    )
    ref = sps.ttest_rel([0.60, 0.62, 0.64], [0.55, 0.56, 0.57])
    assert rel.tests["CMeIE"]["moelora_dense"].p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert "ttest_rel" in rel.caption and "ttest_ind" in ind.caption


def test_paper_rows_beside_ours_and_benchmark_labelled(tidy):
    md = tables.to_markdown(
        tables.build_table(tidy, "table2", benchmark="medsynth", scorer_mode="official", variant="")
    )
    assert row_line(md, "ChatGPT (paper, PromptCBLUE)").startswith(
        "| ChatGPT (paper, PromptCBLUE) | 0.3058 | 0.6069 | 0.4067 | – |"
    )
    # the paper's stars, as † (ours are \*); a row the paper printed without stars has none
    assert (
        row_line(md, "MOELoRA (D) (paper, PromptCBLUE)")
        == "| MOELoRA (D) (paper, PromptCBLUE) | 0.5193† | 0.8928† | 0.6236† | – |"
    )
    assert (
        row_line(md, "LoRA (Full) (paper, PromptCBLUE)")
        == "| LoRA (Full) (paper, PromptCBLUE) | 0.5089 | 0.8748 | 0.6155 | – |"
    )
    lines = [line.split(" | ")[0] for line in md.splitlines() if line.startswith("| ")]
    assert lines.index("| LoRA (Full) (paper, PromptCBLUE)") == lines.index("| LoRA (Full)") + 1
    # every method of Table 2 has its paper row; ICL (a local LLM) has none
    assert sum("(paper, PromptCBLUE)" in label for label in lines) == 11
    assert "(paper)" not in md and "not transcribed" not in md and "n/a" not in md.split("\n\n")[1]
    caption = md.split("\n")[0]
    assert "not measured here" in caption and "†: the paper's own significance mark" in caption
    assert "The paper's Avg is over its 8 tasks" in caption  # these runs have 2 tasks
    assert "MedSynth-8" in md and "not comparable" in md


def test_latex_and_csv(tidy):
    table = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=""
    )
    tex = tables.to_latex(table)
    assert (
        r"\textbf{0.6200 $\pm$ 0.0200}$^{*}$" in tex and r"\underline{0.5600 $\pm$ 0.0100}" in tex
    )
    # header + our 10 Table 2 rows + the paper's 11 rows (no floor row: these runs have none)
    assert tex.count(r"\\") == 1 + 10 + 11 and r"ttest\_ind" in tex
    assert r"0.6236$^{\dagger}$" in tex and "No floor row" in table.caption
    frame = tables.to_frame(table)
    cell = frame[
        (frame["row"] == "moelora_dense") & (frame["task"] == "avg") & (frame["source"] == "ours")
    ].iloc[0]
    assert cell["mean"] == pytest.approx(0.52) and cell["n"] == 3 and bool(cell["significant"])
    assert cell["compared_to"] == "lora_full"


def test_table3_reuses_table2_rows_and_files_per_variant(tmp_path):
    make_tree(tmp_path, scores={k: SCORES[k] for k in ("lora_full", "moelora_dense")})
    make_tree(tmp_path, "table3", scores={"moelora_no_gate": SCORES["molora"]})
    make_tree(tmp_path, "table2", scores={"molora": SCORES["molora"]}, overrides=["trainer=smoke"])
    reports = tmp_path / "reports"
    assert collect.main(["--root", str(tmp_path), "--out", str(reports)]) == 0
    assert tables.main(["--reports", str(reports)]) == 0
    names = sorted(p.name for p in reports.glob("table*"))
    assert names == sorted(
        f"{stem}.{ext}"
        for stem in ("table2_medsynth", "table2_medsynth_trainer=smoke", "table3_medsynth")
        for ext in ("md", "tex", "csv")
    )
    md3 = (reports / "table3_medsynth.md").read_text()
    assert row_line(md3, "w/o MOE").startswith("| w/o MOE | 0.5200 ± 0.0200 |")
    assert row_line(md3, "w/o gate").startswith("| w/o gate | <u>0.5600 ± 0.0100</u> |")
    assert "reuse the table2 runs" in md3
    smoke = pd.read_csv(reports / "table2_medsynth_trainer=smoke.csv")
    assert set(smoke[(smoke["source"] == "ours") & (smoke["n"] > 0)]["row"]) == {"molora"}


def test_missing_seed_shows_its_n(tmp_path):
    make_tree(tmp_path, scores={"lora_full": SCORES["lora_full"]})
    (tmp_path / "table2/lora_full/default/seed=44/results.json").unlink()
    tidy = collect.collect(tmp_path)[0]
    md = tables.to_markdown(
        tables.build_table(tidy, "table2", benchmark="medsynth", scorer_mode="official", variant="")
    )
    assert row_line(md, "LoRA (Full)").endswith("| 2 |")


def test_clear_message_when_nothing_to_tabulate(tmp_path, capsys):
    assert tables.main(["--reports", str(tmp_path)]) == 1
    assert "analysis.collect" in capsys.readouterr().err
    make_tree(tmp_path / "out", "fig6_expert_weights", scores={"moelora_dense": SCORES["molora"]})
    assert collect.main(["--root", str(tmp_path / "out"), "--out", str(tmp_path)]) == 0
    assert tables.main(["--reports", str(tmp_path)]) == 0  # make report goes on
    assert "nothing to tabulate" in capsys.readouterr().err
    assert not list(tmp_path.glob("table*"))


def test_plain_runs_make_table2_and_the_grid_takes_precedence(tmp_path):
    """`python run.py -m method=moelora_dense,lora_full seed=42,43,44` then `make tables`."""
    make_tree(tmp_path, "default", scores={k: SCORES[k] for k in ("lora_full", "moelora_dense")})
    reports = tmp_path / "reports"
    assert collect.main(["--root", str(tmp_path), "--out", str(reports)]) == 0
    assert tables.main(["--reports", str(reports)]) == 0
    # lora_full and moelora_dense are Table 3 rows too, but only reused ones: no Table 3
    assert sorted(p.name for p in reports.glob("table*.md")) == ["table2_medsynth.md"]
    md = (reports / "table2_medsynth.md").read_text()
    assert row_line(md, "LoRA (Full)").startswith("| LoRA (Full) | <u>0.5200 ± 0.0200</u> |")
    assert "Rows LoRA (Full), MOELoRA (D) come from plain runs" in md
    # a table2 grid run of the same method wins over the plain run
    make_tree(tmp_path, "table2", scores={"lora_full": SCORES["molora"]})
    tidy = collect.collect(tmp_path)[0]
    md = tables.to_markdown(
        tables.build_table(tidy, "table2", benchmark="medsynth", scorer_mode="official", variant="")
    )
    assert row_line(md, "LoRA (Full)").startswith("| LoRA (Full) | <u>0.5600 ± 0.0100</u> |")
    assert "Rows MOELoRA (D) come from plain runs" in md


def _stars(md: str) -> int:
    return sum(
        line.count("\\*") for line in md.splitlines() if line.startswith("| ") and "±" in line
    )


def test_no_significance_from_two_seeds(tmp_path):
    """#12: n = 2 seeds with a std of 0.0001 gives a tiny p; nothing is marked, n is in the caption."""
    for method, base in (("lora_full", 0.40), ("moelora_dense", 0.50)):
        for i, seed in enumerate((42, 43)):
            write_run(tmp_path, "table2", method, seed, {"CMeIE": base + 0.0001 * i})
    tidy = collect.collect(tmp_path)[0]
    table = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=""
    )
    assert table.tests["CMeIE"]["moelora_dense"].p_value < 1e-6  # what used to be starred
    md = tables.to_markdown(table)
    assert _stars(md) == 0 and "n = 2 seeds per cell" in table.caption
    assert "tested only where both have n ≥ 3 seeds" in table.caption
    assert "| CMeIE | MOELoRA (D) | LoRA (Full) |" in md and "not tested (n < 3) |" in md
    assert not tables.to_frame(table)["significant"].any()


@pytest.mark.parametrize("how", ["override", "choice"])
def test_no_significance_for_smoke_runs(tmp_path, how):
    """Smoke runs are wiring checks: never marked, however small p is (three seeds here)."""
    extra = (
        {"overrides": ["trainer=smoke"]} if how == "override" else {"choices": {"trainer": "smoke"}}
    )
    make_tree(tmp_path, **extra)
    tidy = collect.collect(tmp_path)[0]
    variant = "trainer=smoke" if how == "override" else ""
    table = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=variant
    )
    assert table.tests["CMeIE"]["moelora_dense"].p_value < 0.05
    md = tables.to_markdown(table)
    assert _stars(md) == 0 and "not tested (trainer=smoke)" in md
    assert "No significance is marked: these are trainer=smoke runs" in table.caption
    assert "n = 3 seeds per cell" in table.caption


def _floors(cmeie: float, cdn: float, by=("majority", "empty")) -> dict:
    return {
        "mode": "official",
        "floor": {"CMeIE": cmeie, "CHIP-CDN": cdn, "avg": (cmeie + cdn) / 2},
        "floor_by": {"CMeIE": by[0], "CHIP-CDN": by[1]},
    }


def test_floor_row_from_the_runs_floors(tmp_path):
    make_tree(tmp_path, floors=_floors(0.2, 0.1))
    tidy = collect.collect(tmp_path)[0]
    assert set(tidy[tidy["task"] == "CMeIE"]["floor"]) == {0.2}
    assert set(tidy[tidy["task"] == "CMeIE"]["floor_by"]) == {"majority"}
    table = tables.build_table(
        tidy, "table2", benchmark="medsynth", scorer_mode="official", variant=""
    )
    md = tables.to_markdown(table)
    assert row_line(md, "Floor (empty / majority / copy input)") == (
        "| Floor (empty / majority / copy input) | 0.2000 (majority) | 0.1000 (empty) | 0.1500 | – |"
    )
    assert "an empty answer, the task's most frequent training target" in table.caption
    assert "floors differ" not in table.caption
    # the floor row never takes a mark nor a baseline's place
    assert row_line(md, "MOELoRA (D)").startswith("| MOELoRA (D) | **0.6200 ± 0.0200**\\* |")
    assert table.baselines == {"CMeIE": "molora", "CHIP-CDN": "lora_full", "avg": "lora_full"}
    frame = tables.to_frame(table)
    floor = frame[frame["source"] == "floor"].set_index("task")
    assert floor.loc["CHIP-CDN", "mean"] == pytest.approx(0.1)
    assert floor.loc["CHIP-CDN", "floor_by"] == "empty"
    assert floor.loc["avg", "mean"] == pytest.approx(0.15)
    assert (
        r"Floor (empty / majority / copy input) & 0.2000 {\scriptsize (majority)} & "
        r"0.1000 {\scriptsize (empty)} & 0.1500 \\"
    ) in tables.to_latex(table)


def test_floor_row_shows_the_highest_floor_and_says_when_runs_differ(tmp_path):
    make_tree(tmp_path, floors=_floors(0.2, 0.1))
    write_run(
        tmp_path,
        "table2",
        "ptuning",
        42,
        {"CMeIE": 0.1, "CHIP-CDN": 0.1},
        floors=_floors(0.3, 0.1, by=("copy_input", "empty")),
    )
    table = tables.build_table(
        collect.collect(tmp_path)[0],
        "table2",
        benchmark="medsynth",
        scorer_mode="official",
        variant="",
    )
    md = tables.to_markdown(table)
    assert row_line(md, "Floor (empty / majority / copy input)").startswith(
        "| Floor (empty / majority / copy input) | 0.3000 (copy) | 0.1000 (empty) | 0.2000 |"
    )
    assert "The runs' floors differ on CMeIE" in table.caption
