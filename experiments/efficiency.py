"""Fig. 5 measured under control (#17): training step time, generation latency and peak memory of
every method of the Fig. 5 grid, rebuilt from its saved adapter and measured in one process.

    python -m experiments.efficiency --results outputs [--experiment fig5_efficiency]
        [--out FILE] [--repeats 7] [--steps 3] [--per-task 4] [--new-tokens 16] [--threads 1]
    python -m experiments.efficiency --compare FIRST.json SECOND.json   # a rerun's stability

For each (benchmark, variant) of the experiment's successful runs, one run per method is
rebuilt (moelora.inference.load.load_run; the run that trained, lowest seed; the others, e.g. its
evaluate-only ``trained_by`` twins, are listed under ``stands_for``). Then, ``--repeats``
times, with the method order reversed every other repetition (moelora.utils.measure.alternating):

* training step time: the shared loop (moelora.engine.train.train) on the run's own training data,
  batches drawn by the run's own sampler, the run's batch size and optimiser settings;
  ``--steps`` timed steps per call (the first step of a call, which creates the optimiser
  state, is not timed); the adapter is restored afterwards;
* generation latency per example on a fixed sample of the test split (the first
  ``--per-task`` examples of each task), greedy, exactly ``--new-tokens`` new tokens (EOS
  ignored), the run's eval batch size, for each inference path the method allows
  (moelora.inference.predict strategies: ``grouped_merged`` = merged per task (Eq. 8), the one-off merge
  time apart; ``grouped_unmerged``; ``mixed`` = unmerged, batches mixing tasks).

Peak memory (moelora.utils.measure.peak_memory) of one training step, and the parameter bytes of each
model (on CUDA also the peak allocated while generating). A warm-up round comes first. Every
raw repetition goes to one JSON (default ``<results>/<experiment>/efficiency.json``), with the
device, threads and versions, and the ratios to LoRA (Full) computed within each repetition;
``analysis.collect`` copies it to the reports and Fig. 5 plots it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "lora_full"  # Fig. 5's ratios are against LoRA (Full)
STRATEGIES = ("grouped_merged", "grouped_unmerged", "mixed")


def find_runs(results: Path, experiment: str) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(benchmark, variant) → method → the run to rebuild and the runs it stands for."""
    from analysis.collect import collect

    _, runs, _ = collect(results)
    ok = runs[(runs["experiment"] == experiment) & (runs["status"] == "success")]
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for (bench, variant, method), grp in ok.groupby(
        ["benchmark", "variant", "method"], dropna=False
    ):
        grp = grp.assign(evaluate_only=grp["trained_by"].notna()).sort_values(
            ["evaluate_only", "seed"]
        )
        first = grp.iloc[0]
        out.setdefault((str(bench), "" if variant != variant else str(variant)), {})[method] = {
            "run_dir": str(Path(first["path"]).parent),
            "seed": int(first["seed"]),
            "stands_for": [str(Path(p).parent) for p in grp["path"]],
        }
    return out


def _test_sample(run: Any, per_task: int) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    sample = []
    for r in run.splits()["test"]:
        if seen.get(r["task_dataset"], 0) < per_task:
            sample.append(r)
            seen[r["task_dataset"]] = seen.get(r["task_dataset"], 0) + 1
    return sample


class Subject:
    """One method's rebuilt run with its measurement closures."""

    def __init__(
        self,
        method: str,
        entry: dict[str, Any],
        *,
        accelerator: Any,
        steps: int,
        per_task: int,
        new_tokens: int,
    ) -> None:
        from moelora.inference.load import load_run

        self.method, self.entry = method, entry
        self.run = load_run(entry["run_dir"], device=accelerator.device)
        self.accelerator, self.steps, self.new_tokens = accelerator, steps, new_tokens
        self.ctx = self.run.context(accelerator)
        self.encoder = self.run.encoder()
        train = self.run.prepare_inputs(self.run.splits()["train"])
        stream = iter(self.ctx.sampler(self.encoder, train))
        self.train_records = [train[i] for _ in range(steps + 1) for i in next(stream)]
        self.sample = _test_sample(self.run, per_task)
        self.params = [p for p in self.run.model.parameters() if p.requires_grad]
        self.initial = [p.detach().clone() for p in self.params]
        self.strategies = [s for s in STRATEGIES if s != "grouped_merged" or self.run.mergeable]

    def train(self, steps: int) -> list[float]:
        """``steps`` + 1 optimiser steps of the shared loop; the durations of the last ``steps``
        (the first creates the optimiser state)."""
        stamps = self.loop(steps + 1)
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def loop(self, max_steps: int, *, one_micro_batch: bool = False) -> list[float]:
        """Run the shared training loop for ``max_steps`` steps from the saved adapter, then put
        the saved adapter back; returns the clock after every step. ``one_micro_batch``: the
        whole step as one micro-batch (``length_groups=1``, no accumulation), so that every
        activation of the step is alive at once (the memory measurement)."""
        from moelora.engine.train import train
        from moelora.utils.measure import sync

        stamps: list[float] = []

        def on_step(step: int, _model: Any) -> None:
            sync(self.accelerator.device)
            stamps.append(time.perf_counter())

        settings = replace(
            self.ctx.train_settings(max_steps=max_steps),
            save_every=0,
            progress=False,
            log_every=10**9,
        )
        if one_micro_batch:
            settings = replace(settings, length_groups=1, grad_accum=1)
        model = self.run.model
        try:
            train(
                model,
                self.encoder,
                self.train_records,
                settings=settings,
                sampler=self.ctx.sampler(self.encoder, self.train_records),
                accelerator=self.accelerator,
                ckpt_dir=None,
                adapter_meta={},
                on_step=on_step,
            )
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, self.initial):
                    p.copy_(value)
            # accelerate wraps forward in autocast on every prepare(); undo it, or the wraps nest
            model.__dict__.pop("forward", None)
            model.__dict__.pop("_original_forward", None)
            model.eval()
        return stamps

    def generate(self, strategy: str) -> tuple[float, float, int | None]:
        """(seconds per example, merge seconds, CUDA peak bytes or None) of one pass."""
        from moelora.inference.predict import predict

        device = self.accelerator.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        out = predict(
            self.run,
            self.sample,
            strategy=strategy,
            score=False,
            mode="greedy",
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
        )
        peak = (
            int(torch.cuda.max_memory_allocated(device) - before) if device.type == "cuda" else None
        )
        return out.seconds / len(self.sample), out.merge_seconds, peak


def _ratios(methods: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: its value / LoRA (Full)'s, within each repetition, as median and min–max."""
    from moelora.utils.measure import spread

    ref = methods.get(REFERENCE)
    if ref is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for method, m in methods.items():
        r: dict[str, Any] = {}
        pairs = zip(m["train_step_seconds"], ref["train_step_seconds"])
        r["train_step_seconds"] = spread([_median(a) / _median(b) for a, b in pairs])
        for s in STRATEGIES:
            if s in m["latency"] and s in ref["latency"]:
                pairs = zip(m["latency"][s], ref["latency"][s])
                r[f"latency_{s}"] = spread([a / b for a, b in pairs])
        r["train_peak_bytes"] = m["train_peak_bytes"] / ref["train_peak_bytes"]
        r["parameter_bytes"] = m["parameter_bytes"] / ref["parameter_bytes"]
        out[method] = r
    return out


def _median(values: list[float]) -> float:
    import statistics

    return float(statistics.median(values))


def measure_group(
    entries: dict[str, dict[str, Any]],
    *,
    accelerator: Any,
    repeats: int,
    steps: int,
    per_task: int,
    new_tokens: int,
) -> dict[str, Any]:
    """Every method of one (benchmark, variant), interleaved; raw repetitions and ratios."""
    from moelora.harness.results import parameter_summary
    from moelora.utils.measure import alternating, peak_memory, spread

    subjects = {
        m: Subject(
            m, e, accelerator=accelerator, steps=steps, per_task=per_task, new_tokens=new_tokens
        )
        for m, e in sorted(entries.items())
    }
    names = list(subjects)
    out: dict[str, dict[str, Any]] = {}
    for name, s in subjects.items():
        out[name] = {
            **s.entry,
            "mergeable": s.run.mergeable,
            "strategies": s.strategies,
            "params": parameter_summary(s.run.model),
            "parameter_bytes": int(
                sum(p.numel() * p.element_size() for p in s.run.model.parameters())
            ),
            "train_batch_size": len(s.train_records) // (steps + 1),
            "test_examples": len(s.sample),
            # one micro-batch: with several, a later one's activations may reuse
            # the freed addresses of an earlier one's (moelora.utils.measure.peak_memory)
            "train_peak_bytes": peak_memory(
                lambda s=s: s.loop(1, one_micro_batch=True), s.params, accelerator.device
            ),
            "train_step_seconds": [],
            "latency": {k: [] for k in s.strategies},
            "merge_seconds": [],
            "generate_peak_bytes": None,
        }
    for name in names:  # warm-up, not recorded
        subjects[name].train(1)
        for strategy in subjects[name].strategies:
            subjects[name].generate(strategy)
    orders = []
    for _, order in alternating(names, repeats):
        orders.append(order)
        for name in order:
            out[name]["train_step_seconds"].append(subjects[name].train(steps))
        for name in order:
            for strategy in subjects[name].strategies:
                latency, merge_s, peak = subjects[name].generate(strategy)
                out[name]["latency"][strategy].append(latency)
                if strategy == "grouped_merged":
                    out[name]["merge_seconds"].append(merge_s)
                if peak is not None:
                    out[name]["generate_peak_bytes"] = max(
                        peak, out[name]["generate_peak_bytes"] or 0
                    )
    for m in out.values():
        m["summary"] = {
            "train_step_seconds": spread([_median(r) for r in m["train_step_seconds"]]),
            **{f"latency_{k}": spread(v) for k, v in m["latency"].items()},
        }
        if m["merge_seconds"]:
            m["summary"]["merge_seconds"] = spread(m["merge_seconds"])
    return {"orders": orders, "methods": out, "ratios": _ratios(out)}


def compare(first: dict[str, Any], second: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """Rerun stability: every ratio of ``second`` against ``first``'s min–max spread (and
    back). Returns ``(group, method, ratio, within)`` rows."""

    def ratios(doc: dict[str, Any]) -> dict[tuple[str, str, str], Any]:
        return {
            (f"{g['benchmark']} {g.get('variant') or ''}".strip(), m, k): v
            for g in doc["groups"]
            for m, r in g["ratios"].items()
            for k, v in r.items()
        }

    a, b = ratios(first), ratios(second)
    rows = []
    for key in sorted(a.keys() & b.keys()):
        x, y = a[key], b[key]
        if isinstance(x, dict):
            within = (x["min"] <= y["median"] <= x["max"]) and (y["min"] <= x["median"] <= y["max"])
        else:
            within = abs(x - y) <= 1e-9 + 0.02 * abs(x)  # memory: one deterministic value
        rows.append((*key, within))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("FIRST", "SECOND"),
        help="check that no ratio of a rerun moved beyond the other's min–max",
    )
    parser.add_argument("--results", type=Path, default=Path("outputs"), help="results root")
    parser.add_argument("--experiment", default="fig5_efficiency")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: <results>/<experiment>/efficiency.json"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per call")
    parser.add_argument("--per-task", type=int, default=4, help="test examples per task")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.compare:
        from moelora.utils.io import read_json

        rows = compare(*(read_json(p) for p in args.compare))
        for group, method, key, within in rows:
            print(f"{'ok   ' if within else 'MOVED'} {group} {method} {key}")
        moved = sum(not r[3] for r in rows)
        print(
            f"[efficiency] {len(rows) - moved} of {len(rows)} ratios within the other run's "
            f"min–max" + (f"; {moved} moved" if moved else "")
        )
        return 1 if moved else 0
    from accelerate import Accelerator

    from moelora.harness.results import provenance
    from moelora.utils.io import write_json

    groups = find_runs(args.results, args.experiment)
    if not groups:
        print(
            f"[efficiency] no successful {args.experiment} runs under {args.results}/; run "
            f"python run.py experiment={args.experiment} first",
            file=sys.stderr,
        )
        return 1
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if not cuda:
        torch.set_num_threads(args.threads)
    from moelora.engine.distributed import precision as mixed_precision
    from moelora.inference.load import read_run_config

    first = next(iter(next(iter(groups.values())).values()))["run_dir"]
    precision = (read_run_config(first) or {}).get("trainer", {}).get("precision", "no")
    accelerator = Accelerator(
        cpu=not cuda, mixed_precision=mixed_precision(precision) if cuda else "no"
    )
    device = accelerator.device
    prov = provenance(ROOT, str(device))
    result: dict[str, Any] = {
        "measurement": "experiments/efficiency.py",
        "experiment": args.experiment,
        "results": str(args.results),
        "created_at": time.time(),
        "device": str(device),
        "gpu": prov["gpu"],
        "threads": torch.get_num_threads(),
        "versions": prov["versions"],
        "git_sha": prov["git_sha"],
        "git_dirty": prov["git_dirty"],
        "platform": prov["platform"],
        "settings": {
            "repeats": args.repeats,
            "steps_per_repeat": args.steps,
            "per_task": args.per_task,
            "new_tokens": args.new_tokens,
            "decoding": "greedy, fixed length (EOS ignored)",
            "reference": REFERENCE,
        },
        "groups": [],
    }
    t0 = time.perf_counter()
    for (bench, variant), entries in sorted(groups.items()):
        print(
            f"[efficiency] {bench} {variant or '(no variant)'}: {', '.join(sorted(entries))}",
            flush=True,
        )
        measured = measure_group(
            entries,
            accelerator=accelerator,
            repeats=args.repeats,
            steps=args.steps,
            per_task=args.per_task,
            new_tokens=args.new_tokens,
        )
        result["groups"].append({"benchmark": bench, "variant": variant, **measured})
        for method, r in measured["ratios"].items():
            text = ", ".join(
                f"{k} {v['median']:.3f}x ({v['min']:.3f}–{v['max']:.3f})"
                if isinstance(v, dict)
                else f"{k} {v:.3f}x"
                for k, v in r.items()
            )
            print(f"  {method} / {REFERENCE}: {text}")
    result["seconds"] = time.perf_counter() - t0
    out = args.out or args.results / args.experiment / "efficiency.json"
    write_json(out, result)
    print(f"[efficiency] {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
