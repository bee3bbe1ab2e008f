"""analysis.figures and analysis.report: figures are written, non-empty and readable."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis import collect, figures, report, tables  # noqa: E402
from moelora.utils.io import read_json, write_json  # noqa: E402
from tests.test_analysis_collect import write_run  # noqa: E402

TASKS = ["CMeIE", "CHIP-CDN", "KUAKE-QIC"]


def weights(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    w = rng.random((len(TASKS), 4))
    return {"tasks": TASKS, "matrix": (w / w.sum(1, keepdims=True)).tolist()}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    for seed in (42, 43):
        for n in (1, 2, 4):
            write_run(
                root,
                "fig4_experts",
                "moelora_dense",
                seed,
                {t: 0.4 + 0.05 * n + 0.01 * (seed - 42) for t in TASKS},
                overrides=[f"method.adapter.num_experts={n}", "method.adapter.rank=16"],
                hparams={"num_experts": n, "rank": 16, "alpha": 32},
                params={"trainable": 10, "total": 1000, "ratio": 0.01},
            )
        for method in ("lora_full", "molora", "moelora_dense"):
            for infer in ("merged_per_task", "unmerged"):
                write_run(
                    root,
                    "fig5_efficiency",
                    method,
                    seed,
                    {t: 0.5 for t in TASKS},
                    overrides=[f"method.infer={infer}"],
                    params={"ratio": 0.02},
                    params_chatglm6b={"ratio": 0.004756},
                    timing={
                        "train_step_seconds": 0.1,  # MoLoRA always runs unmerged
                        "infer_mode": "unmerged" if method == "molora" else infer,
                        "latency_per_example": 0.02 if infer == "unmerged" else 0.01,
                    },
                )
        write_run(
            root,
            "table2",
            "moelora_dense",
            seed,
            {t: 0.6 for t in TASKS},
            expert_weights=weights(seed),
        )
    out = tmp_path_factory.mktemp("reports")
    assert collect.main(["--root", str(root), "--out", str(out)]) == 0
    assert figures.main(["--reports", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "stem", ["fig4a_experts_medsynth", "fig5_efficiency_medsynth", "fig6_expert_weights_medsynth"]
)
def test_figures_are_written_and_not_blank(reports, stem):
    img = mpimg.imread(reports / f"{stem}.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert (reports / f"{stem}.pdf").stat().st_size > 1000


def test_fig4_points_are_the_seed_means(reports):
    tidy = tables.load_tidy(reports)
    runs = pd.read_csv(reports / "runs.csv")
    points = figures.fig4_points(tidy, runs, "fig4_experts", "num_experts")
    assert points["num_experts"].tolist() == [1, 2, 4]
    # avg per run = 0.4 + 0.05 N + 0.01 (seed − 42) → mean over seeds 42, 43 adds 0.005.
    assert points["mean"].tolist() == pytest.approx([0.455, 0.505, 0.605])
    assert points["std"].tolist() == pytest.approx([0.01 / np.sqrt(2)] * 3)
    assert points["ratio"].tolist() == pytest.approx([0.01] * 3)
    assert not (reports / "fig4b_rank_medsynth.png").exists()  # no fig4_rank runs


def test_fig6_dumps_matrix_and_similarities(reports):
    """Fig. 6 falls back to table2's MOELoRA (D) runs and dumps the T×N matrix per seed."""
    w = pd.read_csv(reports / "fig6_expert_weights_medsynth_weights_seed42.csv", index_col=0)
    assert list(w.index) == TASKS and w.shape == (3, 4)
    assert np.allclose(w.to_numpy(), np.asarray(weights(42)["matrix"]))
    cos = pd.read_csv(reports / "fig6_expert_weights_medsynth_cosine_seed43.csv", index_col=0)
    a, b = np.asarray(weights(43)["matrix"])[[1, 2]]
    assert cos.loc["CHIP-CDN", "KUAKE-QIC"] == pytest.approx(
        a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    )
    md = (reports / "fig6_expert_weights_medsynth.md").read_text()
    assert "| **CHIP-CDN** | **KUAKE-QIC** |" in md


def test_report_collects_tables_and_figures(reports):
    assert report.main(["--reports", str(reports)]) == 0
    text = (reports / "REPORT.md").read_text()
    assert "## Environment" in text and "analysis checkout" in text
    assert "![Fig. 5" in text and "fig6_expert_weights_medsynth.png" in text
    assert "| fig5_efficiency | 12 |" in text


def test_clear_messages_when_there_is_nothing(tmp_path, capsys):
    assert figures.main(["--reports", str(tmp_path)]) == 1
    assert report.main(["--reports", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "[figures] no results.csv" in err and "[report] nothing to report" in err


def test_nothing_to_plot_is_a_notice_not_an_error(tmp_path, capsys):
    write_run(tmp_path / "out", "table2", "lora_full", 42, {t: 0.5 for t in TASKS})
    assert collect.main(["--root", str(tmp_path / "out"), "--out", str(tmp_path)]) == 0
    assert figures.main(["--reports", str(tmp_path)]) == 0
    assert "nothing to plot" in capsys.readouterr().err
    assert not list(tmp_path.glob("fig*.png"))


def test_fig5_counts_each_molora_seed_once(reports):
    runs = figures.fig5_runs(pd.read_csv(reports / "runs.csv"))
    molora = runs[runs["method"] == "molora"]
    assert sorted(molora["seed"]) == [42, 43]
    assert len(runs[runs["method"] == "lora_full"]) == 4  # both inference modes kept


def _measured_group(methods):
    """An efficiency.json group as experiments/efficiency.py writes it (values chosen here)."""
    out, ratios = {}, {}
    for i, m in enumerate(methods):
        step = 0.1 * (1 + 0.1 * i)
        lat = {"grouped_merged": 0.02, "grouped_unmerged": 0.03, "mixed": 0.025}
        if m == "molora":
            lat.pop("grouped_merged")
        out[m] = {
            "seed": 42,
            "run_dir": f"x/{m}",
            "train_batch_size": 4,
            "test_examples": 8,
            "train_peak_bytes": 2**20 * (10 + i),
            "latency": {k: [v] * 3 for k, v in lat.items()},
            "summary": {
                "train_step_seconds": {"median": step, "min": step * 0.9, "max": step * 1.2},
                **{f"latency_{k}": {"median": v, "min": v, "max": v} for k, v in lat.items()},
            },
        }
        ratios[m] = {
            "train_step_seconds": {"median": 1 + 0.1 * i, "min": 1.0, "max": 1.3},
            "train_peak_bytes": (10 + i) / 10,
        }
    return {
        "benchmark": "medsynth",
        "variant": "",
        "methods": out,
        "ratios": ratios,
        "measurement": {
            "device": "cpu",
            "threads": 1,
            "versions": {"torch": "2"},
            "settings": {"repeats": 3, "steps_per_repeat": 2, "per_task": 1, "new_tokens": 3},
        },
    }


def test_fig5_draws_the_measurement_with_ratios_and_marks_what_is_absent(reports):
    runs = pd.read_csv(reports / "runs.csv")
    runs = runs[runs["experiment"] == "fig5_efficiency"]
    group = _measured_group(["lora_full", "molora"])  # moelora_dense not measured
    fig = figures.plot_fig5(runs, benchmark="medsynth", variant="", efficiency=group)
    ax_step, ax_lat, ax_mem = fig.axes[1:4]
    heights = [round(p.get_height(), 6) for p in ax_step.patches]
    assert heights[:2] == [100.0, 110.0] and np.isnan(heights[2])  # ms; D has no bar
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "1.00×" in texts and "1.10×" in texts  # ratios on the bars
    assert "cannot merge" in texts and "not measured" in texts  # nothing dropped silently
    assert [round(p.get_height(), 6) for p in ax_mem.patches][:2] == [10.0, 11.0]
    assert "Measured by experiments/efficiency.py" in fig.texts[-1].get_text()
    assert len(ax_lat.get_legend().get_texts()) == 3


def test_evaluate_only_job_takes_the_step_time_of_the_job_that_trained_it(tmp_path):
    trainer = write_run(
        tmp_path / "out",
        "fig5_efficiency",
        "molora",
        42,
        {t: 0.5 for t in TASKS},
        overrides=["method.infer=merged_per_task"],
        timing={"train_step_seconds": 0.2216, "infer_mode": "unmerged"},
    )
    write_run(
        tmp_path / "out",
        "fig5_efficiency",
        "molora",
        42,
        {t: 0.5 for t in TASKS},
        overrides=["method.infer=unmerged"],
        trained_by=str(trainer),
        timing={"train_step_seconds": None, "infer_mode": "unmerged"},
    )
    write_json(
        tmp_path / "out" / "fig5_efficiency" / "efficiency.json",
        {"device": "cpu", "groups": [_measured_group(["lora_full", "molora"])]},
    )
    assert collect.main(["--root", str(tmp_path / "out"), "--out", str(tmp_path / "r")]) == 0
    runs = figures.fig5_runs(pd.read_csv(tmp_path / "r" / "runs.csv"))
    assert runs["train_step_seconds"].tolist() == [0.2216]  # the unmerged job, kept
    (doc,) = read_json(tmp_path / "r" / "efficiency.json")
    assert doc["source"].endswith("fig5_efficiency/efficiency.json")
    assert set(figures.load_efficiency(tmp_path / "r")) == {("medsynth", "")}
