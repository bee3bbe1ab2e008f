"""Every conf/experiment/*.yaml composes with the real conf/config.yaml, and so does every
job of its grid (struct mode: a wrong key in a grid fails here, not hours into a sweep)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from analysis.collect import expected_runs, grid_params
from tests.conftest import REPO_ROOT

CONF = REPO_ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_paper_artefacts_have_a_grid():
    assert set(EXPERIMENTS) >= {
        "table2",
        "table3",
        "fig4_experts",
        "fig4_rank",
        "fig5_efficiency",
        "fig6_expert_weights",
    }


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_grid(name):
    grid = grid_params(name)
    assert grid["seed"] == ["42", "43", "44"]
    missing = [m for m in grid["method"] if not (CONF / "method" / f"{m}.yaml").is_file()]
    assert not missing, f"{name} sweeps methods without a conf/method file: {missing}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
        assert cfg.experiment_name == name
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        assert cfg.data.benchmark == "medsynth"  # MedSynth-8 unless overridden
        jobs = [j for j in expected_runs(name) if j["seed"] == "42"]
        for job in jobs:
            job_cfg = compose(
                "config", overrides=[f"experiment={name}", *(f"{k}={v}" for k, v in job.items())]
            )
            assert job_cfg.method.name == job["method"]
            if "method.adapter" in job:  # fig4_rank: (N, r) pairs, r/N = 2
                adapter = job_cfg.method.adapter
                assert adapter.rank == 2 * adapter.num_experts
            if "method.adapter.num_experts" in job:  # fig4_experts: r = 16 throughout
                assert job_cfg.method.adapter.num_experts == int(job["method.adapter.num_experts"])
                assert job_cfg.method.adapter.rank == 16
