# %% [markdown]
# # How much of a score's spread is the decoding's
# A run's test scores depend on its training (init, data order, dropout: all drawn from the
# run's seed) and on its decoding: the paper samples answers (T = 0.95, top-p 0.7, methods.md
# §1.4), with the decoding RNG seeded by the run's seed as well. The std over seeds 42, 43, 44
# of a table's row mixes the two. This module separates them. It rebuilds each finished run
# (moelora.inference.load.load_run), answers the run's own test split again with other decoding seeds
# (moelora.inference.predict), and reports per task the spread of the scores over those draws, with the
# weights fixed:
#
#     python -m analysis.decode_noise RUN_DIR [RUN_DIR ...] --draws 4 --out reports
#     python -m analysis.decode_noise --root outputs/table2 --methods lora_full --out reports
#     python -m analysis.decode_noise RUN_DIR ... --input big_test.jsonl   # another test file
#
# The first draw uses the run's own seed and must give the run's recorded scores (the column
# "reproduced" says whether it did); the others use the seeds ``1000 · seed + i``, which no
# training seed of the grids reaches. ``--input`` answers another file of the run's tasks
# instead (a larger test split, say; built with ``python -m moelora.data.medsynth data --eval-scale``),
# and then nothing is recorded to reproduce. For each folder of seeds (one method, one variant)
# ``decode_noise.md`` then sets the std over the seeds of ``avg`` (at each run's own decoding
# seed) beside the runs' decode-only std and the training std they imply,
# sqrt(max(0, total² − decode²)), taking the training and decoding noise as independent. Runs
# decoded greedily have no decoding noise: every draw is the same.

# %%
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.collect import RESULTS_NAME
from analysis.stats import summarize
from moelora.harness.results import read_results
from moelora.inference.load import load_run
from moelora.inference.predict import STRATEGIES, predict
from moelora.utils.io import read_jsonl, write_json, write_text

DRAW_SEED_BASE = 1000  # draw i > 0 of a run with seed s decodes with seed 1000 · s + i
TOLERANCE = 1e-9  # a redraw at the run's own seed reproduces its recorded scores to this


@dataclass
class RunNoise:
    """The decoding draws of one finished run."""

    run_dir: str
    method: str
    seed: int
    decoding: str  # "sample" | "greedy"
    tasks: list[str]
    recorded: dict[str, float]  # results.json scores (the run's own draw)
    input: str | None = None  # the answered file when not the run's test split
    draw_seeds: list[int] = field(default_factory=list)
    draws: list[dict[str, float]] = field(default_factory=list)  # scores per draw

    @property
    def reproduced(self) -> bool | None:
        """The draw at the run's own seed gave the recorded scores (None: another input)."""
        if self.input is not None:
            return None
        first = self.draws[0] if self.draws else {}
        return bool(first) and all(
            abs(first[k] - self.recorded.get(k, math.nan)) <= TOLERANCE for k in first
        )

    def own(self, key: str) -> float:
        """The score at the run's own decoding seed: recorded, or the first draw of ``input``."""
        return self.recorded[key] if self.input is None else self.draws[0][key]

    def spread(self, key: str) -> tuple[float, float]:
        """Mean and sample std of one task's score (or ``avg``) over the draws."""
        s = summarize([d[key] for d in self.draws if key in d])
        return s.mean, s.std


def draw_seeds(seed: int, draws: int) -> list[int]:
    """The run's own seed, then ``DRAW_SEED_BASE · seed + i`` for i = 1 … draws − 1."""
    if draws < 2:
        raise ValueError(f"--draws {draws}: need at least 2 draws to measure a spread")
    return [seed] + [DRAW_SEED_BASE * seed + i for i in range(1, draws)]


def measure(
    run_dir: str | Path,
    *,
    draws: int = 4,
    strategy: str = "mixed",
    input_file: str | Path | None = None,
    **decoding: Any,
) -> RunNoise:
    """Answer the run's test split ``draws`` times, each with its own decoding seed.

    ``decoding`` overrides the run's decoding settings (moelora.inference.predict), e.g. ``mode="sample"``
    for a run that decoded greedily; the draw at the run's seed then need not reproduce it.

    Raises:
        moelora.inference.load.RunLoadError: the folder is not a finished run that can be rebuilt.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    results = read_results(run_dir) or {}
    records = run.splits()["test"] if input_file is None else read_jsonl(input_file)
    seed = int(run.config.seed)
    noise = RunNoise(
        run_dir=str(run_dir),
        method=run.method,
        seed=seed,
        decoding=run.decoding(**decoding).mode,
        tasks=list(run.task_map.tasks),
        recorded={k: float(v) for k, v in (results.get("scores") or {}).items()},
        input=None if input_file is None else str(input_file),
    )
    for s in draw_seeds(seed, draws):
        out = predict(run, records, strategy=strategy, seed=s, **decoding)
        noise.draw_seeds.append(s)
        noise.draws.append({k: float(v) for k, v in out.scores.items()})
    return noise


# %% [markdown]
# ## Seeds of one method: the recorded spread split into training and decoding


# %%
@dataclass(frozen=True)
class GroupNoise:
    """One folder of seeds: the total std of the recorded ``avg``, its decoding part, the rest."""

    group: str
    seeds: list[int]
    total_std: float  # std over the seeds of the avg at each run's own seed
    decode_std: float  # root mean square of the runs' decode-only stds
    train_std: float  # sqrt(max(0, total² − decode²))


def group_noise(runs: Sequence[RunNoise], key: str = "avg") -> list[GroupNoise]:
    """Group runs by their folder of seeds (``<method>/<overrides>``) and split each spread."""
    groups: dict[str, list[RunNoise]] = {}
    for r in runs:
        groups.setdefault(str(Path(r.run_dir).parent), []).append(r)
    out = []
    for name, members in groups.items():
        total = summarize([m.own(key) for m in members]).std
        var = [m.spread(key)[1] ** 2 for m in members]
        decode = math.sqrt(sum(var) / len(var)) if var else math.nan
        train = math.sqrt(max(0.0, total**2 - decode**2)) if math.isfinite(total) else math.nan
        out.append(GroupNoise(name, sorted(m.seed for m in members), total, decode, train))
    return out


def _reproduced(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "other input"}[flag]


def _f(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.4f}"


def to_markdown(runs: Sequence[RunNoise]) -> str:
    """Per run: each task's mean ± std over the draws; then per folder of seeds the split."""
    lines = [
        "# Decoding noise: the same weights, other decoding seeds",
        "",
        "Each run's test split answered again with other decoding seeds "
        "(`python -m analysis.decode_noise`); mean ± std over the draws, the first draw at "
        "the run's own seed.",
        "",
    ]
    if inputs := sorted({r.input for r in runs if r.input is not None}):
        lines += [
            "Answered instead of each run's test split: " + ", ".join(f"`{i}`" for i in inputs),
            "",
        ]
    tasks = list(dict.fromkeys(t for r in runs for t in r.tasks)) + ["avg"]
    lines += [
        "| run | seed | decoding | draws | reproduced | " + " | ".join(tasks) + " |",
        "|---" * (5 + len(tasks)) + "|",
    ]
    for r in runs:
        cells = []
        for t in tasks:
            mean, std = r.spread(t)
            cells.append(f"{_f(mean)} ± {_f(std)}" if math.isfinite(mean) else "")
        lines.append(
            f"| {Path(r.run_dir).parent} | {r.seed} | {r.decoding} | {len(r.draws)} | "
            f"{_reproduced(r.reproduced)} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "## The std of `avg` over seeds, split",
        "",
        "total: std over the seeds of the avg at each run's own decoding seed (the "
        "recorded one unless another input was answered); decoding: root mean square of the "
        "runs' decode-only stds; training: sqrt(max(0, total² − decoding²)).",
        "",
        "| runs | seeds | total | decoding | training |",
        "|---|---|---|---|---|",
    ]
    for g in group_noise(runs):
        lines.append(
            f"| {g.group} | {', '.join(map(str, g.seeds))} | {_f(g.total_std)} | "
            f"{_f(g.decode_std)} | {_f(g.train_std)} |"
        )
    if any(r.reproduced is False for r in runs):
        lines += [
            "",
            "A run marked NO did not give its recorded scores at its own seed: its "
            "evaluation used another serving path (try `--strategy grouped_unmerged`).",
        ]
    return "\n".join(lines) + "\n"


# %% [markdown]
# ## Command line


# %%
def find_runs(root: Path, methods: Sequence[str] | None) -> list[Path]:
    """Successful run folders under ``root`` (optionally of some methods only), sorted."""
    found = []
    for path in sorted(root.rglob(RESULTS_NAME)):
        res = read_results(path.parent) or {}
        if res.get("status") != "success" or (methods and res.get("method") not in methods):
            continue
        found.append(path.parent)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.decode_noise",
        description="Answer finished runs' test splits again with other decoding seeds and "
        "split the std over seeds into decoding and training.",
    )
    parser.add_argument("runs", nargs="*", type=Path, help="finished run directories")
    parser.add_argument("--root", type=Path, help="every successful run under this folder")
    parser.add_argument("--methods", nargs="*", default=None, help="with --root: these only")
    parser.add_argument("--draws", type=int, default=4, help="decodings per run (default 4)")
    parser.add_argument(
        "--strategy",
        default="mixed",
        choices=STRATEGIES,
        help="serving path (moelora.inference.predict); default: mixed",
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=None,
        help="answer this PromptCBLUE file instead of each run's test split",
    )
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    runs = list(args.runs) + (find_runs(args.root, args.methods) if args.root else [])
    if not runs:
        parser.error("no runs: name run directories or --root (with --methods)")
    draw_seeds(0, args.draws)  # refuse --draws < 2 before any work
    measured = []
    for i, run_dir in enumerate(runs, 1):
        print(f"[decode_noise] {i}/{len(runs)} {run_dir}", flush=True)
        measured.append(
            measure(run_dir, draws=args.draws, strategy=args.strategy, input_file=args.input)
        )
    text = to_markdown(measured)
    write_json(args.out / "decode_noise.json", [asdict(r) for r in measured])
    write_text(args.out / "decode_noise.md", text)
    print(text)
    print(f"wrote {args.out / 'decode_noise.md'} and {args.out / 'decode_noise.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
