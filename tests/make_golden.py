"""Regenerate tests/golden/losses.json: ``make golden`` (then review the diff and say why in
the commit). Four trainer=smoke losses per method with its own adapter, on the tiny world
(CPU, fp32, one thread)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "losses.json"


def methods_with_adapters() -> list[str]:
    from tests.conftest import compose

    names = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    return [
        n
        for n in names
        if compose([f"method={n}", "model=hf", "model.path=/x"]).method.get("adapter") is not None
    ]


def smoke_losses(method: str, tiny_world: tuple[Path, Path], out: Path) -> list[float]:
    """The four logged losses of a trainer=smoke run of ``method`` (no checkpoints)."""
    import torch
    from accelerate import Accelerator

    from moelora.data.encoding import apply_task_prompt
    from moelora.engine.train import train
    from moelora.harness.context import RunContext
    from moelora.harness.loggers import NoneLogger
    from moelora.harness.runner import load_splits
    from moelora.method.tasks import TaskMap
    from moelora.utils.seed import seed_everything
    from tests.conftest import compose, tiny_overrides

    torch.set_num_threads(1)
    cfg = compose(tiny_overrides(tiny_world, out, f"method={method}"))
    task_map = TaskMap(cfg.data.tasks)
    splits = apply_task_prompt(
        load_splits(cfg, task_map), cfg.method.get("task_prompt"), seed=cfg.seed
    )
    ctx = RunContext(
        cfg=cfg,
        run_dir=out,
        task_map=task_map,
        splits=splits,
        accelerator=Accelerator(cpu=True),
        logger=NoneLogger(),
    )
    seed_everything(cfg.seed)
    model, tok = ctx.load_base()
    model = ctx.build_adapter(model)
    enc = ctx.encoder(tok)
    result = train(
        model,
        enc,
        ctx.splits["train"],
        settings=ctx.train_settings(),
        sampler=ctx.sampler(enc, ctx.splits["train"]),
        accelerator=ctx.accelerator,
        ckpt_dir=None,
        adapter_meta=ctx.adapter_meta(),
    )
    return [round(loss, 6) for _, loss in result.losses]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from moelora.data.medsynth import build_tiny_fixture
    from tests.conftest import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir, tok_dir = build_tiny_fixture(tmp / "medsynth")
        world = (data_dir, build_tiny_model(tok_dir, tmp / "model"))
        golden = {m: smoke_losses(m, world, tmp / m) for m in methods_with_adapters()}
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({len(golden)} methods)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
