"""Run every paper artefact's grid (conf/experiment/*.yaml), in an order that respects inputs.

    python -m experiments.reproduce [--smoke] [--results DIR] [--only table2 fig6_expert_weights]
    python -m experiments.reproduce --plan [--smoke] [--results DIR]   # what is left to run

Each experiment runs as one Hydra multirun (`python run.py experiment=<name>`). Methods that
compose other runs (their YAML says ``inputs: {method: …}``) need those runs first: their input
method is run as its own sweep of the same experiment beforehand. Finished jobs are skipped, so
the command resumes after an interruption. ``--smoke`` adds ``trainer=smoke``.

After the grids, when ``fig5_efficiency`` was among them, the Fig. 5 measurement runs
(experiments/efficiency.py: every method rebuilt from its saved adapter and timed in one
process, written to ``<results>/fig5_efficiency/efficiency.json``; ``--no-efficiency`` skips it).

Grids share jobs (moelora/reuse.py): a job identical to a finished one is adopted, and one that
differs only in inference evaluates the finished one's weights. ``--plan`` composes every job
of the selected grids and prints, per experiment, how many are done, will be adopted, will only
evaluate, or will train.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def sweep_params(name: str) -> dict[str, str]:
    cfg = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return {str(k): str(v) for k, v in params.items()}


def input_method(method: str) -> str | None:
    path = CONF / "method" / f"{method}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(path), "inputs.method")


def commands(name: str, extra: list[str]) -> list[list[str]]:
    params = sweep_params(name)
    methods = [m.strip() for m in params.get("method", "").split(",") if m.strip()]
    needed = []
    for m in methods:
        dep = input_method(m)
        if dep and dep not in needed:
            needed.append(dep)
    base = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={name}"]
    cmds = [base + [f"method={dep}"] + extra for dep in needed]
    cmds.append(base + extra)
    return cmds


def efficiency_command(results: Path) -> list[str]:
    """The Fig. 5 measurement of the finished ``fig5_efficiency`` runs under ``results``."""
    return [sys.executable, "-m", "experiments.efficiency", "--results", str(results)]


def plan(names: list[str], extra: list[str], results: Path) -> list[dict[str, object]]:
    """Per experiment (in run order): jobs, done, adopt, evaluate, train (see the module doc)."""
    from hydra import compose, initialize_config_dir

    from analysis.collect import expected_runs
    from moelora.results import redact
    from moelora.reuse import finished_runs, job_fingerprint

    done_jobs: dict[str, set[str]] = {}     # fingerprint → experiments that hold it
    done_trainings = set()
    for _, res in finished_runs(results):
        done_jobs.setdefault(job_fingerprint(res["config"]), set()).add(str(res.get("experiment")))
        done_trainings.add(job_fingerprint(res["config"], training_only=True))
    planned_jobs, planned_trainings = set(), set()
    rows = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            row = {"experiment": name, "jobs": 0, "done": 0, "adopt": 0, "evaluate": 0, "train": 0}
            for job in expected_runs(name):
                overrides = [f"experiment={name}", *(f"{k}={v}" for k, v in job.items()), *extra]
                cfg = redact(OmegaConf.to_container(compose("config", overrides), resolve=True))
                fp, tfp = job_fingerprint(cfg), job_fingerprint(cfg, training_only=True)
                reuse = cfg.get("reuse", True) and not cfg.get("overwrite")
                row["jobs"] += 1
                if name in done_jobs.get(fp, ()):
                    row["done"] += 1
                elif reuse and (fp in done_jobs or fp in planned_jobs):
                    row["adopt"] += 1
                elif reuse and (tfp in done_trainings or tfp in planned_trainings):
                    row["evaluate"] += 1
                else:
                    row["train"] += 1
                planned_jobs.add(fp)
                planned_trainings.add(tfp)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="trainer=smoke (seconds per job)")
    parser.add_argument("--results", type=Path, default=Path("outputs"))
    parser.add_argument("--only", nargs="*", default=None, help="experiment names to run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("--plan", action="store_true",
                        help="count, per grid, the jobs done / to adopt / to evaluate / to train")
    parser.add_argument("--no-efficiency", action="store_true",
                        help="skip the Fig. 5 measurement after the grids")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args(argv)
    extra = [f"paths.output_dir={args.results}", *args.overrides]
    if args.smoke:
        extra += ["trainer=smoke", "logger=none"]
    names = args.only or experiment_names()
    unknown = sorted(set(names) - set(experiment_names()))
    if unknown:
        print(f"unknown experiment(s) {unknown}; choose from {experiment_names()}", file=sys.stderr)
        return 2
    if args.plan:
        rows = plan(names, extra, args.results)
        print("| experiment | jobs | done | adopt | evaluate only | train |\n|---|---|---|---|---|---|")
        for r in [*rows, {"experiment": "**all**", **{k: sum(int(x[k]) for x in rows) for k in
                                                      ("jobs", "done", "adopt", "evaluate", "train")}}]:
            print(f"| {r['experiment']} | {r['jobs']} | {r['done']} | {r['adopt']} | "
                  f"{r['evaluate']} | {r['train']} |")
        return 0
    t0 = time.perf_counter()
    failed = []
    steps = [(name, cmd) for name in names for cmd in commands(name, extra)]
    if "fig5_efficiency" in names and not args.no_efficiency:
        steps.append(("efficiency", efficiency_command(args.results)))
    for name, cmd in steps:
        print("$", " ".join(cmd[1:]), flush=True)
        if args.dry_run:
            continue
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    print(f"[reproduce] {len(names)} experiment(s) in {time.perf_counter() - t0:.0f} s"
          + (f"; failed to launch: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
