# %% [markdown]
# # A learning rate per method, chosen on the dev split (opt-in)
# The paper trains every method at one learning rate (2e-4, methods.md §1.3), and so does the
# harness by default: ``lr = method.optim.lr × trainer.lr_scale`` for every method. On a
# compressed schedule one shared lr suits some methods more than others: at equal lr a MOELoRA
# update moves about N× more slowly than a LoRA one (methods.md §6.1), and on MedSynth-8 the
# two peak at different lr (docs/medsynth_notes.md). This module gives every method the same
# tuning budget instead. Train each method on a grid of lr and score it on the **dev** split:
#
#     python run.py -m experiment_name=lr_dev method=lora_full,moelora_dense \
#         trainer.lr_scale=10,15,25,35,50 seed=42 data.files.test=dev.jsonl
#     python -m analysis.lr_select --root outputs/lr_dev --out reports
#
# (``data.files.test`` names the file that is scored: here the dev file of conf/data/medsynth.yaml
# and promptcblue.yaml.) For each method (and each variant: other overrides, another base) the lr with the best mean
# dev ``avg`` over the seeds run is chosen; a tie goes to the smaller lr. The result names the
# override and the command for the test-split runs (``lr_select.md`` and ``lr_select.json``).
# The test split is never read: a run whose evaluated file is not the dev file is refused, with
# its path. A choice at the edge of the grid is flagged, since the best lr may lie beyond it.
# Tables built from such runs depart from the paper's equal-lr protocol: say so beside them.

# %%
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.collect import RESULTS_NAME, _get, ignored_keys, variant_of
from analysis.stats import summarize
from moelora.io import read_json, write_json, write_text

# Overrides that set the lr or the evaluated split: the grid itself, not the variant.
LR_KEYS = {"trainer.lr", "trainer.lr_scale", "data.files.test", "experiment_name"}


class NotDevSplitError(ValueError):
    """A run scored on another split than dev: choosing an lr on it would read the test set."""


@dataclass
class Point:
    """One lr of one method: its dev ``avg`` per seed."""

    lr: float
    override: str                         # "trainer.lr_scale=15" or "trainer.lr=0.003"
    avg_by_seed: dict[int, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return summarize(list(self.avg_by_seed.values())).mean


@dataclass
class Choice:
    """The chosen lr of one method (one variant), and every point it was chosen from."""

    method: str
    variant: str
    model: str                            # the base model's fingerprint, shortened
    points: list[Point]
    failed: list[str]                     # "<run folder> (<status>)" of runs not (yet) successful

    @property
    def best(self) -> Point:
        # highest mean dev avg; a tie goes to the smaller lr
        return max(self.points, key=lambda p: (p.mean, -p.lr))

    @property
    def at_edge(self) -> bool:
        lrs = sorted(p.lr for p in self.points)
        return len(lrs) > 1 and self.best.lr in (lrs[0], lrs[-1])


# %% [markdown]
# ## Reading the dev-split runs

# %%
def effective_lr(config: dict[str, Any]) -> tuple[float, str]:
    """The run's lr (context.train_settings) and the override that sets it again."""
    trainer = config.get("trainer") or {}
    if trainer.get("lr") is not None:
        return float(trainer["lr"]), f"trainer.lr={trainer['lr']}"
    base = float(_get(config, "method", "optim", "lr"))
    scale = trainer.get("lr_scale")
    return base * float(scale), f"trainer.lr_scale={scale:g}"


def check_dev_split(res: dict[str, Any], path: Path) -> None:
    """Raise :class:`NotDevSplitError` unless the run's evaluated (``test``) file is its dev file."""
    files = _get(res, "inputs", "data", "files") or {}
    test, dev = files.get("test") or {}, files.get("dev") or {}
    if test.get("sha256") and dev.get("sha256"):
        same = test["sha256"] == dev["sha256"]
    else:                                 # no input fingerprints: compare the configured names
        names = _get(res, "config", "data", "files") or {}
        same = bool(names.get("dev")) and names.get("test") == names.get("dev")
    if not same:
        raise NotDevSplitError(
            f"{path}: this run was scored on {test.get('file') or 'the test split'}, not on the dev "
            "split, and an lr chosen on it would be chosen on the test set. Select from dev-split "
            "runs only: add data.files.test=<the dev file> to the sweep (see "
            "analysis/lr_select.py), or point --root at a folder that holds only those.")


def read_points(root: Path) -> list[Choice]:
    """Every successful dev-split run under ``root``, grouped by (method, variant, model)."""
    ignore = ignored_keys()
    groups: dict[tuple[str, str, str], Choice] = {}
    paths = sorted(Path(root).rglob(RESULTS_NAME))
    if not paths:
        raise FileNotFoundError(f"{root}: no {RESULTS_NAME} below it; run the dev sweep first "
                                "(analysis/lr_select.py shows the command)")
    for path in paths:
        try:
            res = read_json(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{e}; rerun that job or move the file away") from e
        overrides = [str(o) for o in res.get("overrides") or []]
        variant = variant_of(overrides, LR_KEYS, ignore)
        model = str(_get(res, "inputs", "model", "fingerprint") or "")[:12]
        key = (str(res.get("method")), variant, model)
        choice = groups.setdefault(key, Choice(*key, points=[], failed=[]))
        if res.get("status") != "success":
            choice.failed.append(f"{path.parent} ({res.get('status', 'unknown')})")
            continue
        check_dev_split(res, path)
        lr, override = effective_lr(res.get("config") or {})
        point = next((p for p in choice.points if math.isclose(p.lr, lr, rel_tol=1e-9)), None)
        if point is None:
            point = Point(lr, override)
            choice.points.append(point)
        point.avg_by_seed[int(res["seed"])] = float(res["scores"]["avg"])
    for choice in groups.values():
        choice.points.sort(key=lambda p: p.lr)
    return [groups[k] for k in sorted(groups) if groups[k].points]


# %% [markdown]
# ## The report

# %%
def to_markdown(choices: list[Choice]) -> str:
    lines = ["# Learning rate per method, chosen on the dev split", "",
             "Mean dev `avg` over the seeds run (n), per lr; **bold**: the chosen lr (ties go to "
             "the smaller). Runs at a method's own lr depart from the paper's equal-lr protocol "
             "(methods.md §1.3).", ""]
    for c in choices:
        title = (c.method + (f" ({c.variant})" if c.variant else "")
                 + (f", base model {c.model}…" if c.model else ""))
        lines += [f"## {title}", "", "| lr | override | dev avg | n |", "|---|---|---|---|"]
        for p in c.points:
            mark = "**" if p is c.best else ""
            lines.append(f"| {mark}{p.lr:g}{mark} | `{p.override}` | {mark}{p.mean:.4f}{mark} | "
                         f"{len(p.avg_by_seed)} |")
        lines.append("")
        if c.at_edge:
            lines += ["The chosen lr is at the edge of the grid: the best one may lie beyond it.", ""]
        if c.failed:
            lines += [f"Not chosen from ({len(c.failed)} runs not successful, or still running): "
                      + ", ".join(f"`{f}`" for f in c.failed), ""]
        extra = f" {c.variant.replace(',', ' ')}" if c.variant else ""
        lines += [f"Test-split runs: `python run.py -m method={c.method} {c.best.override}"
                  f"{extra} seed=42,43,44`", ""]
    return "\n".join(lines)


def to_json(choices: list[Choice]) -> list[dict[str, Any]]:
    return [{"method": c.method, "variant": c.variant, "model": c.model, "lr": c.best.lr,
             "override": c.best.override, "dev_avg": c.best.mean, "at_edge": c.at_edge,
             "points": [{**asdict(p), "mean": p.mean} for p in c.points], "failed": c.failed}
            for c in choices]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ or "choose an lr per method on dev")
    parser.add_argument("--root", type=Path, required=True, help="the dev sweep's output folder")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where lr_select.* go")
    args = parser.parse_args(argv)
    try:
        choices = read_points(args.root)
    except (FileNotFoundError, ValueError) as e:      # NotDevSplitError is a ValueError
        print(f"[lr_select] {e}", file=sys.stderr)
        return 2
    if not choices:
        print(f"[lr_select] {args.root}: no successful run to choose from", file=sys.stderr)
        return 2
    text = to_markdown(choices)
    write_text(args.out / "lr_select.md", text)
    write_json(args.out / "lr_select.json", to_json(choices))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
