"""Reading the released ChatGLM-6B weights safely, and converting them to safetensors once.

The release ships pickled ``pytorch_model-0000{1..8}-of-00008.bin`` shards. They are only ever
read with ``torch.load(weights_only=True)`` (tensors, nothing executed), here and in
``transformers``' own loader. ``python -m moelora.models.chatglm.checkpoint SRC --out DST`` rewrites a
checkpoint directory as safetensors shards, one shard in memory at a time, and copies the
config and tokenizer files unchanged::

    python -m moelora.models.chatglm.checkpoint /models/chatglm-6b --out /models/chatglm-6b-st

``model.path=/models/chatglm-6b-st`` then loads without touching a pickle.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

BIN_INDEX = "pytorch_model.bin.index.json"
ST_INDEX = "model.safetensors.index.json"
# Files of the release that are neither weights nor code: copied as they are.
COPIED = (
    "config.json",
    "tokenizer_config.json",
    "ice_text.model",
    "generation_config.json",
    "special_tokens_map.json",
)


def bin_shards(ckpt_dir: str | Path) -> list[Path]:
    """The ``.bin`` shard files of a checkpoint, in index order (or ``pytorch_model.bin``)."""
    ckpt = Path(ckpt_dir)
    index = ckpt / BIN_INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (ckpt / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{index} names shard(s) {missing} that are not in {ckpt}; "
                "download the complete checkpoint"
            )
        return [ckpt / n for n in names]
    single = ckpt / "pytorch_model.bin"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{ckpt}: no {BIN_INDEX} or pytorch_model.bin")


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """One pickled shard, tensors only (``weights_only=True``: no code is run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file and the fix
        raise ValueError(
            f"{path}: cannot be read as plain tensors with weights_only=True ({e}); "
            "it is not a weights-only checkpoint shard and will not be unpickled"
        ) from e


def conversion_hint(ckpt_dir: str | Path) -> str | None:
    """A one-line suggestion to convert, when a checkpoint has ``.bin`` shards only."""
    ckpt = Path(ckpt_dir)
    if any(ckpt.glob("*.safetensors")) or not any(ckpt.glob("pytorch_model*.bin")):
        return None
    return (
        f"[chatglm] {ckpt}: reading pickled .bin shards as plain tensors (weights_only=True); "
        f"convert once to safetensors with: python -m moelora.models.chatglm.checkpoint {ckpt} "
        f"--out {ckpt}-safetensors"
    )


def load_original_state_dict(ckpt_dir: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory, safetensors preferred over ``.bin``."""
    from safetensors.torch import load_file

    ckpt = Path(ckpt_dir)
    st = sorted(ckpt.glob("*.safetensors"))
    if st:
        out: dict[str, torch.Tensor] = {}
        for f in st:
            out.update(load_file(str(f)))
        return out
    out = {}
    for shard in bin_shards(ckpt):
        out.update(load_bin(shard))
    return out


def convert_to_safetensors(src: str | Path, dst: str | Path) -> Path:
    """Rewrite ``src``'s ``.bin`` shards as ``model-0000k-of-0000n.safetensors`` in ``dst``.

    Tensor names and dtypes are kept; the stored ``rotary_emb.inv_freq`` buffers (which the
    model recomputes and never loads) are dropped. Code files (``*.py``) are not copied.
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"--out {dst} is the source directory; choose a new directory")
    shards = bin_shards(src)
    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    total = 0
    for k, shard in enumerate(shards, start=1):
        name = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        tensors = {
            key: t.contiguous()
            for key, t in load_bin(shard).items()
            if not key.endswith("rotary_emb.inv_freq")
        }
        save_file(tensors, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        print(f"[convert] {shard.name} -> {name} ({len(tensors)} tensors)")
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / ST_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    for name in COPIED:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    print(f"[convert] {len(weight_map)} tensors written to {dst}")
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the released checkpoint directory (pytorch_model-*.bin)")
    parser.add_argument("--out", required=True, help="new directory for the safetensors copy")
    args = parser.parse_args(argv)
    convert_to_safetensors(args.src, args.out)


if __name__ == "__main__":
    main()
