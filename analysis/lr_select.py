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
#
# ``--protocol conf/lr_protocol/dev.yaml`` writes the choices as an lr protocol
# (moelora/harness/lr_protocol.py): then ``python run.py method=<m> lr_protocol=dev`` trains each
# listed method at its own lr, and one override puts a whole grid under it
# (``python -m experiments.reproduce --jobs 2 lr_protocol=dev``), so that tables and claims
# compare the methods each at its dev-chosen lr as one variant.

# %%
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analysis.collect import RESULTS_NAME, _get, ignored_keys, variant_of
from analysis.stats import summarize
from moelora.utils.io import read_json, write_json, write_text

# Overrides that set the lr or the evaluated split: the grid itself, not the variant.
LR_KEYS = {"trainer.lr", "trainer.lr_scale", "data.files.test", "experiment_name"}
# Settings an lr is chosen under, recorded in the protocol file (moelora.harness.lr_protocol checks them).
CHOSEN_WITH = (
    "model.name",
    "data.name",
    "trainer.max_steps",
    "trainer.per_device_batch_size",
    "trainer.grad_accum",
    "trainer.warmup_steps",
    "trainer.loss_weighting",
)


class NotDevSplitError(ValueError):
    """A run scored on another split than dev: choosing an lr on it would read the test set."""


@dataclass
class Point:
    """One lr of one method: its dev ``avg`` per seed."""

    lr: float
    override: str  # "trainer.lr_scale=15" or "trainer.lr=0.003"
    avg_by_seed: dict[int, float] = field(default_factory=dict)
    scale: float = math.nan  # lr / method.optim.lr: the protocol's lr_scale

    @property
    def mean(self) -> float:
        return summarize(list(self.avg_by_seed.values())).mean


@dataclass
class Choice:
    """The chosen lr of one method (one variant), and every point it was chosen from."""

    method: str
    variant: str
    model: str  # the base model's fingerprint, shortened
    points: list[Point]
    failed: list[str]  # "<run folder> (<status>)" of runs not (yet) successful
    settings: dict[str, Any] = field(default_factory=dict)  # CHOSEN_WITH values of its runs

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
    else:  # no input fingerprints: compare the configured names
        names = _get(res, "config", "data", "files") or {}
        same = bool(names.get("dev")) and names.get("test") == names.get("dev")
    if not same:
        raise NotDevSplitError(
            f"{path}: this run was scored on {test.get('file') or 'the test split'}, not on the dev "
            "split, and an lr chosen on it would be chosen on the test set. Select from dev-split "
            "runs only: add data.files.test=<the dev file> to the sweep (see "
            "analysis/lr_select.py), or point --root at a folder that holds only those."
        )


def read_points(root: Path) -> list[Choice]:
    """Every successful dev-split run under ``root``, grouped by (method, variant, model)."""
    ignore = ignored_keys()
    groups: dict[tuple[str, str, str], Choice] = {}
    paths = sorted(Path(root).rglob(RESULTS_NAME))
    if not paths:
        raise FileNotFoundError(
            f"{root}: no {RESULTS_NAME} below it; run the dev sweep first "
            "(analysis/lr_select.py shows the command)"
        )
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
        config = res.get("config") or {}
        lr, override = effective_lr(config)
        point = next((p for p in choice.points if math.isclose(p.lr, lr, rel_tol=1e-9)), None)
        if point is None:
            point = Point(lr, override, scale=lr / float(_get(config, "method", "optim", "lr")))
            choice.points.append(point)
        for key in CHOSEN_WITH:
            value = _get(config, *key.split("."))
            if value is not None:
                choice.settings.setdefault(key, value)
        point.avg_by_seed[int(res["seed"])] = float(res["scores"]["avg"])
    for choice in groups.values():
        choice.points.sort(key=lambda p: p.lr)
    return [groups[k] for k in sorted(groups) if groups[k].points]


# %% [markdown]
# ## The report


# %%
def to_markdown(choices: list[Choice]) -> str:
    lines = [
        "# Learning rate per method, chosen on the dev split",
        "",
        "Mean dev `avg` over the seeds run (n), per lr; **bold**: the chosen lr (ties go to "
        "the smaller). Runs at a method's own lr depart from the paper's equal-lr protocol "
        "(methods.md §1.3).",
        "",
    ]
    for c in choices:
        title = (
            c.method
            + (f" ({c.variant})" if c.variant else "")
            + (f", base model {c.model}…" if c.model else "")
        )
        lines += [f"## {title}", "", "| lr | override | dev avg | n |", "|---|---|---|---|"]
        for p in c.points:
            mark = "**" if p is c.best else ""
            lines.append(
                f"| {mark}{p.lr:g}{mark} | `{p.override}` | {mark}{p.mean:.4f}{mark} | "
                f"{len(p.avg_by_seed)} |"
            )
        lines.append("")
        if c.at_edge:
            lines += [
                "The chosen lr is at the edge of the grid: the best one may lie beyond it.",
                "",
            ]
        if c.failed:
            lines += [
                f"Not chosen from ({len(c.failed)} runs not successful, or still running): "
                + ", ".join(f"`{f}`" for f in c.failed),
                "",
            ]
        extra = f" {c.variant.replace(',', ' ')}" if c.variant else ""
        lines += [
            f"Test-split runs: `python run.py -m method={c.method} {c.best.override}"
            f"{extra} seed=42,43,44`",
            "",
        ]
    return "\n".join(lines)


def to_json(choices: list[Choice]) -> list[dict[str, Any]]:
    return [
        {
            "method": c.method,
            "variant": c.variant,
            "model": c.model,
            "lr": c.best.lr,
            "override": c.best.override,
            "dev_avg": c.best.mean,
            "at_edge": c.at_edge,
            "points": [{**asdict(p), "mean": p.mean} for p in c.points],
            "failed": c.failed,
        }
        for c in choices
    ]


def to_protocol(choices: list[Choice], name: str = "dev") -> str:
    """``conf/lr_protocol/<name>.yaml``: each method's chosen ``lr_scale`` and the settings it was
    chosen under, with every grid point's dev avg in a comment.

    Raises:
        ValueError: a method has several variants or base models, or the methods were chosen
            under different settings: one protocol holds one sweep.
    """
    methods = [c.method for c in choices]
    if dupes := sorted({m for m in methods if methods.count(m) > 1}):
        found = "; ".join(
            f"{c.method} ({c.variant or 'no other overrides'}, base {c.model}…)"
            for c in choices
            if c.method in dupes
        )
        raise ValueError(
            f"several variants or base models for {', '.join(dupes)}: {found}. "
            "One protocol holds one sweep: point --root at a folder with one of them"
        )
    settings = {k: v for c in choices for k, v in c.settings.items()}
    for c in choices:
        if differs := [k for k, v in c.settings.items() if settings[k] != v] + [
            k for k in settings if k not in c.settings
        ]:
            raise ValueError(
                f"{c.method} was swept under other settings ({', '.join(differs)}) "
                "than the other methods; one protocol holds one sweep"
            )
    models = sorted({c.model for c in choices if c.model})
    lines = [
        f"# Each method's own learning rate, chosen on the dev split by analysis.lr_select "
        f"(lr_protocol={name},",
        "# moelora/harness/lr_protocol.py). Generated: regenerate it from the sweep rather than edit "
        "it by hand.",
        f"# Base model {', '.join(m + '…' for m in models) or 'unknown'}; dev avg per "
        "lr_scale (mean over the seeds run), [chosen]:",
    ]
    for c in choices:
        grid = " | ".join(
            (f"[{p.scale:g}: {p.mean:.4f}]" if p is c.best else f"{p.scale:g}: {p.mean:.4f}")
            for p in c.points
        )
        seeds = sorted({s for p in c.points for s in p.avg_by_seed})
        lines.append(
            f"#   {c.method} (seeds {', '.join(map(str, seeds))}): {grid}"
            + ("  (at the grid's edge)" if c.at_edge else "")
        )
    lines += [f"name: {name}", "lr_scale:"]
    lines += [f"  {c.method}: {c.best.scale:g}" for c in sorted(choices, key=lambda c: c.method)]
    lines.append("chosen_with:" + ("" if settings else " {}"))
    lines += [f"  {k}: {json.dumps(v)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__ or "choose an lr per method on dev")
    parser.add_argument("--root", type=Path, required=True, help="the dev sweep's output folder")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="where lr_select.* go")
    parser.add_argument(
        "--protocol",
        type=Path,
        default=None,
        metavar="YAML",
        help="also write the choices as an lr protocol, e.g. "
        "conf/lr_protocol/dev.yaml (its name: the file's stem)",
    )
    args = parser.parse_args(argv)
    try:
        choices = read_points(args.root)
        if not choices:
            raise ValueError(f"{args.root}: no successful run to choose from")
        if args.protocol and args.protocol.stem == "shared":
            raise ValueError(
                f"{args.protocol}: lr_protocol=shared is the paper's equal-lr "
                "protocol; write the choices under another name, e.g. dev.yaml"
            )
        protocol = to_protocol(choices, args.protocol.stem) if args.protocol else None
    except (FileNotFoundError, ValueError) as e:  # NotDevSplitError is a ValueError
        print(f"[lr_select] {e}; nothing was written", file=sys.stderr)
        return 2
    if protocol is not None:
        write_text(args.protocol, protocol)
    text = to_markdown(choices)
    write_text(args.out / "lr_select.md", text)
    write_json(args.out / "lr_select.json", to_json(choices))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
