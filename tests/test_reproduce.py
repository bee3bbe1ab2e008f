"""experiments/reproduce.py: the order of the grid commands and ``--plan``'s accounting."""

from __future__ import annotations

from omegaconf import OmegaConf

from experiments import reproduce
from moelora.io import write_json
from moelora.results import redact
from tests.conftest import compose


def test_composing_methods_get_their_inputs_first():
    cmds = reproduce.commands("table2", ["trainer=smoke"])
    assert [c[4:] for c in cmds] == [["method=lora_single", "trainer=smoke"], ["trainer=smoke"]]
    assert all(c[3] == "experiment=table2" for c in cmds)


def test_fig5_measurement_runs_after_the_grids(capsys):
    def commands(*argv):
        assert reproduce.main(["--dry-run", "--results", "out", *argv]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("$")]

    lines = commands("--only", "fig5_efficiency", "table3")
    assert lines[-1].endswith("-m experiments.efficiency --results out")
    assert sum("experiments.efficiency" in line for line in lines) == 1
    assert not any("experiments.efficiency" in line
                   for line in commands("--only", "fig5_efficiency", "--no-efficiency"))
    assert not any("experiments.efficiency" in line for line in commands("--only", "table3"))


def _finished(root, experiment, *overrides, name):
    cfg = compose([f"experiment={experiment}", *overrides, f"paths.output_dir={root}"])
    run_dir = root / experiment / name
    run_dir.mkdir(parents=True)
    write_json(run_dir / "results.json", {"status": "success", "experiment": experiment,
                                          "config": redact(OmegaConf.to_container(cfg, resolve=True))})


def test_plan_counts_done_adopted_evaluate_only_and_new_jobs(tmp_path):
    root = tmp_path / "outputs"
    _finished(root, "table2", "method=moelora_dense", "seed=42", name="a")          # same job
    _finished(root, "table2", "method=moelora_dense", "seed=43", "method.infer=merged_per_task",
              name="b")                                                             # same weights
    _finished(root, "fig6_expert_weights", "method=moelora_dense", "seed=44", name="c")  # done
    _finished(root, "table2", "method=moelora_dense", "seed=44", "trainer=smoke", name="d")
    extra = [f"paths.output_dir={root}"]
    [row] = reproduce.plan(["fig6_expert_weights"], extra, root)
    assert row == {"experiment": "fig6_expert_weights", "jobs": 3, "done": 1, "adopt": 1,
                   "evaluate": 1, "train": 0}
    [row] = reproduce.plan(["fig6_expert_weights"], [*extra, "reuse=false"], root)
    assert (row["done"], row["adopt"], row["evaluate"], row["train"]) == (1, 0, 0, 2)
