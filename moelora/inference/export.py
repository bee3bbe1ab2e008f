"""Export a finished MOELoRA run's tasks as standard PEFT LoRA adapters (command line).

Command line (RUN_DIR as written by the trainer, ``RUN_DIR/adapter/``)::

    python -m moelora.inference.export RUN_DIR --out DIR [--dtype float32] [--trust-remote-code]

writes ``DIR/<task>/adapter_config.json`` and ``DIR/<task>/adapter_model.safetensors`` (the run
is rebuilt by moelora.inference.load.load_run; the export is the library API's,
``moelora.method.peft_model.MoeLoraModel.export_task_adapters``), loadable with
``peft.PeftModel.from_pretrained(base, DIR/<task>)``, and prints the ``vllm serve`` and SGLang
commands that serve them (docs/library.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from moelora.method.config import MoeLoraConfig
from moelora.method.export import BUILDER
from moelora.method.peft_model import MoeLoraModel
from moelora.utils.names import current_name


def load_run_model(
    run_dir: str | Path, *, dtype: str = "float32", trust_remote_code: bool | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild a trained MOELoRA run (moelora.inference.load.load_run) and check that it is one.

    Raises:
        ValueError: the run's adapter was not built by :data:`BUILDER`.
    """
    from moelora.engine.adapters import read_adapter_config
    from moelora.inference.load import load_run

    adapter_dir = Path(run_dir) / "adapter"
    builder = (
        read_adapter_config(adapter_dir).get("builder", BUILDER)
        if adapter_dir.is_dir()
        else "another pipeline (no adapter/ folder)"
    )
    if current_name(builder) != BUILDER:
        raise ValueError(
            f"{run_dir}: adapter built by {builder!r}, not {BUILDER!r}; "
            "only MOELoRA runs can be exported per task"
        )
    run = load_run(run_dir, dtype=dtype, trust_remote_code=trust_remote_code)
    return run.model, run.meta


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        prog="python -m moelora.inference.export", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", help="a MOELoRA run directory (with adapter/)")
    parser.add_argument("--out", required=True, help="output folder; one subfolder per task")
    parser.add_argument("--dtype", default="float32", help="base dtype while exporting")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="for bases with their own modeling code (ChatGLM-6B is built in "
        "and never needs it); default: off (a run folder never turns it on)",
    )
    args = parser.parse_args(argv)
    model, meta = load_run_model(
        args.run_dir, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    wrapped = MoeLoraModel(model, MoeLoraConfig.from_dict(meta, source=f"{args.run_dir}/adapter"))
    exported = wrapped.export_task_adapters(
        args.out, tasks=meta["tasks"], base_model_name_or_path=meta["base_model"]["name_or_path"]
    )
    print(exported)
    return list(exported.paths.values())


if __name__ == "__main__":
    main()
