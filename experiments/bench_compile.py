"""Eager and compiled (``trainer.compile=on``) training steps of MOELoRA (D), MOELoRA (S),
MoLoRA and peft LoRA at equal rank, on the default job's shapes, measured in one interleaved run,
with each step's achieved FLOP/s as a fraction of a matmul peak measured in the same run.

The default job (conf/trainer/default.yaml, conf/method/*.yaml): the MedSynth-8 base's shapes
(moelora.data.medsynth.pretrain.BaseConfig, randomly initialised: the step's arithmetic does
not depend on the weights), all 7 projections adapted, total rank 16 (8 experts of rank 2),
alpha 32, adapter dropout 0.1, steps of 8 examples sorted by length into 2 micro-batches of 4
(``length_groups: 2``), the token-mean loss of moelora.engine.train, gradient clipping and AdamW.
The sequence lengths are those of MedSynth-8's training split when ``artifacts/`` holds it and
its tokenizer (``make base``), else drawn from a fixed synthetic range (the output says which).
Eager steps draw dropout masks as the CPU default does (``bits16``); compiled steps use torch's
dropout inside the graph (moelora.engine.compile).

Timing: every variant runs the same sequence of steps; one step of each variant in turn per
round (interleaved, so machine load falls on all alike), medians and interquartile ranges over
the rounds, compilation and warm-up excluded. FLOPs of one step (forward + backward) are
counted by ``torch.utils.flop_counter.FlopCounterMode`` on the eager model; the roofline line
divides a variant's FLOP/s by the median FLOP/s of a square fp32 matmul timed between the rounds.

Run: ``python experiments/bench_compile.py`` (``--quick``: fewer rounds); ``make bench`` runs it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from moelora.data.medsynth.pretrain import BaseConfig  # noqa: E402
from moelora.engine.compile import compile_for_training, mark_dynamic_lengths  # noqa: E402
from moelora.engine.train import _micro_batches  # noqa: E402
from moelora.method.dropout import mask_sampling, use_in  # noqa: E402
from moelora.method.gate import task_context  # noqa: E402
from moelora.utils.io import write_json  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TASKS = [f"task{i}" for i in range(8)]
METHODS = ("moelora_dense", "moelora_sparse", "molora", "lora")
LABELS = {
    "moelora_dense": "MOELoRA (D)",
    "moelora_sparse": "MOELoRA (S)",
    "molora": "MoLoRA",
    "lora": "peft LoRA",
}
REPO = Path(__file__).resolve().parents[1]


def make_base(seed: int = 0) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = BaseConfig()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            pad_token_id=0,
        )
    )
    return model.requires_grad_(False)


def make_method(name: str, *, dropout: float = 0.1) -> nn.Module:
    """One of :data:`METHODS` at total rank 16, alpha 32 on the 7 projections (conf/method)."""
    model = make_base()
    kw = dict(tasks=TASKS, target_modules=TARGETS, rank=16, alpha=32, dropout=dropout)
    if name == "lora":
        from baselines.lora import build

        return build(model, **kw)
    if name == "molora":
        from baselines.molora import build

        return build(model, num_experts=8, **kw)
    from moelora.method.model import build

    gate = {"moelora_dense": "dense", "moelora_sparse": "sparse"}[name]
    return build(model, num_experts=8, gate=gate, top_k=2, **kw)


def default_job_lengths(artifacts: Path) -> tuple[list[int], list[int], str] | None:
    """(sequence length, answer tokens) of every MedSynth-8 training example, or None."""
    data, base = artifacts / "medsynth" / "train.jsonl", artifacts / "base" / "medsynth-tiny"
    if not (data.is_file() and (base / "tokenizer.json").is_file()):
        return None
    from transformers import AutoTokenizer

    from moelora.data.encoding import Encoder
    from moelora.engine.train import supervised_tokens
    from moelora.method.tasks import TaskMap

    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line]
    tasks = sorted({r["task_dataset"] for r in records})
    encoder = Encoder(AutoTokenizer.from_pretrained(str(base)), TaskMap(tasks), 256, 128)
    examples = [encoder.train_example(r) for r in records]
    lengths = [len(e["input_ids"]) for e in examples]
    shown = data.relative_to(REPO) if data.is_relative_to(REPO) else data
    return lengths, [supervised_tokens(e) for e in examples], f"{shown} ({len(records)} examples)"


def make_steps(
    num_steps: int, lengths: list[int], answers: list[int], *, vocab: int, seed: int = 0
) -> list[list[dict[str, torch.Tensor]]]:
    """``num_steps`` steps of 8 random examples, each 2 length-sorted micro-batches of 4 as
    moelora.engine.train cuts them; tokens random, padding and ignored labels as collated."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    steps = []
    for _ in range(num_steps):
        indices = rng.sample(range(len(lengths)), 8)
        micro = []
        for idx in _micro_batches(indices, 0, 1, 1, lengths, 2):
            width = max(lengths[j] for j in idx)
            ids = torch.randint(1, vocab, (len(idx), width), generator=g)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for row, j in enumerate(idx):
                mask[row, : lengths[j]] = 1
                answer = slice(lengths[j] - answers[j], lengths[j])  # the answer, EOS included
                labels[row, answer] = ids[row, answer]
            micro.append(
                {
                    "input_ids": ids,
                    "attention_mask": mask,
                    "labels": labels,
                    "task_ids": torch.tensor([j % len(TASKS) for j in idx]),
                    "tokens": int(sum(answers[j] for j in idx)),
                }
            )
        steps.append(micro)
    return steps


class Variant:
    """One method, eager or compiled, with its optimizer; ``step(micro)`` is one training step
    as moelora.engine.train runs it (token-weighted micro-batch losses, clip 1.0, AdamW)."""

    def __init__(
        self,
        method: str,
        compiled: bool,
        *,
        dropout: float = 0.1,
        cache_dir: Path | None = None,
        backend: str = "inductor",
    ) -> None:
        self.method, self.compiled = method, compiled
        self.model = make_method(method, dropout=dropout).train()
        use_in(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=3.5e-3)
        self.call = compile_for_training(
            self.model,
            "on" if compiled else "off",
            backend=backend,
            cache_dir=cache_dir,
        )

    @property
    def name(self) -> str:
        return f"{LABELS[self.method]} {'compiled' if self.compiled else 'eager'}"

    def step(self, micro: list[dict[str, torch.Tensor]]) -> float:
        total = sum(m["tokens"] for m in micro)
        step_loss = 0.0
        for m in micro:
            batch = mark_dynamic_lengths(
                {k: m[k] for k in ("input_ids", "attention_mask", "labels")}
            )
            with task_context(self.model, m["task_ids"]), mask_sampling("bits16"):
                loss = self.call(**batch).loss * (m["tokens"] / total)
                loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return step_loss


def step_flops(method: str, steps: list[list[dict[str, torch.Tensor]]], dropout: float) -> float:
    """Mean FLOPs (forward + backward; 2 per multiply-add) of the steps, counted eagerly."""
    from torch.utils.flop_counter import FlopCounterMode

    v = Variant(method, compiled=False, dropout=dropout)
    with FlopCounterMode(display=False) as counter:
        for micro in steps:
            v.step(micro)
    return counter.get_total_flops() / len(steps)


def matmul_rate(n: int = 512, repeats: int = 5) -> float:
    """FLOP/s of an ``n×n @ n×n`` fp32 matmul (the best of ``repeats``): the machine's peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(
    *,
    methods: tuple[str, ...],
    rounds: int,
    warmup: int,
    num_steps: int,
    artifacts: Path,
    cache_dir: Path | None,
    dropout: float = 0.1,
) -> dict:
    real = default_job_lengths(artifacts)
    if real is None:  # a fixed synthetic range (MedSynth-8 prompts and answers span about this)
        rng = random.Random(0)
        answers = [rng.randint(4, 60) for _ in range(2000)]
        lengths = [a + rng.randint(40, 200) for a in answers]
        source = "synthetic lengths (no artifacts/medsynth + base tokenizer)"
    else:
        lengths, answers, source = real
    steps = make_steps(num_steps, lengths, answers, vocab=BaseConfig().vocab_size)
    log(f"lengths: {source}; counting FLOPs")
    flops = {m: step_flops(m, steps, dropout) for m in methods}  # the steps the rounds time
    variants = [
        Variant(m, c, dropout=dropout, cache_dir=cache_dir) for m in methods for c in (False, True)
    ]
    compile_s = {}
    for v in variants:  # compilation (first steps) and warm-up, not timed as steps
        compile_s[v.name] = timed(lambda v=v: [v.step(steps[i]) for i in range(2)])
        log(f"{v.name}: first 2 steps (compilation included) {compile_s[v.name]:.1f} s")
        for i in range(warmup):
            v.step(steps[(i + 2) % len(steps)])  # different lengths: no recompilation
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    peaks = []
    for r in range(rounds):
        peaks.append(matmul_rate())
        micro = steps[r]
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            times[v.name].append(timed(lambda v=v, micro=micro: v.step(micro)))
        log(f"round {r + 1}/{rounds}")
    peak = statistics.median(peaks)
    rows = []
    for v in variants:
        q1, med, q3 = quartiles(times[v.name])
        mean_flops = flops[v.method]
        rows.append(
            {
                "method": LABELS[v.method],
                "compiled": v.compiled,
                "step_s": med,
                "step_s_q1": q1,
                "step_s_q3": q3,
                "first_steps_s": compile_s[v.name],
                "gflop_per_step": mean_flops / 1e9,
                "gflops": mean_flops / med / 1e9,
                "of_peak": mean_flops / med / peak,
            }
        )
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lengths": source,
        "adapter_dropout": dropout,
        "rounds": rounds,
        "steps_cycled": len(steps),
        "matmul_peak_gflops": peak / 1e9,
        "matmul_peak_gflops_range": [min(peaks) / 1e9, max(peaks) / 1e9],
        "rows": rows,
    }


def table(result: dict) -> str:
    by = {(r["method"], r["compiled"]): r for r in result["rows"]}
    lora_c = by.get(("peft LoRA", True))
    lines = [
        "| method | eager step (IQR) | compiled step (IQR) | eager / compiled | "
        "compiled / compiled LoRA | GFLOP a step | eager, compiled of peak |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        e, c = by[(method, False)], by[(method, True)]
        vs_lora = f"{c['step_s'] / lora_c['step_s']:.3f}×" if lora_c else "–"
        lines.append(
            f"| {method} | {e['step_s'] * 1e3:.1f} ms ({e['step_s_q1'] * 1e3:.1f}–"
            f"{e['step_s_q3'] * 1e3:.1f}) | {c['step_s'] * 1e3:.1f} ms ({c['step_s_q1'] * 1e3:.1f}–"
            f"{c['step_s_q3'] * 1e3:.1f}) | {e['step_s'] / c['step_s']:.3f}× | {vs_lora} | "
            f"{e['gflop_per_step']:.3f} | {e['of_peak']:.1%}, {c['of_peak']:.1%} |"
        )
    lo, hi = result["matmul_peak_gflops_range"]
    lines.append("")
    lines.append(
        f"Matmul peak (512×512 fp32, {result['threads']} thread(s)): "
        f"{result['matmul_peak_gflops']:.1f} GFLOP/s (median of {result['rounds']}, "
        f"range {lo:.1f}–{hi:.1f}). CPU: {result['cpu']}. torch {result['torch']}. "
        f"Adapter dropout {result['adapter_dropout']}. "
        f"Lengths: {result['lengths']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--dropout", type=float, default=0.1, help="adapter dropout (default job)")
    parser.add_argument("--artifacts", type=Path, default=REPO / "artifacts")
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="inductor's cache (default: a fresh temporary folder, so compilation is cold)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one thread a job, as the CPU grid runs them
    rounds = args.rounds or (6 if args.quick else 30)
    with tempfile.TemporaryDirectory(prefix="bench_compile_") as tmp:
        result = run(
            methods=tuple(args.methods.split(",")),
            rounds=rounds,
            warmup=2,
            num_steps=rounds,
            artifacts=args.artifacts,
            cache_dir=args.cache_dir or Path(tmp),
            dropout=args.dropout,
        )
    print(table(result))
    print(
        "targets: MOELoRA (D) eager / compiled ≥ 1.3×; MOELoRA (D) compiled / compiled LoRA ≤ 1.05×"
    )
    if args.out is not None:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
