# %% [markdown]
# # Collect: every results.json → one tidy table
# ``python -m analysis.collect --root outputs --out reports`` writes
# ``results.csv`` (one row per experiment × method × overrides × seed × task, plus one row per
# run that did not succeed), ``runs.csv`` (one row per run: parameters, timings),
# ``expert_weights.json`` (the gate's T×N matrices, Fig. 6) and ``missing.md`` (runs that the
# experiment grids expect but that are missing or did not succeed); the Fig. 5 measurements
# found under the root (``efficiency.json``, experiments/efficiency.py) go to ``efficiency.json``.

# %%
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
RESULTS_NAME = "results.json"
# Overrides that do not change what a run measures (same list as hydra's override_dirname
# exclude_keys in conf/hydra/default.yaml, which is read when present).
DEFAULT_IGNORED_KEYS = (
    "method",
    "seed",
    "experiment",
    "logger",
    "overwrite",
    "reuse",
    "resume",
    "progress",
    "device",
    "threads",
    "paths.root_dir",
    "paths.output_dir",
    "paths.artifacts_dir",
    "hydra.launcher",
    "hydra/launcher",
    "debug",
    "local",
    "logger.mode",
    "logger.project",
)
RUN_COLUMNS = [
    "experiment",
    "method",
    "seed",
    "variant",
    "overrides",
    "benchmark",
    "scorer_mode",
    "status",
    "error",
    "num_experts",
    "rank",
    "alpha",
    "params_trainable",
    "params_total",
    "params_ratio",
    "params_chatglm6b_ratio",
    "train_seconds",
    "train_step_seconds",
    "eval_seconds",
    "latency_per_example",
    "infer_mode",
    "decoding",
    "trainer",
    "repeat_mode",
    "git_sha",
    "git_dirty",
    "device",
    "total_seconds",
    "reused_from",
    "trained_by",
    "path",
]
# floor / floor_by: the task's floor score and the trivial predictor that gave it
# (results.json → floors, moelora/evaluation/floors.py), in the run's primary scorer mode.
TIDY_COLUMNS = (
    RUN_COLUMNS[:8]
    + ["task", "task_index", "score", "score_compat", "floor", "floor_by"]
    + RUN_COLUMNS[8:]
)


def ignored_keys(conf_dir: Path = CONF_DIR) -> tuple[str, ...]:
    """Override keys that never distinguish runs (hydra's override_dirname exclude_keys)."""
    path = conf_dir / "hydra" / "default.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        keys = OmegaConf.select(OmegaConf.load(path), "job.config.override_dirname.exclude_keys")
        if keys:
            return tuple(str(k) for k in keys)
    return DEFAULT_IGNORED_KEYS


def split_override(item: str) -> tuple[str, str]:
    """``"+a.b=1"`` → ``("a.b", "1")``; whitespace inside the value is removed."""
    key, _, value = item.partition("=")
    return key.lstrip("+~"), "".join(value.split())


def variant_of(overrides: list[str], grid_keys: set[str], ignore: tuple[str, ...]) -> str:
    """The overrides that are neither ignorable nor part of the grid, sorted, comma-joined;
    paths and URLs shortened as in run directory names (``model.path=Qwen2-7B-1a2b3c4d``)."""
    from moelora.harness.naming import safe_item

    kept = sorted(
        safe_item(f"{k}={v}")
        for k, v in map(split_override, overrides)
        if k not in ignore and k not in grid_keys
    )
    return ",".join(kept)


# %% [markdown]
# ## Expected grids (conf/experiment/<name>.yaml, hydra.sweeper.params)


# %%
def grid_params(name: str, conf_dir: Path = CONF_DIR) -> dict[str, list[str]] | None:
    """The sweep of one experiment file: key → list of values (None when no such file)."""
    path = conf_dir / "experiment" / f"{name}.yaml"
    if not path.is_file():
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params") or {}
    parser = OverridesParser.create()
    grid: dict[str, list[str]] = {}
    for key, value in params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [str(override.value())]
        )
        grid[str(key)] = ["".join(v.split()) for v in values]
    return grid


def expected_runs(name: str, conf_dir: Path = CONF_DIR) -> list[dict[str, str]]:
    """Every job of an experiment's grid, as dicts key → value (Cartesian product)."""
    grid = grid_params(name, conf_dir)
    if not grid:
        return []
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


# %% [markdown]
# ## Reading results.json


# %%
def _get(d: dict[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def load_run(path: Path, ignore: tuple[str, ...], grid_cache: dict[str, Any]) -> dict[str, Any]:
    """One run record (RUN_COLUMNS) plus its scores, from one results.json."""
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {
            "status": "unreadable",
            "error": f"{type(e).__name__}: {e}",
            "path": str(path),
            "_scores": {},
            "_compat": {},
            "_tasks": [],
            "_weights": None,
            "_floors": {},
        }
    experiment = str(res.get("experiment", "default"))
    if experiment not in grid_cache:
        grid_cache[experiment] = grid_params(experiment) or {}
    status, error = trusted_status(res, path.parent)
    overrides = [str(o) for o in res.get("overrides") or []]
    hp = res.get("hparams") or {}
    timing = res.get("timing") or {}
    seed = res.get("seed")
    return {
        "experiment": experiment,
        "method": res.get("method"),
        "seed": int(seed) if seed is not None else None,
        "variant": variant_of(overrides, set(grid_cache[experiment]), ignore),
        "overrides": " ".join(
            sorted(
                "=".join(split_override(o)) for o in overrides if split_override(o)[0] not in ignore
            )
        ),
        "benchmark": res.get("benchmark"),
        "scorer_mode": res.get("scorer_mode"),
        "status": status,
        "error": error,
        "num_experts": hp.get("num_experts"),
        "rank": hp.get("rank"),
        "alpha": hp.get("alpha"),
        "params_trainable": _get(res, "params", "trainable"),
        "params_total": _get(res, "params", "total"),
        "params_ratio": _get(res, "params", "ratio"),
        "params_chatglm6b_ratio": _get(res, "params_chatglm6b", "ratio"),
        "train_seconds": timing.get("train_seconds"),
        "train_step_seconds": timing.get("train_step_seconds"),
        "eval_seconds": timing.get("eval_seconds"),
        "latency_per_example": timing.get("latency_per_example"),
        "infer_mode": timing.get("infer_mode"),
        "decoding": res.get("decoding"),
        "trainer": _trainer(res, overrides),
        "repeat_mode": _get(res, "config", "repeat_mode"),
        "git_sha": _get(res, "provenance", "git_sha"),
        "git_dirty": _get(res, "provenance", "git_dirty"),
        "device": _get(res, "provenance", "device"),
        "total_seconds": (
            None
            if timing.get("total_seconds") is None
            else timing["total_seconds"] + (timing.get("previous_attempts_seconds") or 0.0)
        ),
        "reused_from": _get(res, "reused_from", "run_dir"),
        "trained_by": res.get("trained_by"),
        "path": str(path),
        "_scores": res.get("scores") or {},
        "_compat": res.get("scores_compat") or res.get("scores_moelora_compat") or {},
        "_tasks": list(res.get("tasks") or []),
        "_weights": res.get("expert_weights"),
        "_floors": _floors(res),
    }


def trusted_status(res: dict[str, Any], run_dir: Path) -> tuple[str, Any]:
    """(status, error) as the tables may trust them.

    ``success`` only when every score is a finite number and the files the report reads
    (results.json, predictions.jsonl) match the run's manifest (moelora/utils/manifest.py; a
    run from before manifests is taken as it is); else ``invalid`` with the reason.
    ``running`` whose folder lock is free is ``stopped`` (killed or crashed: a rerun resumes
    it); ``interrupted`` (SIGTERM or SIGINT) stays apart from both."""
    from moelora.utils.io import job_is_running, non_finite_keys
    from moelora.utils.manifest import ManifestError, verify_manifest

    status, error = str(res.get("status", "unknown")), res.get("error")
    if status == "running" and not job_is_running(run_dir):
        return "stopped", error or "killed or crashed; rerun the same command to resume it"
    if status != "success":
        return status, error
    bad = non_finite_keys({k: res.get(k) for k in ("scores", "scores_compat", "metrics")})
    if bad:
        return "invalid", (
            f"{run_dir / RESULTS_NAME}: {', '.join(bad[:3])} is NaN or infinite; a diverged run "
            "has no scores: rerun it with a lower trainer.lr (overwrite=true)"
        )
    try:
        verify_manifest(run_dir, only=(RESULTS_NAME, "predictions.jsonl"))
    except ManifestError as e:
        return "invalid", str(e)
    return status, error


def _floors(res: dict[str, Any]) -> dict[str, Any]:
    """results.json's ``floors`` when scored in the run's primary mode (else none)."""
    floors = res.get("floors")
    if not isinstance(floors, dict) or floors.get("mode") != res.get("scorer_mode"):
        return {}
    return floors


def _trainer(res: dict[str, Any], overrides: list[str]) -> str | None:
    """The ``trainer`` config choice (results.json → ``choices``; older runs: the override)."""
    choice = (res.get("choices") or {}).get("trainer")
    if choice:
        return str(choice)
    given = [v for k, v in map(split_override, overrides) if k == "trainer"]
    return given[-1] if given else None


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def collect(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, Any]]]:
    """Read every results.json under ``root``.

    Returns:
        (tidy, runs, weights): ``tidy`` has one row per (run, task) for successful runs
        (``task == "avg"`` for the average) and one row with ``task`` NaN per other run;
        ``runs`` one row per run; ``weights`` the expert-weight matrices of MOELoRA runs.
    """
    ignore = ignored_keys()
    grid_cache: dict[str, Any] = {}
    runs, rows, weights = [], [], []
    for path in sorted(Path(root).rglob(RESULTS_NAME)):
        run = load_run(path, ignore, grid_cache)
        base = {k: run.get(k) for k in RUN_COLUMNS}
        runs.append(base)
        if run["status"] != "success":
            rows.append(
                {
                    **base,
                    "task": None,
                    "task_index": None,
                    "score": math.nan,
                    "score_compat": math.nan,
                    "floor": math.nan,
                    "floor_by": None,
                }
            )
            continue
        tasks = run["_tasks"] or [t for t in run["_scores"] if t != "avg"]
        floor, floor_by = run["_floors"].get("floor") or {}, run["_floors"].get("floor_by") or {}
        for i, task in enumerate([*tasks, "avg"]):
            rows.append(
                {
                    **base,
                    "task": task,
                    "task_index": i if task != "avg" else len(tasks),
                    "score": _num(run["_scores"].get(task)),
                    "score_compat": _num(run["_compat"].get(task)),
                    "floor": _num(floor.get(task)),
                    "floor_by": floor_by.get(task),
                }
            )
        if run["_weights"]:
            weights.append(
                {
                    k: base[k]
                    for k in (
                        "experiment",
                        "method",
                        "seed",
                        "variant",
                        "benchmark",
                        "num_experts",
                        "path",
                    )
                }
                | {"tasks": run["_weights"].get("tasks"), "matrix": run["_weights"].get("matrix")}
            )
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    run_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    sort = ["experiment", "method", "variant", "overrides", "seed"]
    tidy = tidy.sort_values(sort + ["task_index"], na_position="last", kind="stable")
    run_df = run_df.sort_values(sort, na_position="last", kind="stable")
    return tidy.reset_index(drop=True), run_df.reset_index(drop=True), weights


# %% [markdown]
# ## Missing and failed runs


# %%
def missing_runs(run_df: pd.DataFrame, conf_dir: Path = CONF_DIR) -> pd.DataFrame:
    """Grid jobs without a successful results.json, per experiment present in ``run_df``.

    A job matches a run when method, seed and every other grid key agree; every variant
    (other overrides, e.g. ``trainer=smoke``) of an experiment is checked on its own.
    Columns: experiment, variant, job (the overrides), status (``missing`` or the run's status).
    """
    out = []
    for (experiment, variant), group in run_df.groupby(["experiment", "variant"], dropna=False):
        jobs = expected_runs(str(experiment), conf_dir)
        have: dict[frozenset, str] = {}
        for _, r in group.iterrows():
            text = r["overrides"] if isinstance(r["overrides"], str) else ""
            kv = dict(split_override(o) for o in text.split())
            kv.update(method=str(r["method"]), seed=str(r["seed"]))
            have[frozenset(kv.items())] = str(r["status"])
        for job in jobs:
            found = [st for key, st in have.items() if set(job.items()) <= key]
            status = "success" if "success" in found else (found[0] if found else "missing")
            if status != "success":
                out.append(
                    {
                        "experiment": experiment,
                        "variant": variant or "",
                        "job": " ".join(f"{k}={v}" for k, v in job.items()),
                        "status": status,
                    }
                )
        for _, r in group[group["status"] != "success"].iterrows():
            if not jobs:  # no grid file: still list every run that did not succeed
                out.append(
                    {
                        "experiment": experiment,
                        "variant": variant or "",
                        "job": f"method={r['method']} seed={r['seed']}",
                        "status": str(r["status"]),
                    }
                )
    return pd.DataFrame(out, columns=["experiment", "variant", "job", "status"])


def absent_experiments(run_df: pd.DataFrame, conf_dir: Path = CONF_DIR) -> list[str]:
    """Experiment files of conf/experiment/ without a single results.json."""
    names = sorted(p.stem for p in (conf_dir / "experiment").glob("*.yaml"))
    return [n for n in names if n not in set(run_df["experiment"].dropna())]


def missing_markdown(
    missing: pd.DataFrame, run_df: pd.DataFrame, absent: list[str] | None = None
) -> str:
    """reports/missing.md: per-status counts, then one line per missing or failed job."""
    lines = ["# Missing and failed runs", ""]
    counts = run_df["status"].value_counts().to_dict()
    lines.append(
        "Runs found: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none") + "."
    )
    if absent:
        lines.append(f"Experiments not run at all (every job missing): {', '.join(absent)}.")
    lines.append("")
    if missing.empty:
        lines.append("Every job of every experiment grid found has a successful results.json.")
    else:
        lines += ["| experiment | variant | job | status |", "|---|---|---|---|"]
        for _, r in missing.iterrows():
            lines.append(
                f"| {r['experiment']} | {r['variant'] or '–'} | {r['job']} | {r['status']} |"
            )
    failed = run_df[run_df["status"] != "success"]
    if not failed.empty:
        lines += ["", "## Errors", ""]
        for _, r in failed.iterrows():
            lines.append(f"- `{r['path']}`: {r['status']}: {r['error'] or '(no error message)'}")
    return "\n".join(lines) + "\n"


# %% [markdown]
# ## What the grids cost (measured job wall times)


# %%
def cost_frame(run_df: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and variant, from the successful runs' ``timing.total_seconds``.

    ``computed_s`` sums the jobs that ran in this experiment's folders (evaluate-only jobs,
    which reused another run's trained weights, count their evaluation); ``standalone_s`` also
    counts the adopted jobs at their source's measured time, and adds to each job that evaluated
    another run's weights the time that run took to train them (:func:`_training_seconds`): what
    the grid costs when it shares nothing with other grids. A resumed job adds its earlier attempts up to their last saved
    progress (``timing.previous_attempts_seconds``)."""
    ok = run_df[run_df["status"] == "success"].copy()
    ok["adopted"] = ok["reused_from"].notna()
    ok["evaluate_only"] = ok["trained_by"].notna()
    ok["seconds"] = pd.to_numeric(ok["total_seconds"], errors="coerce")
    training = _training_seconds(ok)
    ok["training_s"] = [training(ref) if isinstance(ref, str) else 0.0 for ref in ok["trained_by"]]
    rows = []
    for (experiment, variant), g in ok.groupby(["experiment", "variant"], dropna=False):
        computed = g[~g["adopted"]]
        rows.append(
            {
                "experiment": experiment,
                "variant": variant if isinstance(variant, str) else "",
                "jobs": len(g),
                "computed": len(computed) - int(computed["evaluate_only"].sum()),
                "evaluate_only": int(computed["evaluate_only"].sum()),
                "adopted": int(g["adopted"].sum()),
                "computed_s": float(computed["seconds"].sum()),
                "standalone_s": float(g["seconds"].sum() + g["training_s"].sum(skipna=True)),
                "untimed": int(g["seconds"].isna().sum() + g["training_s"].isna().sum()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "experiment",
            "variant",
            "jobs",
            "computed",
            "evaluate_only",
            "adopted",
            "computed_s",
            "standalone_s",
            "untimed",
        ],
    )


def _training_seconds(ok: pd.DataFrame):
    """``trained_by`` run directory → the seconds that run spent before its evaluation.

    An evaluate-only job (and a job adopted from one) stands on another run's training; its
    standalone cost adds that run's time less its evaluation. A results tree copied to another
    machine keeps the source's absolute paths, so a directory not found as such is matched by
    the longest common tail of path parts (at least experiment/method/seed, and only if unique).
    NaN when the run is not among the successful runs read."""
    dirs = {
        Path(str(p)).parent: (s, _num(e))
        for p, s, e in zip(ok["path"], ok["seconds"], ok["eval_seconds"])
    }

    def tail(a: Path, b: Path) -> int:
        n = 0
        for x, y in zip(reversed(a.parts), reversed(b.parts)):
            if x != y:
                break
            n += 1
        return n

    def seconds(ref: str) -> float:
        ref_dir = Path(ref)
        found = dirs.get(ref_dir)
        if found is None:
            scored = sorted(((tail(ref_dir, d), d) for d in dirs), key=lambda t: -t[0])
            if not scored or scored[0][0] < 3 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
                return math.nan
            found = dirs[scored[0][1]]
        total, evaluation = found
        return float(total) - (0.0 if math.isnan(evaluation) else evaluation)

    return seconds


def cost_markdown(costs: pd.DataFrame) -> str:
    """reports/costs.md: the measured cost of every grid found (see :func:`cost_frame`)."""

    def hours(s: float) -> str:
        return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"

    lines = [
        "# Measured cost of the grids",
        "",
        "Sums of `timing.total_seconds` over successful jobs. *computed*: trained and "
        "evaluated in this experiment's folders; *evaluate-only*: reused another run's final "
        "checkpoint (only inference differs); *adopted*: an identical job of another "
        "experiment, taken over (moelora/harness/reuse.py). *standalone* counts adopted jobs at their "
        "source's time, and adds to an evaluate-only job (or one adopted from it) the time of "
        "the run that trained its weights, less that run's evaluation. A resumed job adds its "
        "earlier attempts up to their last saved progress.",
        "",
        "| experiment | variant | jobs | computed | evaluate-only | adopted | computed time "
        "| standalone time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, r in costs.iterrows():
        lines.append(
            f"| {r['experiment']} | {r['variant'] or '–'} | {r['jobs']} | {r['computed']} "
            f"| {r['evaluate_only']} | {r['adopted']} | {hours(r['computed_s'])} "
            f"| {hours(r['standalone_s'])} |"
        )
    if not costs.empty:
        lines.append(
            f"| **all** | | {int(costs['jobs'].sum())} | {int(costs['computed'].sum())} "
            f"| {int(costs['evaluate_only'].sum())} | {int(costs['adopted'].sum())} "
            f"| {hours(costs['computed_s'].sum())} | |"
        )
    untimed = int(costs["untimed"].sum()) if not costs.empty else 0
    if untimed:
        lines += [
            "",
            f"{untimed} successful job(s), or the runs that trained their weights, "
            "have no recorded time (or were not found under the results root): the "
            "standalone time leaves them out.",
        ]
    return "\n".join(lines) + "\n"


def efficiency_documents(root: Path) -> list[dict[str, Any]]:
    """Every ``efficiency.json`` under ``root`` (experiments/efficiency.py), with its ``source``."""
    docs = []
    for path in sorted(Path(root).rglob("efficiency.json")):
        try:
            docs.append({**json.loads(path.read_text(encoding="utf-8")), "source": str(path)})
        except (OSError, ValueError) as e:
            print(
                f"[collect] {path}: unreadable ({e}); measure again with python -m "
                "experiments.efficiency",
                file=sys.stderr,
            )
    return docs


# %% [markdown]
# ## Main


# %%
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gather every results.json into one table.")
    parser.add_argument("--root", type=Path, default=Path("outputs"), help="results root")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(
            f"[collect] no results folder {args.root}/; run experiments first "
            f"(python run.py experiment=table2) or pass --root",
            file=sys.stderr,
        )
        return 1
    tidy, run_df, weights = collect(args.root)
    if run_df.empty:
        print(
            f"[collect] no {RESULTS_NAME} under {args.root}/; nothing to collect", file=sys.stderr
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    tidy.to_csv(args.out / "results.csv", index=False)
    run_df.to_csv(args.out / "runs.csv", index=False)
    try:
        tidy.to_parquet(args.out / "results.parquet", index=False)
    except (ImportError, ValueError):
        pass
    (args.out / "expert_weights.json").write_text(json.dumps(weights, indent=1), encoding="utf-8")
    missing = missing_runs(run_df)
    absent = absent_experiments(run_df)
    (args.out / "missing.md").write_text(
        missing_markdown(missing, run_df, absent), encoding="utf-8"
    )
    (args.out / "costs.md").write_text(cost_markdown(cost_frame(run_df)), encoding="utf-8")
    measured = efficiency_documents(args.root)
    if measured:
        (args.out / "efficiency.json").write_text(json.dumps(measured, indent=1), encoding="utf-8")
    else:
        (args.out / "efficiency.json").unlink(missing_ok=True)  # stale: not under this root
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(run_df["status"].value_counts().items()))
    print(f"[collect] {len(run_df)} runs ({counts}) → {args.out / 'results.csv'}")
    if not missing.empty:
        print(
            f"[collect] {len(missing)} grid jobs missing or not successful; see "
            f"{args.out / 'missing.md'}"
        )
    if absent:
        print(f"[collect] experiments not run at all: {', '.join(absent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
