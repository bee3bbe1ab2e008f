"""Command line: ``python -m moelora.data.medsynth {data,base} ...``.

python -m moelora.data.medsynth data --out artifacts/medsynth [--scale 0.1] [--eval-scale 0.1334] [--seed 0]
python -m moelora.data.medsynth base --data artifacts/medsynth --out artifacts/base/medsynth-tiny [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from moelora.data.medsynth.build import (
    DEFAULT_CORPUS_CHARS,
    DEFAULT_EVAL_SCALE,
    DEFAULT_SCALE,
    build_dataset,
)
from moelora.data.medsynth.pretrain import BaseConfig, build_base


def _fields(pairs: list[str]) -> dict[str, object]:
    """``["hidden_size=256", "lr=1e-3"]`` → BaseConfig overrides, typed like the defaults."""
    defaults = BaseConfig()
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not hasattr(defaults, key):
            raise SystemExit(
                f"--set {pair}: use FIELD=VALUE with FIELD one of "
                f"{', '.join(defaults.__dataclass_fields__)}"
            )
        out[key] = type(getattr(defaults, key))(value)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m moelora.data.medsynth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="generate train/dev/test.jsonl, corpus.txt and meta.json")
    data.add_argument("--out", required=True, help="output directory")
    data.add_argument(
        "--scale", type=float, default=DEFAULT_SCALE, help="train size = Table 1 × scale"
    )
    data.add_argument(
        "--eval-scale",
        type=float,
        default=DEFAULT_EVAL_SCALE,
        help="dev/test size = Table 1 × eval scale",
    )
    data.add_argument("--seed", type=int, default=0)
    data.add_argument(
        "--corpus-chars", type=int, default=DEFAULT_CORPUS_CHARS, help="pre-training corpus size"
    )
    base = sub.add_parser(
        "base", help="train the tokenizer and pre-train the tiny Llama base model"
    )
    base.add_argument("--data", required=True, help="a MedSynth-8 data directory")
    base.add_argument("--out", required=True, help="model directory")
    base.add_argument("--seed", type=int, default=0)
    base.add_argument(
        "--max-minutes", type=float, default=30.0, help="safety stop for pre-training"
    )
    base.add_argument("--max-steps", type=int, default=None, help="override BaseConfig.max_steps")
    base.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="override BaseConfig fields, e.g. --set hidden_size=256 lr=1e-3",
    )
    args = parser.parse_args(argv)
    start = time.time()
    if args.command == "data":
        build_dataset(
            args.out,
            scale=args.scale,
            eval_scale=args.eval_scale,
            seed=args.seed,
            corpus_chars=args.corpus_chars,
        )
    else:
        cfg = (
            BaseConfig()
            if args.max_steps is None
            else replace(BaseConfig(), max_steps=args.max_steps)
        )
        cfg = replace(cfg, **_fields(args.set))
        build_base(args.data, args.out, seed=args.seed, config=cfg, max_minutes=args.max_minutes)
    print(f"done in {time.time() - start:.1f}s")


if __name__ == "__main__":
    main()
