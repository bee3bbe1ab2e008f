"""Turn the public PromptCBLUE (v0.1) release into the paper's split (Table 1).

    python -m moelora.data.promptcblue --src /data/PromptCBLUE --out /data/promptcblue_paper

Keeps the paper's 8 tasks, removes duplicate samples (same task, input and target; the first
occurrence wins), uses the public dev set as the test set, and carves a validation set of the
test set's size per task out of train (seeded). Prints the per-task counts next to Table 1's.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from moelora.method.tasks import PAPER_TASKS
from moelora.utils.io import read_jsonl, write_json, write_jsonl

# Table 1 of the paper: (train, validation, test) per task.
TABLE1: dict[str, tuple[int, int, int]] = {
    "CMeIE": (2828, 600, 600),
    "CHIP-CDN": (2381, 600, 600),
    "CHIP-CDEE": (1562, 600, 600),
    "CHIP-MDCFNPC": (4935, 600, 600),
    "CHIP-CTC": (3622, 1100, 1100),
    "KUAKE-QIC": (3279, 660, 660),
    "IMCS-V2-MRG": (1799, 600, 600),
    "MedDG": (4964, 600, 600),
}


def _find(src: Path, stem: str) -> Path:
    for name in (f"{stem}.json", f"{stem}.jsonl"):
        if (src / name).is_file():
            return src / name
    raise FileNotFoundError(
        f"{src}: no {stem}.json or {stem}.jsonl; point --src at the PromptCBLUE folder"
    )


def dedupe(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for r in records:
        key = (r["task_dataset"], r["input"], r["target"])
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return kept, len(records) - len(kept)


def prepare(
    src: Path, out: Path, *, seed: int = 42, tasks: tuple[str, ...] = PAPER_TASKS
) -> dict[str, Any]:
    """Write out/{train,dev,test}.jsonl and out/meta.json; returns the counts."""
    train_all = [r for r in read_jsonl(_find(src, "train")) if r.get("task_dataset") in tasks]
    test_all = [r for r in read_jsonl(_find(src, "dev")) if r.get("task_dataset") in tasks]
    if not test_all:
        raise ValueError(f"{src}: the dev file has none of the tasks {list(tasks)}")
    train_all, dup_train = dedupe(train_all)
    test_all, dup_test = dedupe(test_all)
    test_inputs = {(r["task_dataset"], r["input"]) for r in test_all}
    leaked = [r for r in train_all if (r["task_dataset"], r["input"]) in test_inputs]
    train_all = [r for r in train_all if (r["task_dataset"], r["input"]) not in test_inputs]
    rng = random.Random(seed)
    train, dev, counts = [], [], {}
    for task in tasks:
        pool = [r for r in train_all if r["task_dataset"] == task]
        n_test = sum(r["task_dataset"] == task for r in test_all)
        order = list(range(len(pool)))
        rng.shuffle(order)
        val_idx = set(order[: min(n_test, len(pool) // 2)])
        dev += [r for i, r in enumerate(pool) if i in val_idx]
        train += [r for i, r in enumerate(pool) if i not in val_idx]
        counts[task] = [len(pool) - len(val_idx), len(val_idx), n_test]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "dev.jsonl", dev)
    write_jsonl(out / "test.jsonl", test_all)
    meta = {
        "source": str(src),
        "seed": seed,
        "tasks": list(tasks),
        "counts": counts,
        "duplicates_removed": {"train": dup_train, "test": dup_test},
        "train_removed_overlapping_test": len(leaked),
        "table1": TABLE1,
    }
    write_json(out / "meta.json", meta)
    return meta


def format_counts(counts: dict[str, list[int]]) -> str:
    lines = [
        f"{'task':<14}{'train':>8}{'(paper)':>9}{'valid':>8}{'(paper)':>9}{'test':>8}{'(paper)':>9}"
    ]
    for task, (tr, va, te) in counts.items():
        ptr, pva, pte = TABLE1.get(task, (0, 0, 0))
        lines.append(f"{task:<14}{tr:>8}{ptr:>9}{va:>8}{pva:>9}{te:>8}{pte:>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--src", type=Path, required=True, help="folder with train.json and dev.json"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        meta = prepare(args.src, args.out, seed=args.seed)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_counts(meta["counts"]))
    print(f"duplicates removed: {meta['duplicates_removed']}; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
