"""Answer PromptCBLUE records of any mix of tasks with a finished run.

    python -m moelora.inference.predict RUN_DIR --input FILE.jsonl --out PRED.jsonl \\
        [--strategy mixed|grouped_merged|grouped_unmerged] [--decoding greedy|sample] \\
        [--max-new-tokens N] [--batch-size B] [--seed S] [--device auto|cpu|cuda] [--scores S.json]

In Python: ``predict(run_dir_or_loaded_run, records, strategy=...)``. The run is rebuilt by
moelora.inference.load.load_run (any trained method). Records are batched in order of prompt length and
returned in input order, with ``target`` replaced by the generated answer (the
``predictions.jsonl`` format of run.py). Decoding follows the run's own settings (``decoding``,
``trainer.eval.*``, its seed) unless overridden. When every input record has a gold
``target``, the predictions are scored with the official PromptCBLUE scorer.

Strategies (the serving paths of docs/methods.md §9; all three give the same greedy answers):

* ``mixed``: unmerged, one length-sorted batch stream over all tasks. For MOELoRA each row reads
  its own task's expert weights (one forward of total rank r per layer); for one adapter per
  task (LoRA (Single)) peft's ``adapter_names`` splits every batch by adapter in every layer.
* ``grouped_merged``: one task at a time, that task's weights merged into the base (Eq. 8).
* ``grouped_unmerged``: one task at a time, adapter path on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moelora.data.encoding import load_split
from moelora.engine.generation import generate_predictions
from moelora.inference.load import LoadedRun, load_run
from moelora.utils.io import write_json, write_jsonl

STRATEGIES = ("mixed", "grouped_merged", "grouped_unmerged")


@dataclass
class Prediction:
    """What :func:`predict` returns.

    Attributes:
        predictions: the input records, in input order, ``target`` = the generated answer.
        strategy: the strategy that ran.
        decoding: the decoding settings used (DecodingSettings fields).
        seconds: generation wall time (merging excluded).
        merge_seconds: time spent merging task weights (``grouped_merged``).
        scores: official scores per task and ``avg`` (None when the input has no gold).
    """

    predictions: list[dict[str, Any]]
    strategy: str
    decoding: dict[str, Any]
    seconds: float
    merge_seconds: float = 0.0
    scores: dict[str, float | None] | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "n": len(self.predictions),
            "decoding": self.decoding,
            "seconds": self.seconds,
            "merge_seconds": self.merge_seconds,
            "latency_per_example": self.seconds / max(1, len(self.predictions)),
            "scores": self.scores,
            "notes": self.notes,
        }


def predict(
    run: LoadedRun | str | Path,
    records: Sequence[dict[str, Any]],
    *,
    strategy: str = "mixed",
    seed: int | None = None,
    progress: bool = False,
    score: bool = True,
    **decoding: Any,
) -> Prediction:
    """Generate an answer for every record with a finished run.

    Args:
        run: a run directory or a run rebuilt by :func:`moelora.inference.load.load_run`.
        records: PromptCBLUE records (``input``, ``task_dataset``, ``sample_id``; ``target``
            the gold answer or empty), of the run's tasks, in any mix.
        strategy: ``mixed`` | ``grouped_merged`` | ``grouped_unmerged``.
        seed: decoding seed (default: the run's seed).
        progress: a progress bar.
        score: score with the official scorer when every record has a gold ``target``.
        **decoding: overrides of the run's DecodingSettings (``mode``, ``max_new_tokens``,
            ``batch_size``, ``temperature``, ``top_p``, ``top_k``, ``min_new_tokens``).

    Raises:
        ValueError: an unknown strategy, a task the run was not trained for, or
            ``grouped_merged`` for a model that cannot be merged (MoLoRA).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; use one of {', '.join(STRATEGIES)}")
    run = run if isinstance(run, LoadedRun) else load_run(run)
    records = list(records)
    if not records:
        raise ValueError("no records to answer")
    if unknown := sorted({r["task_dataset"] for r in records} - set(run.task_map.tasks)):
        raise ValueError(
            f"tasks {unknown} are not tasks of the run {run.run_dir} "
            f"(it was trained for {run.task_map.tasks})"
        )
    if strategy == "grouped_merged" and not run.mergeable:
        raise ValueError(
            f"{run.method} cannot be merged per task (its expert weights depend on "
            "the input); use strategy mixed or grouped_unmerged"
        )
    settings = run.decoding(**decoding)
    seed = int(run.config.seed) if seed is None and run.config is not None else int(seed or 0)
    gen = generate_predictions(
        run.model,
        run.encoder(),
        run.prepare_inputs(records),
        decoding=settings,
        seed=seed,
        group_by_task=strategy != "mixed",
        merge=strategy == "grouped_merged",
        device=run.device,
        progress=progress,
        task_scope=run.task_scope,
        batch_kwargs=run.batch_kwargs if strategy == "mixed" else None,
    )
    predictions = [{**r, "target": p["target"]} for r, p in zip(records, gen.predictions)]
    out = Prediction(predictions, strategy, asdict(settings), gen.seconds, gen.merge_seconds)
    if settings.mode == "sample" and strategy != "mixed":
        out.notes.append(
            "sampled decoding: the random draws depend on the batches, so the "
            "strategies agree only in distribution (use --decoding greedy to compare)"
        )
    gold = [r for r in records if r.get("target")]
    if score and len(gold) == len(records):
        from moelora.evaluation import score_records

        present = [t for t in run.task_map.tasks if any(r["task_dataset"] == t for r in records)]
        out.scores = score_records(records, predictions, mode="official", tasks=present).scores
    elif score and gold:
        out.notes.append(
            f"{len(records) - len(gold)} of {len(records)} records have no gold target: not scored"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m moelora.inference.predict", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="a finished run directory (written by run.py)")
    parser.add_argument("--input", type=Path, required=True, help="PromptCBLUE JSON Lines")
    parser.add_argument("--out", type=Path, required=True, help="predictions (JSON Lines)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="mixed")
    parser.add_argument(
        "--decoding",
        dest="mode",
        choices=("sample", "greedy"),
        default=None,
        help="default: the run's",
    )
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--scores", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run_dir, device=args.device)
        records = load_split(args.input, run.task_map, require_target=False)
        result = predict(
            run,
            records,
            strategy=args.strategy,
            seed=args.seed,
            progress=True,
            mode=args.mode,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
        )
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"[predict] error: {e}", file=sys.stderr)
        return 2
    write_jsonl(args.out, result.predictions)
    summary = {
        "run_dir": str(args.run_dir),
        "method": run.method,
        "input": str(args.input),
        "out": str(args.out),
        **result.summary(),
    }
    if args.scores is not None:
        write_json(args.scores, summary)
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
