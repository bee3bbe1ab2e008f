"""The jobs of the paper's grids as one schedule: each job, what it waits for, where it lands.

``build_jobs(names, extra, results)`` lists every job of the selected grids
(conf/experiment/<name>.yaml → ``hydra.sweeper.params``, the jobs analysis.collect.expected_runs
lists; an extra override of a grid key, e.g. ``seed=42``, replaces that key's values as it does
for ``python run.py experiment=<name> seed=42``). Each job composes its config and takes its
fingerprints (moelora.harness.identity: the whole job, and the training alone), so the schedule knows:

* its state, as ``--plan`` counts it: ``done`` (a finished run of this job in this experiment),
  ``adopt`` (an identical job finished or planned earlier elsewhere), ``evaluate`` (a job that
  trains the same weights finished or planned earlier: only inference differs) or ``train``;
* what it waits for (``after``): a composition method (its YAML says ``inputs: {method: …}``)
  waits for its input method's jobs of the same experiment and grid point (seed included); a job
  whose identical or training twin is planned earlier (and not finished yet) waits for that
  twin, so it adopts the twin's results or evaluates its weights instead of training again;
* its command, ``python run.py -m experiment=<name> <every grid key>=<value> <extra>``: a
  one-job multirun, which Hydra places in the grid's sweep folder exactly as the grid's own
  multirun would (the job's override list is the same), and :func:`run_dir` names that folder.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
STATES = ("done", "adopt", "evaluate", "train")


@dataclass
class Job:
    """One grid job of the schedule."""

    index: int
    experiment: str
    values: dict[str, str]  # grid key → value (method and seed included)
    extra: list[str]  # overrides given for every job
    state: str = "train"  # one of STATES
    fingerprint: str = ""
    trained: str = ""
    after: list[int] = field(default_factory=list)  # jobs to finish first
    inputs: list[int] = field(default_factory=list)  # the subset this job composes: it needs them
    config: Any = field(default=None, repr=False)  # the composed config (DictConfig)

    @property
    def method(self) -> str:
        return self.values["method"]

    def overrides(self) -> list[str]:
        return [
            f"experiment={self.experiment}",
            *(f"{k}={v}" for k, v in self.values.items()),
            *self.extra,
        ]

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, str(ROOT / "run.py"), "-m", *self.overrides()]

    def label(self) -> str:
        return f"{self.experiment} " + " ".join(f"{k}={v}" for k, v in self.values.items())


def sweep_params(name: str) -> dict[str, str]:
    """The raw ``hydra.sweeper.params`` of conf/experiment/<name>.yaml."""
    cfg = OmegaConf.load(CONF / "experiment" / f"{name}.yaml")
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return {str(k): str(v) for k, v in params.items()}


def input_method(method: str) -> str | None:
    """The method a composition method composes (its YAML's ``inputs.method``), or None."""
    path = CONF / "method" / f"{method}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.select(OmegaConf.load(path), "inputs.method")


def _values(override: str) -> tuple[str, list[str]]:
    """``k=a,b`` → (k, [a, b]) as Hydra's sweeper expands it (whitespace removed)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([override])
    values = (
        list(parsed.sweep_string_iterator())
        if parsed.is_sweep_override()
        else [parsed.get_value_element_as_str()]
    )
    return parsed.get_key_element(), ["".join(v.split()) for v in values]


def grid_jobs(name: str, extra: list[str]) -> tuple[list[dict[str, str]], list[str]]:
    """(the grid's jobs as key → value, the extra overrides that are not grid keys).

    An extra override of a grid key replaces that key's values; one that sweeps another key
    (``k=a,b``) adds it to the grid: the jobs are those ``python run.py -m experiment=<name>
    <extra>`` would run."""
    import itertools

    from analysis.collect import grid_params

    grid = grid_params(name) or {}
    rest = []
    for override in extra:
        key, values = _values(override)
        if key in grid or len(values) > 1:
            grid[key] = values
        else:
            rest.append(override)
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))], rest


def _inputs_first(jobs: list[dict[str, str]]) -> list[dict[str, str]]:
    """The jobs of a grid with every composition method's input method first (stable); an
    input job missing from the grid (``method=task_arithmetic`` alone) is added, as the grid
    multiruns of ``--jobs 1`` add it."""
    jobs = list(jobs)
    for job in list(jobs):
        source = input_method(job["method"])
        if source and {**job, "method": source} not in jobs:
            jobs.append({**job, "method": source})
    needed = {input_method(j["method"]) for j in jobs} - {None}
    return sorted(jobs, key=lambda j: j["method"] not in needed)


def build_jobs(names: list[str], extra: list[str], results: Path) -> list[Job]:
    """Every job of the grids ``names`` (in that order), with states and dependencies."""
    from hydra import compose, initialize_config_dir

    from moelora.harness.recipe import resolve_auto_switches
    from moelora.harness.results import redact
    from moelora.harness.reuse import finished_runs, job_fingerprint

    done_jobs: dict[str, set[str]] = {}  # fingerprint → experiments that hold it finished
    done_trainings: set[str] = set()
    for _, res in finished_runs(results):
        done_jobs.setdefault(job_fingerprint(res["config"]), set()).add(str(res.get("experiment")))
        done_trainings.add(job_fingerprint(res["config"], training_only=True))
    planned_jobs: dict[str, int] = {}  # fingerprint → first job planned with it
    planned_trainings: dict[str, int] = {}
    jobs: list[Job] = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            values_list, rest = grid_jobs(name, extra)
            grid_start = len(jobs)
            for values in _inputs_first(values_list):
                job = Job(len(jobs), name, values, rest)
                job.config = compose("config", job.overrides())
                resolved = copy.deepcopy(job.config)
                resolve_auto_switches(resolved)  # as the runner does before its identity
                cfg = redact(OmegaConf.to_container(resolved, resolve=True))
                job.fingerprint = job_fingerprint(cfg)
                job.trained = job_fingerprint(cfg, training_only=True)
                reuse = cfg.get("reuse", True) and not cfg.get("overwrite")
                if name in done_jobs.get(job.fingerprint, ()):
                    job.state = "done"
                elif reuse and job.fingerprint in done_jobs:
                    job.state = "adopt"
                elif reuse and job.fingerprint in planned_jobs:
                    job.state, job.after = "adopt", [planned_jobs[job.fingerprint]]
                elif reuse and job.trained in done_trainings:
                    job.state = "evaluate"
                elif reuse and job.trained in planned_trainings:
                    job.state, job.after = "evaluate", [planned_trainings[job.trained]]
                source = input_method(job.method)
                if source and job.state != "done":
                    job.inputs = [
                        j.index
                        for j in jobs[grid_start:]
                        if j.method == source and _same_point(j.values, values)
                    ]
                    job.after = sorted(set(job.after) | set(job.inputs))
                planned_jobs.setdefault(job.fingerprint, job.index)
                planned_trainings.setdefault(job.trained, job.index)
                jobs.append(job)
    return jobs


def _same_point(a: dict[str, str], b: dict[str, str]) -> bool:
    """Same grid point (seed and every other key) but the method."""
    return {k: v for k, v in a.items() if k != "method"} == {
        k: v for k, v in b.items() if k != "method"
    }


def count_states(jobs: list[Job], names: list[str]) -> list[dict[str, object]]:
    """Per experiment: jobs, and how many are done / to adopt / to evaluate / to train."""
    rows = []
    for name in names:
        row: dict[str, object] = {"experiment": name, "jobs": 0, **{s: 0 for s in STATES}}
        for job in jobs:
            if job.experiment == name:
                row["jobs"] = int(row["jobs"]) + 1
                row[job.state] = int(row[job.state]) + 1
        rows.append(row)
    return rows


def start_order(jobs: list[Job]) -> list[Job]:
    """The order in which ready jobs start: cheap checks of finished jobs first, then the
    trainings (those that other jobs wait for first), then evaluate-only jobs, then adoptions;
    schedule order within each. Long jobs first keeps the workers busy to the end."""
    waited_for = {i for job in jobs for i in job.after}
    rank = {"done": 0, "train": 1, "evaluate": 2, "adopt": 3}
    return sorted(jobs, key=lambda j: (rank[j.state], j.index not in waited_for, j.index))


def run_dir(job: Job, output_dir: Path) -> Path:
    """The folder the job writes: conf/hydra/default.yaml's sweep dir and subdir
    (``<output_dir>/<experiment>/<method>/<override dirname>/seed=<seed>``) for the override
    list Hydra's basic sweeper gives this one-job multirun."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from moelora.harness.naming import run_dirname

    params = [f"{k}={v}" for k, v in sweep_params(job.experiment).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *job.overrides()])
    [[task]] = BasicSweeper.split_arguments(parsed, None)
    settings = OmegaConf.select(
        OmegaConf.load(CONF / "hydra" / "default.yaml"), "job.config.override_dirname"
    )
    name = run_dirname(task, settings)
    method_dir = Path(output_dir) / job.experiment / job.method
    return (method_dir / name if name else method_dir) / f"seed={job.values['seed']}"


def prepare_inputs(jobs: list[Job]) -> None:
    """Build the embedded benchmark and base once for all jobs (moelora.harness.inputs: only where the
    defaults point, cached), before any two jobs could build them at the same time."""
    from moelora.harness.inputs import check_input_paths
    from moelora.harness.inputs import prepare_inputs as prepare

    seen = set()
    for job in jobs:
        cfg = job.config
        key = (str(cfg.data.root), str(cfg.model.get("path")))
        if key not in seen:
            seen.add(key)
            check_input_paths(cfg)
            prepare(cfg)
