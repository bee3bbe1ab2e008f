"""Run every paper artefact's grid (conf/experiment/*.yaml), in an order that respects inputs.

    python -m experiments.reproduce [--smoke] [--results DIR] [--only table2 fig6_expert_weights]
    python -m experiments.reproduce --jobs 2 [...]                   # two jobs side by side
    python -m experiments.reproduce --plan [--smoke] [--results DIR]   # what is left to run

With ``--jobs 1`` (the default) each experiment runs as one Hydra multirun
(`python run.py experiment=<name>`). Methods that compose other runs (their YAML says
``inputs: {method: …}``) need those runs first: their input method is run as its own sweep of
the same experiment beforehand. Finished jobs are skipped, so the command resumes after an
interruption. ``--smoke`` adds ``trainer=smoke``. Extra overrides go to every job; one of a grid
key (``seed=42``) replaces that key's values.

With ``--jobs N`` (N > 1) every job of the selected grids is one process,
``python run.py -m experiment=<name> <grid keys> <overrides> threads=1`` (experiments/schedule.py:
the same folders as the grid multiruns), N at a time, each with one thread: on 2 cores two
one-thread jobs get through about 1.4× the work of one two-thread job. A job starts once what
it waits for has finished: a composition method its input method's jobs of the same experiment
and seed; a job whose identical or training twin is planned earlier that twin, which it then
adopts or only evaluates (moelora/harness/reuse.py). A job whose composition inputs failed is skipped.
Each job's output goes to ``<results>/reproduce_logs/``; the console shows one line per start
and end, then a summary per grid. Jobs that another process is running are reported busy and
left to it (job locks), so two reproduce commands may overlap.

After the grids, when ``fig5_efficiency`` was among them, the Fig. 5 measurement runs alone
(experiments/efficiency.py: every method rebuilt from its saved adapter and timed in one
process, written to ``<results>/fig5_efficiency/efficiency.json``; ``--no-efficiency`` skips it).

Grids share jobs (moelora/harness/reuse.py): a job identical to a finished one is adopted, and one that
differs only in inference evaluates the finished one's weights. ``--plan`` composes every job
of the selected grids and prints, per experiment, how many are done, will be adopted, will only
evaluate, or will train.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from experiments.schedule import (
    CONF,
    ROOT,
    Job,
    build_jobs,
    count_states,
    input_method,
    prepare_inputs,
    run_dir,
    start_order,
    sweep_params,
)

__all__ = [
    "CONF",
    "ROOT",
    "commands",
    "experiment_names",
    "input_method",
    "main",
    "plan",
    "run_jobs",
    "sweep_params",
]
POLL_SECONDS = 0.5


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def commands(name: str, extra: list[str]) -> list[list[str]]:
    """The grid multiruns of one experiment (``--jobs 1``): input methods first."""
    params = sweep_params(name)
    methods = [m.strip() for m in params.get("method", "").split(",") if m.strip()]
    given = [
        m for o in extra if o.split("=", 1)[0] == "method" for m in o.split("=", 1)[1].split(",")
    ]
    needed = []
    for m in given or methods:
        dep = input_method(m)
        if dep and dep not in needed:
            needed.append(dep)
    base = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={name}"]
    rest = [o for o in extra if o.split("=", 1)[0] != "method"] if needed else extra
    cmds = [base + [f"method={dep}"] + rest for dep in needed]
    cmds.append(base + extra)
    return cmds


def efficiency_command(results: Path) -> list[str]:
    """The Fig. 5 measurement of the finished ``fig5_efficiency`` runs under ``results``."""
    return [sys.executable, "-m", "experiments.efficiency", "--results", str(results)]


def plan(names: list[str], extra: list[str], results: Path) -> list[dict[str, object]]:
    """Per experiment (in run order): jobs, done, adopt, evaluate, train (see the module doc)."""
    return count_states(build_jobs(names, extra, results), names)


# ---- running jobs side by side --------------------------------------------------------------
def _outcome(job: Job, results: Path, code: int, log: Path) -> str:
    """success | failed | busy, from the job's results.json and its log: a one-job multirun
    exits 0 even when its job failed, and a job that refuses its folder (``[mismatch]``: it
    holds another job's results) leaves the old results.json as it was."""
    from moelora.harness.results import read_results

    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    if "\n[busy] " in text:
        return "busy"
    try:
        status = (read_results(run_dir(job, results)) or {}).get("status")
    except ValueError:
        status = None
    return (
        "success" if status == "success" and code == 0 and "\n[mismatch] " not in text else "failed"
    )


def _log_path(job: Job, results: Path) -> Path:
    name = re.sub(r"[^\w.=,+-]+", "_", ",".join(f"{k}={v}" for k, v in job.values.items()))
    return results / "reproduce_logs" / job.experiment / f"{name}.log"


def run_jobs(
    jobs: list[Job], *, workers: int, results: Path, env: dict[str, str] | None = None
) -> dict[int, tuple[str, float]]:
    """Run ``jobs`` ``workers`` at a time, each after what it waits for; ``results`` is their
    ``paths.output_dir`` (logs go to ``<results>/reproduce_logs/``).

    Returns job index → (outcome, seconds): outcome ``success``, ``failed``, ``busy`` (another
    process runs it) or ``skipped`` (a composition input did not succeed)."""
    order, total = start_order(jobs), len(jobs)
    outcome: dict[int, tuple[str, float]] = {}
    running: dict[int, tuple[subprocess.Popen, float, object]] = {}

    def line(text: str) -> None:
        done = len(outcome)
        print(f"[reproduce] {text} ({done}/{total} finished, {len(running)} running)", flush=True)

    try:
        while order or running:
            while len(running) < workers:
                job = next((j for j in order if all(i in outcome for i in j.after)), None)
                if job is None:
                    break
                order.remove(job)
                failed_inputs = [i for i in job.inputs if outcome[i][0] != "success"]
                if failed_inputs:
                    outcome[job.index] = ("skipped", 0.0)
                    line(
                        f"skip  {job.label()}: its input job(s) "
                        f"{', '.join(jobs[i].label() for i in failed_inputs)} did not succeed"
                    )
                    continue
                log = _log_path(job, results)
                log.parent.mkdir(parents=True, exist_ok=True)
                handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed when the job ends
                handle.write("$ " + " ".join(job.command()[1:]) + "\n")
                handle.flush()
                proc = subprocess.Popen(
                    job.command(), cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env
                )
                running[job.index] = (proc, time.perf_counter(), handle)
                line(f"start {job.label()} [{job.state}]")
            if not running:
                continue
            time.sleep(POLL_SECONDS)
            for index, (proc, t0, handle) in list(running.items()):
                if proc.poll() is None:
                    continue
                handle.close()
                del running[index]
                job, seconds = jobs[index], time.perf_counter() - t0
                log = _log_path(job, results)
                outcome[index] = (_outcome(job, results, proc.returncode, log), seconds)
                where = "" if outcome[index][0] == "success" else f"; log: {log}"
                line(f"{outcome[index][0]:<7} {job.label()} in {seconds:.0f} s{where}")
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, handle in running.values():
            proc.wait()
            handle.close()
        raise
    return outcome


def summary(jobs: list[Job], outcome: dict[int, tuple[str, float]], wall: float) -> str:
    """Per grid: jobs, success / failed / busy / skipped, summed job seconds; then the wall time."""
    kinds = ("success", "failed", "busy", "skipped")
    lines = [
        "| grid | jobs | " + " | ".join(kinds) + " | job time |",
        "|---|---|" + "---|" * len(kinds) + "---|",
    ]
    for name in dict.fromkeys(j.experiment for j in jobs):
        mine = [outcome.get(j.index, ("not run", 0.0)) for j in jobs if j.experiment == name]
        counts = [sum(o == k for o, _ in mine) for k in kinds]
        lines.append(
            f"| {name} | {len(mine)} | "
            + " | ".join(map(str, counts))
            + f" | {sum(s for _, s in mine) / 60:.1f} min |"
        )
    return "\n".join(lines) + f"\n[reproduce] wall time {wall / 60:.1f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="trainer=smoke (seconds per job)")
    parser.add_argument("--results", type=Path, default=Path("outputs"))
    parser.add_argument("--only", nargs="*", default=None, help="experiment names to run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="count, per grid, the jobs done / to adopt / to evaluate / to train",
    )
    parser.add_argument(
        "--no-efficiency", action="store_true", help="skip the Fig. 5 measurement after the grids"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="jobs side by side, each its own process with threads=1 (default 1: "
        "one grid multirun at a time)",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = parser.parse_args(argv)
    if args.only:  # "--only table2 seed=42": the k=v items are overrides, not experiment names
        args.overrides += [o for o in args.only if "=" in o]
        args.only = [o for o in args.only if "=" not in o]
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    extra = [f"paths.output_dir={args.results}", *args.overrides]
    if args.smoke:
        extra += ["trainer=smoke", "logger=none"]
    if args.jobs > 1 and not any(o.split("=", 1)[0] == "threads" for o in args.overrides):
        extra.append("threads=1")
    names = args.only or experiment_names()
    unknown = sorted(set(names) - set(experiment_names()))
    if unknown:
        print(f"unknown experiment(s) {unknown}; choose from {experiment_names()}", file=sys.stderr)
        return 2
    if args.plan:
        rows = plan(names, extra, args.results)
        print(
            "| experiment | jobs | done | adopt | evaluate only | train |\n|---|---|---|---|---|---|"
        )
        for r in [
            *rows,
            {
                "experiment": "**all**",
                **{
                    k: sum(int(x[k]) for x in rows)
                    for k in ("jobs", "done", "adopt", "evaluate", "train")
                },
            },
        ]:
            print(
                f"| {r['experiment']} | {r['jobs']} | {r['done']} | {r['adopt']} | "
                f"{r['evaluate']} | {r['train']} |"
            )
        return 0
    if args.jobs > 1:
        return _parallel(args, names, extra)
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
    print(
        f"[reproduce] {len(names)} experiment(s) in {time.perf_counter() - t0:.0f} s"
        + (f"; failed to launch: {failed}" if failed else "")
    )
    return 1 if failed else 0


def _parallel(args: argparse.Namespace, names: list[str], extra: list[str]) -> int:
    """``--jobs N``: every job its own process, N at a time (see the module doc)."""
    results = (
        args.results if args.results.is_absolute() else ROOT / args.results
    )  # jobs run in ROOT
    t0 = time.perf_counter()
    jobs = build_jobs(names, extra, results)
    states = {s: sum(j.state == s for j in jobs) for s in ("train", "evaluate", "adopt", "done")}
    print(
        f"[reproduce] {len(jobs)} jobs of {len(names)} grid(s), {args.jobs} at a time: "
        + ", ".join(f"{n} {s}" for s, n in states.items())
        + f" (planned in {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    efficiency = "fig5_efficiency" in names and not args.no_efficiency
    if args.dry_run:
        for job in jobs:
            after = f", after {', '.join(f'#{i}' for i in job.after)}" if job.after else ""
            print(f"$ {' '.join(job.command()[1:])}  # #{job.index}: {job.state}{after}")
        if efficiency:
            print(f"$ {' '.join(efficiency_command(args.results)[1:])}  # after every job")
        return 0
    try:
        prepare_inputs(jobs)
    except Exception as e:  # noqa: BLE001 - a build or a typed path failed: reported, nothing ran
        print(
            f"[reproduce] the jobs' inputs are not ready: {type(e).__name__}: {e}", file=sys.stderr
        )
        return 1
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    try:
        outcome = run_jobs(jobs, workers=args.jobs, results=results, env=env)
    except KeyboardInterrupt:
        print(
            "[reproduce] interrupted: the running jobs were stopped; the same command resumes "
            "them from their last checkpoints",
            file=sys.stderr,
        )
        return 130
    print(summary(jobs, outcome, time.perf_counter() - t0), flush=True)
    code = 0 if all(o == "success" for o, _ in outcome.values()) else 1
    if efficiency:
        cmd = efficiency_command(args.results)
        print("$", " ".join(cmd[1:]), flush=True)
        code = max(code, int(subprocess.run(cmd, cwd=ROOT).returncode != 0))
    return code


if __name__ == "__main__":
    sys.exit(main())
