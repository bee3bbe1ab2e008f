"""The memory plan: a GPU job's peak memory, predicted from the model's config before it loads.

From the config alone (the model is built on the meta device, no weights are read), the
method's adapted layers, the lengths, the precision, gradient checkpointing and the card's
memory, :func:`plan` predicts the peak of

* **training** one micro-batch: the frozen weights in the compute dtype, the adapters in fp32
  with their gradients and AdamW's two moments (16 bytes a trainable parameter), the tensors
  autograd saves for backward (per token and block, :func:`block_saved_bytes`), the loss's
  logits, and with gradient checkpointing each block's input plus one recomputed block;
* **merged evaluation** (Eq. 8 folded in place): the weights, the KV cache of the whole
  evaluation batch and the prefill's largest intermediates;
* **unmerged evaluation**: the same plus the adapters' fp32 input copies during prefill;

then chooses the largest micro-batch (and so the accumulation) that reaches the configured
effective batch within the card, and the largest evaluation batch that fits. When nothing fits
it says so before anything loads, with the numbers and the fix (:class:`MemoryPlanError`).

The saved-tensor inventory follows the code that runs: a frozen linear saves nothing (its
input gradient needs only its weight); an adapted linear saves its dropped input in the compute
dtype (for ``A``'s gradient), the dropout mask (fp32 on the CPU, one byte on CUDA) and two
rank-sized intermediates; RMSNorm (Llama, Qwen2) keeps an fp32 copy of its input, LayerNorm
(ChatGLM-6B) its input; attention (SDPA, flash) keeps q, k, v, its output and an fp32
log-sum-exp per head; a gated MLP keeps the gate, its activation and the up projection, a GeLU
MLP its input. ``tests/test_memory_plan.py`` checks it against the bytes measured at real
widths (:func:`moelora.utils.measure.saved_tensor_bytes`).

Command line (presets need no files; ``--model`` also takes a local model folder)::

    python -m moelora.engine.memory --model qwen2.5-7b --gpu-mem 80 --world 1
    python -m moelora.engine.memory --table   # 3 models × 24/40/80 GB
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from moelora.utils.io import write_text

GiB = 1024**3
# What a CUDA process holds beyond max_memory_allocated: its context, the caching allocator's
# fragmentation. A plan "fits" when predicted × (1 + FRAGMENTATION) + CONTEXT ≤ the card.
CONTEXT_BYTES = int(1.0 * GiB)
FRAGMENTATION = 0.10

# The paper's setting (methods.md §1.3 in docs): inputs up to 1,024 tokens, answers up to 196.
PAPER_SOURCE_LEN = 1024
PAPER_TARGET_LEN = 196

# Real configurations, so the plan runs without any model folder (no downloads).
PRESETS: dict[str, dict[str, Any]] = {
    "chatglm-6b": {
        "model_type": "chatglm",
        "vocab_size": 130528,
        "hidden_size": 4096,
        "num_layers": 28,
        "num_attention_heads": 32,
        "inner_hidden_size": 16384,
        "max_sequence_length": 2048,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "tie_word_embeddings": False,
    },
    "llama-3-8b": {
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
    },
}

# model_type → block layout: "gated" (RMSNorm, SiLU-gated MLP) or "glm" (LayerNorm, GeLU MLP)
LAYOUTS = {"llama": "gated", "mistral": "gated", "qwen2": "gated", "chatglm": "glm"}
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class MemoryPlanError(RuntimeError):
    """Nothing fits the card; the message gives the numbers and the fix."""


@dataclass(frozen=True)
class Shape:
    """What the plan needs of a model's config."""

    model_type: str
    layout: str
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int


def hf_config(model: str | Path | dict[str, Any]) -> Any:
    """A ``transformers`` config from a preset name, a local model folder or a dict."""
    from transformers import AutoConfig

    from moelora.models.loading import register_native_models

    register_native_models()
    if isinstance(model, dict):
        spec = dict(model)
    elif str(model) in PRESETS:
        spec = dict(PRESETS[str(model)])
    else:
        path = Path(model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"--model {model}: neither a preset ({', '.join(PRESETS)}) nor a folder with "
                "config.json; give one of those"
            )
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    mtype = spec.pop("model_type")
    return AutoConfig.for_model(mtype, **spec)


def shape_of(config: Any) -> Shape:
    """The :class:`Shape` of a config; raises with the fix for an unknown layout."""
    mtype = config.model_type
    if mtype not in LAYOUTS:
        raise ValueError(
            f"model_type {mtype!r}: the memory plan knows {', '.join(sorted(LAYOUTS))}; add its "
            "block layout to moelora.engine.memory.LAYOUTS"
        )
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return Shape(
        model_type=mtype,
        layout=LAYOUTS[mtype],
        hidden=config.hidden_size,
        ffn=config.intermediate_size,
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        layers=config.num_hidden_layers,
        vocab=config.vocab_size,
    )


@dataclass
class MethodSpec:
    """The adapter: ``moelora`` (MOELoRA's experts, one gate) or ``lora`` (peft LoRA)."""

    kind: str = "moelora"
    rank: int = 16
    num_experts: int = 8
    dropout: float = 0.1
    target_modules: str | Sequence[str] = "all-linear"


@dataclass
class Counts:
    """Parameter counts from the meta-device model."""

    frozen: int
    trainable: int
    adapted: list[tuple[int, int]]  # (d_in, d_out) of the adapted linears of ONE block


def count_parameters(config: Any, method: MethodSpec) -> Counts:
    """Build the model and the adapter on the meta device (no memory, no weights) and count."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from moelora.method.layer import linear_shape
    from moelora.method.model import build, find_targets

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # the meta model leaves tied embeddings apart
    frozen = sum(p.numel() for p in model.parameters())
    targets = find_targets(model, method.target_modules)
    first = _block_prefix([n for n, _ in targets])
    adapted = [linear_shape(m) for n, m in targets if n.startswith(first)]
    if method.kind == "moelora":
        build(
            model,
            tasks=["t0", "t1"],
            target_modules=method.target_modules,
            num_experts=method.num_experts,
            rank=method.rank,
            dropout=method.dropout,
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    else:  # LoRA: r·(d_in + d_out) a linear
        trainable = sum(method.rank * sum(linear_shape(m)) for _, m in targets)
    return Counts(frozen=frozen, trainable=trainable, adapted=adapted)


def _block_prefix(names: Sequence[str]) -> str:
    """``model.layers.0.`` for the first block's layers (the part up to the first digit)."""
    parts = names[0].split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1]) + "."
    return ""


def block_saved_bytes(
    shape: Shape,
    adapted: Sequence[tuple[int, int]],
    *,
    rank: int,
    compute_bytes: int,
    dropout: float,
    device: str = "cuda",
    attn_implementation: str = "sdpa",
    seq_len: int = 0,
) -> float:
    """Bytes autograd saves per token in one block (whose input requires grad), no checkpointing.

    See the module docstring for the inventory. ``eager`` attention adds its fp32 scores and
    probabilities, ``heads × seq_len`` per token (an upper estimate)."""
    b = compute_bytes
    mask = 0 if dropout <= 0 else (4 if device == "cpu" else 1)
    total = sum((b + mask) * d_in + 2 * rank * b for d_in, _ in adapted)
    q_dim, kv_dim = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    total += b * (2 * q_dim + 2 * kv_dim) + 4 * shape.heads  # q, k, v, out; log-sum-exp
    if attn_implementation == "eager":
        total += shape.heads * seq_len * (4 + b)
    if shape.layout == "gated":
        total += 2 * 4 * shape.hidden + 3 * b * shape.ffn  # two RMSNorms in fp32; gate, act, up
    else:
        total += 2 * b * shape.hidden + b * shape.ffn  # two LayerNorms; the GeLU's input
    return float(total)


def adapter_copy_bytes(adapted: Sequence[tuple[int, int]], rank: int, compute_bytes: int) -> int:
    """Autocast's compute-dtype copies of one block's fp32 adapter factors (saved for backward)."""
    if compute_bytes == 4:
        return 0
    return sum(rank * (d_in + d_out) * compute_bytes for d_in, d_out in adapted)


def logits_bytes(shape: Shape, compute_bytes: int) -> float:
    """Per token: the logits in the compute dtype, their fp32 copy and log-softmax (saved), and
    the fp32 gradient during backward."""
    return float((compute_bytes + 4 + 4 + 4) * shape.vocab)


@dataclass
class Settings:
    """What the plan is asked: lengths, batches, precision, the card."""

    source_len: int = PAPER_SOURCE_LEN
    target_len: int = PAPER_TARGET_LEN
    effective_batch: int = 64
    world: int = 1
    eval_batch: int = 16
    precision: str = "bf16"  # compute dtype: bf16 | fp16 | fp32
    gradient_checkpointing: bool = True
    attn_implementation: str = "sdpa"
    gpu_mem_gb: float = 80.0
    device: str = "cuda"

    @property
    def seq_len(self) -> int:
        return self.source_len + self.target_len


@dataclass
class Plan:
    """The predicted peaks (bytes, ``max_memory_allocated``'s measure) and the choice."""

    model: str
    gpu_mem_gb: float
    precision: str
    gradient_checkpointing: bool
    weights_bytes: int
    trainable_params: int
    train_bytes: int  # at the chosen micro-batch
    merged_eval_bytes: int  # at the chosen eval batch
    unmerged_eval_bytes: int
    micro_batch: int
    grad_accum: int
    world: int
    effective_batch: int
    eval_batch: int
    saved_per_token_block: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        gb = lambda n: f"{n / GiB:.1f} GiB"  # noqa: E731
        return (
            f"memory plan ({self.model}, {self.precision}, checkpointing "
            f"{'on' if self.gradient_checkpointing else 'off'}, {self.gpu_mem_gb:g} GB card): "
            f"train {gb(self.train_bytes)} at micro-batch {self.micro_batch} × accumulation "
            f"{self.grad_accum} × {self.world} process(es) = {self.effective_batch}; eval batch "
            f"{self.eval_batch}: merged {gb(self.merged_eval_bytes)}, unmerged "
            f"{gb(self.unmerged_eval_bytes)}; weights {gb(self.weights_bytes)}"
        )


PLAN_FIELDS = tuple(Plan.__dataclass_fields__)


def usable_bytes(gpu_mem_gb: float) -> float:
    """The part of a card a predicted peak may take (see CONTEXT_BYTES, FRAGMENTATION)."""
    return (gpu_mem_gb * 1e9 - CONTEXT_BYTES) / (1 + FRAGMENTATION)


class Estimator:
    """Peak predictions for one model, method and precision (see the module docstring)."""

    def __init__(self, model: str | Path | dict[str, Any], method: MethodSpec, s: Settings):
        self.name = str(model) if not isinstance(model, dict) else model.get("model_type", "?")
        self.config = hf_config(model)
        self.shape = shape_of(self.config)
        self.method = method
        self.s = s
        self.b = DTYPE_BYTES[s.precision]
        self.counts = count_parameters(self.config, method)
        self.weights = self.counts.frozen * self.b
        self.per_block = block_saved_bytes(
            self.shape,
            self.counts.adapted,
            rank=method.rank,
            compute_bytes=self.b,
            dropout=method.dropout,
            device=s.device,
            attn_implementation=s.attn_implementation,
            seq_len=s.seq_len,
        )

    def saved_bytes(self, tokens: int, layers: int | None = None) -> float:
        """Bytes saved for backward by ``layers`` full blocks (all by default), the final norm
        and the loss's logits, for ``tokens`` tokens, no checkpointing."""
        sh, layers = self.shape, self.shape.layers if layers is None else layers
        final_norm = 4 * sh.hidden if sh.layout == "gated" else self.b * sh.hidden
        copies = adapter_copy_bytes(self.counts.adapted, self.method.rank, self.b)
        return layers * (self.per_block * tokens + copies) + (final_norm + 4 * sh.vocab) * tokens

    def train_peak(self, micro: int) -> int:
        tokens = micro * self.s.seq_len
        sh = self.shape
        states = 16 * self.counts.trainable  # fp32 weight, gradient, two AdamW moments
        logits = logits_bytes(sh, self.b) * tokens
        if self.s.gradient_checkpointing:
            inputs = sh.layers * self.b * sh.hidden * tokens  # each block's saved input
            one_block = self.per_block * tokens
            acts = inputs + one_block + logits
        else:
            acts = self.saved_bytes(tokens) - 4 * sh.vocab * tokens + logits
        return int(self.weights + states + acts)

    def eval_peak(self, batch: int, merged: bool) -> int:
        sh, s = self.shape, self.s
        kv = 2 * sh.layers * sh.kv_heads * sh.head_dim * self.b * batch * s.seq_len
        prefill = batch * s.source_len
        inter = (3 if sh.layout == "gated" else 2) * self.b * sh.ffn * prefill
        last_logits = (self.b + 4) * sh.vocab * batch
        extra = 0
        if merged:  # Eq. 8 in place: one fp32 ΔW at a time
            extra = max(4 * d_in * d_out for d_in, d_out in self.counts.adapted)
        else:  # the adapter's fp32 copy of its input during prefill
            extra = 4 * max(d_in for d_in, _ in self.counts.adapted) * prefill
            extra += 4 * self.counts.trainable
        return int(self.weights + kv + inter + last_logits + extra)

    def plan(self) -> Plan:
        s = self.s
        if s.effective_batch % s.world:
            raise MemoryPlanError(
                f"effective batch {s.effective_batch} is not a multiple of the {s.world} "
                "processes; use a world size that divides it (1, 2, 4 or 8 for 64)"
            )
        share = s.effective_batch // s.world
        room = usable_bytes(s.gpu_mem_gb)
        micro = next((m for m in _divisors_desc(share) if self.train_peak(m) <= room), None)
        if micro is None:
            need = self.train_peak(1)
            raise MemoryPlanError(self._refusal("training at micro-batch 1", need, room))
        evb = next(
            (b for b in _halvings(s.eval_batch) if self.eval_peak(b, merged=False) <= room), None
        )
        if evb is None:
            need = self.eval_peak(1, merged=False)
            raise MemoryPlanError(self._refusal("evaluation at batch 1", need, room))
        notes = []
        if micro * s.world * (share // micro) != s.effective_batch:  # pragma: no cover - divisors
            notes.append("effective batch not reached")
        if evb < s.eval_batch:
            notes.append(f"eval batch {s.eval_batch} lowered to {evb}")
        return Plan(
            model=self.name,
            gpu_mem_gb=s.gpu_mem_gb,
            precision=s.precision,
            gradient_checkpointing=s.gradient_checkpointing,
            weights_bytes=int(self.weights),
            trainable_params=self.counts.trainable,
            train_bytes=self.train_peak(micro),
            merged_eval_bytes=self.eval_peak(evb, merged=True),
            unmerged_eval_bytes=self.eval_peak(evb, merged=False),
            micro_batch=micro,
            grad_accum=share // micro,
            world=s.world,
            effective_batch=s.effective_batch,
            eval_batch=evb,
            saved_per_token_block=self.per_block,
            notes=notes,
        )

    def _refusal(self, what: str, need: float, room: float) -> str:
        fixes = []
        if not self.s.gradient_checkpointing:
            fixes.append("turn gradient checkpointing on (model.gradient_checkpointing=true)")
        fixes += [
            f"shorten the inputs (data.max_source_length, now {self.s.source_len})",
            "use a card with more memory, or a 4/8-bit base",
        ]
        return (
            f"memory plan: {self.name} does not fit a {self.s.gpu_mem_gb:g} GB card for {what}: "
            f"needs {need / GiB:.1f} GiB (weights {self.weights / GiB:.1f} GiB) but "
            f"{room / GiB:.1f} GiB are usable (after {CONTEXT_BYTES / GiB:.0f} GiB of context "
            f"and {FRAGMENTATION:.0%} fragmentation). Fix: {'; or '.join(fixes)}"
        )


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def _halvings(n: int) -> list[int]:
    out = []
    while n >= 1:
        out.append(n)
        n //= 2
    return out


def plan(model: str | Path | dict[str, Any], method: MethodSpec, settings: Settings) -> Plan:
    """The :class:`Plan` for ``model`` (preset, folder or config dict); raises
    :class:`MemoryPlanError` with the numbers and the fix when nothing fits."""
    return Estimator(model, method, settings).plan()


def check_job(cfg: Any, *, world: int, mixed_precision: str, card_bytes: int) -> dict[str, Any]:
    """The plan of a GPU job (``cfg``: the composed config), before its model loads.

    Returns the plan as recorded in ``results.json`` (``memory_plan``), or ``{"skipped": why}``
    for a model type the plan does not know. Raises :class:`MemoryPlanError` with the numbers
    and the fix when the configured micro-batch or evaluation batch does not fit the card."""
    from moelora.engine.distributed import effective_batch_size
    from moelora.models.loading import resolve_checkpointing, resolve_target_modules

    if quantization := cfg.model.get("quantization"):  # the plan counts unquantized weights
        return {
            "skipped": f"model.quantization={quantization}: the plan knows unquantized bases "
            "only (it would count the frozen weights at the compute dtype and refuse jobs that fit)"
        }
    adapter = cfg.method.get("adapter") or {}
    experts = adapter.get("num_experts")
    method = MethodSpec(
        kind="moelora" if experts else "lora",
        rank=int(adapter.get("rank") or 16),
        num_experts=int(experts or 1),
        dropout=float(adapter.get("dropout") or 0.0),
        target_modules=resolve_target_modules(cfg.model, cfg.method.target_modules),
    )
    settings = Settings(
        source_len=int(cfg.data.max_source_length),
        target_len=int(cfg.data.max_target_length),
        effective_batch=effective_batch_size(world, cfg.trainer),
        world=world,
        eval_batch=int(cfg.trainer.eval.batch_size),
        precision={"bf16": "bf16", "fp16": "fp16"}.get(mixed_precision, "fp32"),
        gradient_checkpointing=resolve_checkpointing(
            cfg.model.gradient_checkpointing, cfg.model.path
        ),
        attn_implementation=str(cfg.model.get("attn_implementation") or "sdpa"),
        gpu_mem_gb=card_bytes / 1e9,
    )
    try:
        est = Estimator(Path(str(cfg.model.path)), method, settings)
    except ValueError as err:  # a layout the plan does not know
        return {"skipped": str(err)}
    room = usable_bytes(settings.gpu_mem_gb)
    micro, evb = int(cfg.trainer.per_device_batch_size), settings.eval_batch
    chosen = est.plan()  # raises when not even micro-batch 1 fits
    if est.train_peak(micro) > room:
        raise MemoryPlanError(
            f"memory plan: trainer.per_device_batch_size={micro} needs "
            f"{est.train_peak(micro) / GiB:.1f} GiB, {room / GiB:.1f} GiB usable on this "
            f"{settings.gpu_mem_gb:.0f} GB card; use trainer.per_device_batch_size="
            f"{chosen.micro_batch} (the accumulation follows with trainer=paper). {chosen.summary()}"
        )
    if est.eval_peak(evb, merged=False) > room:
        raise MemoryPlanError(
            f"memory plan: trainer.eval.batch_size={evb} needs "
            f"{est.eval_peak(evb, merged=False) / GiB:.1f} GiB, {room / GiB:.1f} GiB usable; "
            f"use trainer.eval.batch_size={chosen.eval_batch}"
        )
    record = chosen.as_dict()
    record.update(
        configured={
            "micro_batch": micro,
            "train_bytes": est.train_peak(micro),
            "eval_batch": evb,
            "merged_eval_bytes": est.eval_peak(evb, merged=True),
            "unmerged_eval_bytes": est.eval_peak(evb, merged=False),
        },
        card_bytes=int(card_bytes),
    )
    return record


def gpu_memory_plan(cfg: Any, accelerator: Any) -> dict[str, Any] | None:
    """:func:`check_job` for a job on a CUDA device (None on the CPU); printed once."""
    if accelerator.device.type != "cuda":
        return None
    card = torch.cuda.get_device_properties(accelerator.device).total_memory
    record = check_job(
        cfg,
        world=accelerator.num_processes,
        mixed_precision=str(accelerator.mixed_precision),
        card_bytes=card,
    )
    if "skipped" in record:
        accelerator.print(f"[memory] no plan: {record['skipped']}")
    else:
        accelerator.print(f"[memory] {Plan(**{k: record[k] for k in PLAN_FIELDS}).summary()}")
    return record


def table(
    models: Sequence[str] = tuple(PRESETS),
    cards: Sequence[float] = (24, 40, 80),
    **settings: Any,
) -> list[dict[str, Any]]:
    """One row per model × card: the predicted peaks and the chosen micro-batch (or why not)."""
    rows = []
    for name in models:
        for gb in cards:
            s = Settings(gpu_mem_gb=gb, **settings)
            est = Estimator(name, MethodSpec(), s)
            row: dict[str, Any] = {"model": name, "gpu_gb": gb}
            try:
                p = est.plan()
                row.update(
                    train_gib=p.train_bytes / GiB,
                    merged_gib=p.merged_eval_bytes / GiB,
                    unmerged_gib=p.unmerged_eval_bytes / GiB,
                    micro=p.micro_batch,
                    accum=p.grad_accum,
                    eval_batch=p.eval_batch,
                )
            except MemoryPlanError as err:
                row.update(
                    train_gib=est.train_peak(1) / GiB,
                    merged_gib=est.eval_peak(1, merged=True) / GiB,
                    unmerged_gib=est.eval_peak(1, merged=False) / GiB,
                    micro=None,
                    accum=None,
                    eval_batch=None,
                    refused=str(err),
                )
            rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| model | card | train (GiB) | merged eval (GiB) | unmerged eval (GiB) "
        "| micro × accum | eval batch |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        choice = f"{r['micro']} × {r['accum']}" if r["micro"] else "does not fit"
        lines.append(
            f"| {r['model']} | {r['gpu_gb']:g} GB | {r['train_gib']:.1f} | {r['merged_gib']:.1f} "
            f"| {r['unmerged_gib']:.1f} | {choice} | {r['eval_batch'] or '-'} |"
        )
    return "\n".join(lines)


def table_page(**settings: Any) -> str:
    """docs/results/memory-plan.md: :func:`table` at the paper's settings (or ``settings``) as
    a page that names the command and the settings it was computed with."""
    s = Settings(gpu_mem_gb=80, **settings)
    method = MethodSpec()
    return "\n".join(
        [
            "# Memory plan: the paper's setting on 24, 40 and 80 GB cards",
            "",
            "Generated by `make memory-plan` (`python -m moelora.engine.memory --table --out "
            "docs/results/memory-plan.md`, moelora/engine/memory.py); do not edit. Predicted "
            "from each model's config alone (meta device, no weights): MOELoRA with "
            f"N = {method.num_experts} experts of total rank r = {method.rank} on every linear "
            f"layer of the blocks, {s.precision}, gradient checkpointing "
            f"{'on' if s.gradient_checkpointing else 'off'}, {s.source_len} input + "
            f"{s.target_len} answer tokens, effective batch {s.effective_batch} on "
            f"{s.world} GPU(s), evaluation batch at most {s.eval_batch}, attention "
            f"{s.attn_implementation}. A plan fits when its peak is within (card − "
            f"{CONTEXT_BYTES / GiB:g} GiB) / {1 + FRAGMENTATION:g}. These are predictions checked against measured saved-tensor bytes "
            "on the CPU (tests/test_memory_plan.py), not measurements on a GPU.",
            "",
            markdown(table(**settings)),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m moelora.engine.memory", description=__doc__)
    ap.add_argument(
        "--model", default="chatglm-6b", help=f"a preset ({', '.join(PRESETS)}) or a folder"
    )
    ap.add_argument("--gpu-mem", type=float, default=80.0, help="the card's memory in GB")
    ap.add_argument("--world", type=int, default=1, help="processes (GPUs)")
    ap.add_argument("--effective-batch", type=int, default=64)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--source-len", type=int, default=PAPER_SOURCE_LEN)
    ap.add_argument("--target-len", type=int, default=PAPER_TARGET_LEN)
    ap.add_argument("--precision", choices=sorted(DTYPE_BYTES), default="bf16")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--attn", default="sdpa", choices=("sdpa", "flash_attention_2", "eager"))
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--table", action="store_true", help="3 presets × 24/40/80 GB, Markdown")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--out", type=Path, default=None, help="with --table: write the page here")
    a = ap.parse_args(argv)
    common = dict(
        source_len=a.source_len,
        target_len=a.target_len,
        effective_batch=a.effective_batch,
        world=a.world,
        eval_batch=a.eval_batch,
        precision=a.precision,
        gradient_checkpointing=not a.no_checkpointing,
        attn_implementation=a.attn,
    )
    if a.table and a.out is not None:
        write_text(a.out, table_page(**common))
        print(f"[memory] {a.out}")
        return 0
    if a.table:
        rows = table(**common)
        print(json.dumps(rows, indent=1) if a.json else markdown(rows))
        return 0
    method = MethodSpec(rank=a.rank, num_experts=a.experts)
    try:
        p = plan(a.model, method, Settings(gpu_mem_gb=a.gpu_mem, **common))
    except MemoryPlanError as err:
        print(err)
        return 2
    print(json.dumps(p.as_dict(), indent=1) if a.json else p.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
