"""Build the MedSynth-8 data directory, cached by an input hash (docs/medsynth.md §1, §4).

``build_dataset`` writes ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``, ``corpus.txt`` and
``meta.json``. The input hash covers the generator version, the seed, the scales, the
corpus size and the source of every generator module, so an edit to the knowledge base
or a template rebuilds, and an unchanged request prints ``cached`` and returns at once.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from moelora.data.medsynth.common import generate_valid
from moelora.data.medsynth.corpus import build_corpus
from moelora.data.medsynth.generators import GENERATORS, split_sizes
from moelora.data.medsynth.kb import load_kb
from moelora.utils.io import read_json, write_json, write_jsonl
from moelora.utils.names import source_fingerprint

GENERATOR_VERSION = "medsynth-8/2.1"  # 2.1: the answer cue is pre-trained (docs/medsynth.md §7)
DEFAULT_SCALE = 0.1
DEFAULT_EVAL_SCALE = 0.1334  # 80 test samples per task (CHIP-CTC 147, KUAKE-QIC 88)
DEFAULT_CORPUS_CHARS = 1_500_000
SPLITS = ("train", "dev", "test")
DATA_FILES = ("train.jsonl", "dev.jsonl", "test.jsonl", "corpus.txt")
_SOURCE_MODULES = (
    "kb.py",
    "common.py",
    "extraction.py",
    "classification.py",
    "dialogue.py",
    "generators.py",
    "corpus.py",
    "concepts.py",
    "glossary.py",
    "build.py",
)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def input_hash(*, scale: float, eval_scale: float, seed: int, corpus_chars: int) -> str:
    """Hash of everything the data depends on (parameters plus generator sources)."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    params = {
        "version": GENERATOR_VERSION,
        "scale": scale,
        "eval_scale": eval_scale,
        "seed": seed,
        "corpus_chars": corpus_chars,
    }
    h.update(json.dumps(params, sort_keys=True).encode())
    for name in _SOURCE_MODULES:
        h.update(name.encode())
        h.update(source_fingerprint(here / name))
    return h.hexdigest()


def is_cached(out_dir: Path, digest: str) -> bool:
    """``meta.json`` matches ``digest`` and every data file is present and unmodified."""
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        return False
    try:
        meta = read_json(meta_path)
    except ValueError:
        return False
    if meta.get("input_hash") != digest:
        return False
    files = meta.get("files", {})
    return all(
        (out_dir / f).is_file() and files.get(f) == sha256_file(out_dir / f) for f in DATA_FILES
    )


def generate_splits(
    *, scale: float, eval_scale: float, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """All three splits, each shuffled, with ``sample_id`` = ``{split}-{index}``.

    Dev and test never repeat an input seen in an earlier split.
    """
    kb = load_kb()
    sizes = split_sizes(scale, eval_scale)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        records: list[dict[str, Any]] = []
        for task, fn in GENERATORS.items():
            rng = random.Random(f"medsynth/{seed}/{split}/{task}")
            made = 0
            tries = 0
            while made < sizes[split][task]:
                tries += 1
                if tries > 50 * sizes[split][task] + 1000:
                    raise RuntimeError(
                        f"{task}/{split}: too many duplicate inputs; lower eval_scale"
                    )
                record = generate_valid(fn, kb, rng, task)
                if split != "train" and record["input"] in seen:
                    continue
                records.append(record)
                made += 1
        random.Random(f"medsynth/{seed}/{split}/order").shuffle(records)
        for i, record in enumerate(records):
            record["sample_id"] = f"{split}-{i}"
        seen.update(r["input"] for r in records)
        splits[split] = records
    return splits


def build_dataset(
    out_dir: str | Path,
    *,
    scale: float = DEFAULT_SCALE,
    eval_scale: float = DEFAULT_EVAL_SCALE,
    seed: int = 0,
    corpus_chars: int = DEFAULT_CORPUS_CHARS,
    verbose: bool = True,
) -> Path:
    """Write the MedSynth-8 splits, corpus and meta into ``out_dir`` (cached).

    Args:
        out_dir: target directory (created).
        scale: train sizes = paper Table 1 train sizes × ``scale``.
        eval_scale: dev/test sizes = Table 1 (600; CTC 1,100; QIC 660) × ``eval_scale``.
        seed: generation seed; same seed and scales give byte-identical files.
        corpus_chars: approximate size of ``corpus.txt`` in characters.
        verbose: print ``cached`` or a summary.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    digest = input_hash(scale=scale, eval_scale=eval_scale, seed=seed, corpus_chars=corpus_chars)
    if is_cached(out, digest):
        if verbose:
            print(
                f"cached: {out} (MedSynth-8, seed={seed}, scale={scale}, eval_scale={eval_scale})"
            )
        return out
    splits = generate_splits(scale=scale, eval_scale=eval_scale, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        write_jsonl(out / f"{split}.jsonl", records)
    corpus = build_corpus(load_kb(), seed=seed, num_chars=corpus_chars)
    (out / "corpus.txt").write_text(corpus, encoding="utf-8")
    counts = {
        split: {t: sum(r["task_dataset"] == t for r in recs) for t in GENERATORS}
        for split, recs in splits.items()
    }
    meta = {
        "name": "MedSynth-8",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "eval_scale": eval_scale,
        "corpus_chars": len(corpus),
        "tasks": list(GENERATORS),
        "counts": counts,
        "input_hash": digest,
        "files": {f: sha256_file(out / f) for f in DATA_FILES},
    }
    write_json(out / "meta.json", meta)
    if verbose:
        sizes = ", ".join(f"{s}={sum(c.values())}" for s, c in counts.items())
        print(f"built {out}: {sizes}, corpus={len(corpus)} chars")
    return out
