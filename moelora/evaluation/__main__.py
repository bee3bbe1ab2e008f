"""``python -m moelora.evaluation --gold GOLD.jsonl --pred PRED.jsonl [--mode ...] [--tasks ...]
[--out scores.json] [--detail]``: prints one JSON object of scores (0–1 scale).

Exit status 0 on success, 2 on an input problem (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from moelora.evaluation.api import score_files
from moelora.evaluation.errors import ScoringError
from moelora.evaluation.registry import ALL_TASKS, MODES
from moelora.utils.io import write_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m moelora.evaluation",
        description="Score PromptCBLUE predictions (JSON Lines; `target` = generated text) "
        "against gold JSON Lines, matched by sample_id.",
    )
    p.add_argument("--gold", required=True, help="gold PromptCBLUE JSON Lines file")
    p.add_argument("--pred", required=True, help="prediction JSON Lines file")
    p.add_argument(
        "--mode",
        choices=MODES,
        default="official",
        help="official (PromptCBLUE scorer, default) or moelora_compat (authors')",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        metavar="TASK",
        help=f"tasks to score (space or comma separated; default: all in the gold). "
        f"Known: {', '.join(ALL_TASKS)}",
    )
    p.add_argument("--out", help="also write the JSON object to this file")
    p.add_argument(
        "--detail",
        action="store_true",
        help="add precision, recall and the Rouge variants per task",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tasks = None
    if args.tasks:
        tasks = [t.strip() for item in args.tasks for t in item.split(",") if t.strip()]
    try:
        report = score_files(args.gold, args.pred, mode=args.mode, tasks=tasks)
    except ScoringError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = report.to_dict(detail=args.detail)
    if args.out:
        write_json(args.out, out)
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
