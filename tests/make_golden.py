"""Regenerate tests/golden/losses.json: ``make golden`` (then review the diff and say why in
the commit).

Each method's golden losses come through its own pipeline: one trainer=smoke job of the method
is run by the harness (``moelora.harness.runner.run``, which calls the pipeline the method's
YAML names, e.g. ``joint`` or ``baselines.lora_single.pipeline``) on the tiny world (CPU,
fp32, one thread), and the losses are read back from the job's ``results.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "losses.json"
# Per-method overrides of the golden job. LoRA (Single) trains each task's adapter for 4 steps
# (with trainer=smoke's 4 steps, ``epoch_matched`` gives every task 1, whose loss is taken
# before the first update) and selects its snapshot by the cheap loss proxy on 2 examples per
# task; the selection runs after training and does not change the losses.
GOLDEN_OVERRIDES = {
    "lora_single": [
        "method.single.max_steps=4",
        "method.single.select_by=loss",
        "method.single.val_per_task=2",
    ],
}


def methods_with_adapters() -> list[str]:
    from tests.conftest import compose

    names = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    return [
        n
        for n in names
        if compose([f"method={n}", "model=hf", "model.path=/x"]).method.get("adapter") is not None
    ]


def job_losses(results: dict[str, Any]) -> dict[str, list[float]]:
    """The training losses a job's ``results.json`` records, rounded to 6 digits.

    ``train``: the losses of the job's one trained adapter (``train.losses``, every pipeline
    that trains one adapter on the task mixture). ``single/<task>``: each task's own adapter
    (``single.losses``, the LoRA (Single) pipeline, baselines/lora_single.py).
    """
    out: dict[str, list[float]] = {}
    if train := (results.get("train") or {}).get("losses"):
        out["train"] = [round(loss, 6) for _, loss in train]
    for task, losses in ((results.get("single") or {}).get("losses") or {}).items():
        out[f"single/{task}"] = [round(loss, 6) for _, loss in losses]
    return out


def smoke_losses(method: str, tiny_world: tuple[Path, Path], out: Path) -> dict[str, list[float]]:
    """Run one trainer=smoke job of ``method`` through its own pipeline in ``out``; return
    :func:`job_losses` of its ``results.json``."""
    import torch

    from moelora.harness.runner import run
    from tests.conftest import compose, tiny_overrides

    torch.set_num_threads(1)
    extra = GOLDEN_OVERRIDES.get(method, [])
    cfg = compose(tiny_overrides(tiny_world, out, f"method={method}", "decoding=greedy", *extra))
    run_dir = out / method
    run_dir.mkdir(parents=True, exist_ok=True)
    code = run(cfg, run_dir)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    if code != 0 or results.get("status") != "success":
        raise RuntimeError(
            f"the {method} smoke job failed ({run_dir}/results.json): {results.get('error')}"
        )
    losses = job_losses(results)
    if not losses:
        raise RuntimeError(f"the {method} smoke job recorded no training losses ({run_dir})")
    return losses


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from moelora.data.medsynth import build_tiny_fixture
    from tests.conftest import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, tok_dir = build_tiny_fixture(tmp / "medsynth")
        world = (data_dir, build_tiny_model(tok_dir, tmp / "model"))
        golden = {m: smoke_losses(m, world, tmp / "runs") for m in methods_with_adapters()}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(golden)} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
