"""The eight MedSynth-8 task generators, one view each of the shared knowledge base.

Maps each PromptCBLUE task name (``moelora.method.tasks.PAPER_TASKS``) to its generator and its
Table 1 split sizes (docs/medsynth.md §4).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moelora.data.medsynth.classification import gen_ctc, gen_qic
from moelora.data.medsynth.dialogue import gen_mdcfnpc, gen_meddg, gen_mrg
from moelora.data.medsynth.extraction import gen_cdee, gen_cdn, gen_cmeie

Generator = Callable[..., dict[str, Any]]

GENERATORS: dict[str, Generator] = {
    "CMeIE": gen_cmeie,
    "CHIP-CDN": gen_cdn,
    "CHIP-CDEE": gen_cdee,
    "CHIP-MDCFNPC": gen_mdcfnpc,
    "CHIP-CTC": gen_ctc,
    "KUAKE-QIC": gen_qic,
    "IMCS-V2-MRG": gen_mrg,
    "MedDG": gen_meddg,
}

# Paper Table 1: training examples per task (the imbalance is part of the setting).
TRAIN_SIZES: dict[str, int] = {
    "CMeIE": 2828,
    "CHIP-CDN": 2381,
    "CHIP-CDEE": 1562,
    "CHIP-MDCFNPC": 4935,
    "CHIP-CTC": 3622,
    "KUAKE-QIC": 3279,
    "IMCS-V2-MRG": 1799,
    "MedDG": 4964,
}
# Paper Table 1: validation and test examples per task.
EVAL_SIZES: dict[str, int] = {t: 600 for t in TRAIN_SIZES} | {"CHIP-CTC": 1100, "KUAKE-QIC": 660}


def split_sizes(scale: float, eval_scale: float) -> dict[str, dict[str, int]]:
    """Per-split, per-task example counts: Table 1 sizes times the scales, at least 1."""
    if scale <= 0 or eval_scale <= 0:
        raise ValueError(f"scale={scale} and eval_scale={eval_scale} must both be positive")
    return {
        "train": {t: max(1, round(n * scale)) for t, n in TRAIN_SIZES.items()},
        "dev": {t: max(1, round(n * eval_scale)) for t, n in EVAL_SIZES.items()},
        "test": {t: max(1, round(n * eval_scale)) for t, n in EVAL_SIZES.items()},
    }
