"""Pre-train the tiny MedSynth-8 base model on ``corpus.txt`` (docs/medsynth.md §5).

A small ``LlamaForCausalLM`` built from a ``LlamaConfig`` (projections ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``: the adapter
targets of ``conf/model/``), trained with plain next-token loss on the packed corpus, in a
fixed data order, then saved with ``save_pretrained`` (safetensors) next to its tokenizer.
A build stamp (hash of the data files, config, seed, schedule and this code) makes the
build cached: an identical request returns at once, a changed input rebuilds.

Determinism: the same seed, data and thread count give the same weights on one kind of CPU
(``torch`` CPU kernels are deterministic for a fixed number of threads). Another CPU can give
other weights: oneDNN picks the bf16 kernels by the CPU's instruction set (AMX, AVX512-BF16,
AVX512), and MKL its fp32 branch, so the stamp records the CPU that built the base
(``cpu``; measurements in docs/notes/). ``max_minutes`` is a safety stop only, and a
build that hits it is marked ``truncated`` in its stamp.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from moelora.data.medsynth.tokenizer import EOS, build_tokenizer, pretraining_texts
from moelora.utils.io import read_json, write_json
from moelora.utils.names import source_fingerprint

STAMP_FILE = "build_stamp.json"
DATA_FILES = ("corpus.txt", "train.jsonl", "dev.jsonl", "test.jsonl")


@dataclass(frozen=True)
class BaseConfig:
    """Model size and pre-training schedule of the tiny base model.

    Defaults: 2.15M parameters, about 5 minutes on 2 idle CPU cores (281 s and 299 s measured at
    3.4–3.7 steps/s, bf16; about 10 minutes on a machine that runs 1.6 steps/s).
    """

    vocab_size: int = 3000
    hidden_size: int = 192
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    block_size: int = 256
    batch_size: int = 16
    max_steps: int = 1000  # copying emerges between 500 and 1000 steps (docs/medsynth.md §5)
    precision: str = "bf16"  # bf16: CPU autocast, 1.4–1.6× faster than fp32 here | fp32
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 30
    weight_decay: float = 0.01


def llama_config(cfg: BaseConfig, tokenizer: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def build_stamp(data_dir: Path, cfg: BaseConfig, seed: int) -> dict[str, Any]:
    """What the model depends on: data files, config, seed and the building code."""
    h = hashlib.sha256()
    for name in DATA_FILES:
        h.update(name.encode())
        h.update((data_dir / name).read_bytes())
    here = Path(__file__).resolve().parent
    for name in ("pretrain.py", "tokenizer.py"):
        h.update(source_fingerprint(here / name))
    h.update(json.dumps({"config": asdict(cfg), "seed": seed}, sort_keys=True).encode())
    return {"input_hash": h.hexdigest(), "seed": seed, "config": asdict(cfg)}


def is_built(out_dir: Path, stamp: dict[str, Any]) -> bool:
    path = out_dir / STAMP_FILE
    needed = ("model.safetensors", "config.json", "tokenizer.json")
    if not path.is_file() or not all((out_dir / f).is_file() for f in needed):
        return False
    try:
        return read_json(path).get("input_hash") == stamp["input_hash"]
    except ValueError:
        return False


def pack_corpus(texts: str | list[str], tokenizer: Any, block_size: int) -> Any:
    """Tokenise every paragraph (a list, or the lines of one text), join with EOS and cut into
    ``(N, block_size)`` blocks."""
    import torch

    eos = tokenizer.convert_tokens_to_ids(EOS)
    ids: list[int] = []
    for line in texts.splitlines() if isinstance(texts, str) else texts:
        if line:
            ids += tokenizer(line, add_special_tokens=False)["input_ids"] + [eos]
    n = len(ids) // block_size
    if n == 0:
        raise ValueError(f"corpus has {len(ids)} tokens, fewer than one block of {block_size}")
    return torch.tensor(ids[: n * block_size], dtype=torch.long).view(n, block_size)


def lr_at(step: int, cfg: BaseConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    model: Any,
    blocks: Any,
    cfg: BaseConfig,
    *,
    seed: int,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Next-token pre-training over ``blocks`` in a seeded fixed order.

    Returns:
        ``{"losses": [...], "steps": int, "seconds": float, "truncated": bool}``.
    """
    import torch
    from tqdm import tqdm

    if cfg.precision not in ("bf16", "fp32"):
        raise ValueError(f"BaseConfig.precision={cfg.precision!r}: use 'bf16' or 'fp32'")
    bf16 = cfg.precision == "bf16"  # weights and optimizer stay fp32; matmuls run in bf16
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95)
    )
    model.train()
    order = torch.randperm(len(blocks), generator=gen)
    cursor = 0
    losses: list[float] = []
    start = time.time()
    truncated = False
    bar = tqdm(range(cfg.max_steps), desc="pretrain", disable=not progress, mininterval=5)
    for step in bar:
        if cursor + cfg.batch_size > len(order):
            order = torch.randperm(len(blocks), generator=gen)
            cursor = 0
        batch = blocks[order[cursor : cursor + cfg.batch_size]]  # (B, T)
        cursor += cfg.batch_size
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if max_minutes is not None and time.time() - start > 60 * max_minutes:
            truncated = True
            break
    model.eval()
    return {
        "losses": losses,
        "steps": len(losses),
        "seconds": round(time.time() - start, 1),
        "truncated": truncated,
    }


def build_base(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    config: BaseConfig | None = None,
    max_minutes: float | None = 30.0,
    progress: bool = True,
) -> Path:
    """Train the tokenizer and pre-train the tiny Llama; save both into ``out_dir`` (cached).

    Args:
        data_dir: a MedSynth-8 data directory (``build_dataset`` output).
        out_dir: the model directory (``AutoModelForCausalLM`` / ``AutoTokenizer`` loadable).
        seed: seeds initialisation and data order.
        config: model size and schedule (:class:`BaseConfig` defaults if omitted).
        max_minutes: stop early after this many minutes (marked ``truncated``).
        progress: show a tqdm bar.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    import torch
    from transformers import LlamaForCausalLM

    from moelora.utils.measure import cpu_info

    data_dir, out = Path(data_dir), Path(out_dir)
    missing = [f for f in DATA_FILES if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: missing {missing}; build the data first: python -m moelora.data.medsynth data --out {data_dir}"
        )
    cfg = config or BaseConfig()
    stamp = build_stamp(data_dir, cfg, seed)
    if is_built(out, stamp):
        print(f"cached: {out} (base model, seed={seed})")
        return out
    tokenizer = build_tokenizer(data_dir, out, vocab_size=cfg.vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(cfg, tokenizer))
    blocks = pack_corpus(pretraining_texts(data_dir), tokenizer, cfg.block_size)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"pre-training {n_params / 1e6:.2f}M parameters on {blocks.numel()} tokens for {cfg.max_steps} steps"
    )
    log = pretrain(model, blocks, cfg, seed=seed, max_minutes=max_minutes, progress=progress)
    model.save_pretrained(str(out), safe_serialization=True)
    tail = log["losses"][-20:]
    final = sum(tail) / len(tail)
    # the CPU that built it: another CPU's kernels give other weights (docs/medsynth.md §6)
    write_json(
        out / STAMP_FILE,
        {**stamp, "params": n_params, "final_loss": round(final, 4), **log, "cpu": cpu_info()},
    )
    print(
        f"saved {out}: {log['steps']} steps in {log['seconds']}s, final loss {final:.4f}"
        + (" (stopped early by max_minutes)" if log["truncated"] else "")
    )
    return out
