"""The one-shot GPU check (``make gpu-check``): no downloads, a few minutes on one H100.

Random-weight models at real width (two blocks of ChatGLM-6B and Qwen2.5-7B with their full
vocabularies; ``--tiny``: the same layouts narrow, on the CPU, in seconds) run:

1. **memory plan vs measured**: moelora/engine/memory.py's predicted training peak against
   ``torch.cuda.max_memory_allocated`` (on the CPU: the saved-tensor bytes plus the weights
   and the adapters' training state), at the paper's lengths (1,024 + 196 tokens), micro-batch 1;
2. **MOELoRA (D) vs peft LoRA** training step (forward, backward, AdamW) in bf16 and fp16:
   median time and peak memory;
3. **generation throughput** (new tokens/s): MOELoRA merged per task (Eq. 8), unmerged, and
   peft LoRA serving two adapters in one mixed batch (``adapter_names``);
4. **two DDP steps** when the machine has two GPUs (else recorded as skipped);
5. **compiled vs eager** step with ``--compile`` (``torch.compile`` on the adapted model; the
   harness's ``trainer.compile`` runs through the same call), else recorded as skipped.

Writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (default reports/gpu_check).
Run: ``python experiments/gpu_check.py`` (``--tiny`` on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from moelora.engine import memory  # noqa: E402
from moelora.method.gate import task_context  # noqa: E402
from moelora.method.merge import merged_for_task  # noqa: E402
from moelora.method.model import build  # noqa: E402
from moelora.utils.measure import saved_tensor_bytes, sync  # noqa: E402

MODELS = ("chatglm-6b", "qwen2.5-7b")
NARROW = {
    "chatglm-6b": {"hidden_size": 256, "inner_hidden_size": 1024, "num_attention_heads": 4},
    "qwen2.5-7b": {
        "hidden_size": 224,
        "intermediate_size": 1184,
        "num_attention_heads": 7,
        "num_key_value_heads": 1,
    },
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def spec_for(name: str, *, tiny: bool, layers: int) -> dict[str, Any]:
    spec = dict(memory.PRESETS[name])
    key = "num_layers" if spec["model_type"] == "chatglm" else "num_hidden_layers"
    spec[key] = layers
    if tiny:
        spec.update(NARROW[name], vocab_size=1024)
        if spec["model_type"] == "chatglm":
            spec.update(bos_token_id=1021, eos_token_id=1022, mask_token_id=1019)
            spec.update(gmask_token_id=1020, pad_token_id=0)
    return spec


def make_model(spec: dict[str, Any], dtype: torch.dtype, device: torch.device) -> nn.Module:
    from transformers import AutoModelForCausalLM

    config = memory.hf_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.requires_grad_(False)


def inputs(spec: dict[str, Any], batch: int, seq: int, device: torch.device) -> torch.Tensor:
    vocab = spec["vocab_size"]
    ids = torch.randint(10, vocab - 10, (batch, seq), device=device)
    if spec["model_type"] == "chatglm":
        ids[:, seq // 2 - 2] = spec["gmask_token_id"]
        ids[:, seq // 2 - 1] = spec["bos_token_id"]
    return ids


def moelora(model: nn.Module, spec: dict[str, Any]) -> nn.Module:
    axis = 1 if spec["model_type"] == "chatglm" else 0
    return build(model, tasks=["a", "b"], target_modules="all-linear", batch_axis=axis)


def peft_lora(model: nn.Module, adapters: int = 1) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules="all-linear")
    model = get_peft_model(model, cfg, adapter_name="a0")
    for i in range(1, adapters):
        model.add_adapter(f"a{i}", cfg)
    return model


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_step(model: nn.Module, ids: torch.Tensor, dtype: torch.dtype, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    task_ids = torch.zeros(ids.shape[0], dtype=torch.long, device=device)

    def step() -> None:
        with task_context(model, task_ids) if hasattr(model, "moelora_router") else _null():
            with torch.autocast(device.type, dtype=dtype):
                loss = model(input_ids=ids, labels=ids).loss
            scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def peak_of(fn: Callable[[], object], model: nn.Module, device: torch.device) -> int:
    """CUDA: the allocator's peak; CPU: saved tensors + weights + adapters' training state."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device))
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(saved_tensor_bytes(fn, exclude=list(model.parameters())) + weights + 12 * trainable)


def check_plan(name: str, a: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    spec = spec_for(name, tiny=a.tiny, layers=a.layers)
    model = moelora(make_model(spec, torch.bfloat16, device), spec)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.train()
    seq = a.source_len + a.target_len
    ids = inputs(spec, 1, seq, device)
    measured = peak_of(train_step(model, ids, torch.bfloat16, device), model, device)
    settings = memory.Settings(
        source_len=a.source_len,
        target_len=a.target_len,
        precision="bf16",
        device=device.type,
        gradient_checkpointing=True,
    )
    est = memory.Estimator(spec, memory.MethodSpec(), settings)
    predicted = est.train_peak(1)
    del model
    _free(device)
    return {
        "model": name,
        "predicted_bytes": predicted,
        "measured_bytes": measured,
        "ratio": predicted / measured,
    }


def compare_steps(name: str, a: argparse.Namespace, device: torch.device) -> list[dict]:
    spec = spec_for(name, tiny=a.tiny, layers=a.layers)
    ids = inputs(spec, 1, a.source_len + a.target_len, device)
    rows = []
    for prec, dtype in DTYPES.items():
        for method, wrap in (
            ("moelora_dense", lambda m: moelora(m, spec)),
            ("peft_lora", peft_lora),
        ):
            model = wrap(make_model(spec, dtype, device)).train()
            step = train_step(model, ids, dtype, device)
            rows.append(
                {
                    "model": name,
                    "precision": prec,
                    "method": method,
                    "step_seconds": median_time(step, device, a.repeats),
                    "peak_bytes": peak_of(step, model, device),
                }
            )
            del model, step
            _free(device)
    return rows


def generation(name: str, a: argparse.Namespace, device: torch.device) -> list[dict]:
    spec = spec_for(name, tiny=a.tiny, layers=a.layers)
    ids = inputs(spec, a.gen_batch, a.source_len, device)
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)
    kwargs["pad_token_id"] = 0
    rows = []

    def rate(fn: Callable[[], object]) -> float:
        return a.gen_batch * a.new_tokens / median_time(fn, device, a.repeats)

    model = moelora(make_model(spec, torch.bfloat16, device), spec).eval()
    tasks = torch.tensor([i % 2 for i in range(a.gen_batch)], device=device)

    def unmerged() -> None:
        with torch.no_grad(), task_context(model, tasks):
            model.generate(input_ids=ids, attention_mask=mask, **kwargs)

    def merged() -> None:
        with torch.no_grad(), merged_for_task(model, 0):
            model.generate(input_ids=ids, attention_mask=mask, **kwargs)

    rows.append({"model": name, "mode": "moelora_unmerged_mixed", "tokens_per_s": rate(unmerged)})
    rows.append({"model": name, "mode": "moelora_merged_one_task", "tokens_per_s": rate(merged)})
    if spec["model_type"] == "chatglm":  # peft splits adapter_names along axis 0
        why = "peft's adapter_names needs batch-first inputs; ChatGLM-6B runs sequence-first"
        return rows + [{"model": name, "mode": "peft_lora_mixed_adapters", "skipped": why}]
    peft_model = peft_lora(make_model(spec, torch.bfloat16, device), adapters=2).eval()
    names = [f"a{i % 2}" for i in range(a.gen_batch)]

    def mixed() -> None:
        with torch.no_grad():
            peft_model.generate(input_ids=ids, attention_mask=mask, adapter_names=names, **kwargs)

    rows.append({"model": name, "mode": "peft_lora_mixed_adapters", "tokens_per_s": rate(mixed)})
    return rows


def compiled(name: str, a: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    if not a.compile:
        return {"model": name, "skipped": "run with --compile"}
    spec = spec_for(name, tiny=a.tiny, layers=a.layers)
    ids = inputs(spec, 1, a.source_len + a.target_len, device)
    model = moelora(make_model(spec, torch.bfloat16, device), spec).train()
    eager = median_time(train_step(model, ids, torch.bfloat16, device), device, a.repeats)
    compiled_model = torch.compile(model)
    fast = median_time(train_step(compiled_model, ids, torch.bfloat16, device), device, a.repeats)
    return {"model": name, "eager_seconds": eager, "compiled_seconds": fast}


def ddp(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        return {"skipped": "needs two GPUs"}
    # two processes, two steps: the harness's own launch (docs/distributed.md)
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).resolve()), "--ddp-worker"],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return {"returncode": out.returncode, "tail": out.stdout[-500:] + out.stderr[-500:]}


def ddp_worker() -> None:
    import torch.distributed as dist

    dist.init_process_group("nccl")
    rank = dist.get_rank()
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    spec = spec_for("qwen2.5-7b", tiny=True, layers=2)
    model = moelora(make_model(spec, torch.bfloat16, device), spec).train()
    ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[rank])
    ids = inputs(spec, 2, 64, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    for _ in range(2):
        with task_context(model, torch.zeros(2, dtype=torch.long, device=device)):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = ddp_model(input_ids=ids, labels=ids).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    print(f"rank {rank}: loss {loss.item():.4f}")
    dist.destroy_process_group()


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def markdown(report: dict[str, Any]) -> str:
    mib = 1024**2
    lines = [f"# GPU check on {report['device']}", "", "## Memory plan vs measured peak", ""]
    lines += ["| model | predicted (MiB) | measured (MiB) | ratio |", "|---|---|---|---|"]
    for r in report["memory_plan"]:
        lines.append(
            f"| {r['model']} | {r['predicted_bytes'] / mib:.1f} | {r['measured_bytes'] / mib:.1f} "
            f"| {r['ratio']:.3f} |"
        )
    lines += ["", "## Training step", "", "| model | precision | method | step (s) | peak (MiB) |"]
    lines.append("|---|---|---|---|---|")
    for r in report["train_step"]:
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['method']} | {r['step_seconds']:.4f} "
            f"| {r['peak_bytes'] / mib:.1f} |"
        )
    lines += ["", "## Generation", "", "| model | mode | new tokens/s |", "|---|---|---|"]
    for r in report["generation"]:
        value = f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else f"skipped: {r['skipped']}"
        lines.append(f"| {r['model']} | {r['mode']} | {value} |")
    lines += [
        "",
        f"DDP: {json.dumps(report['ddp'])}",
        "",
        f"Compile: {json.dumps(report['compile'])}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="narrow models on the CPU (seconds)")
    ap.add_argument("--out", type=Path, default=Path("reports/gpu_check"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time a torch.compile'd step")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ddp_worker:
        ddp_worker()
        return 0
    if a.tiny:
        device = torch.device("cpu")
        a.source_len, a.target_len, a.gen_batch, a.new_tokens = 24, 8, 2, 4
        a.repeats = min(a.repeats, 1)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: run with --tiny on a CPU", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        a.source_len, a.target_len = memory.PAPER_SOURCE_LEN, memory.PAPER_TARGET_LEN
        a.gen_batch, a.new_tokens = 16, 64
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--tiny)"
    report: dict[str, Any] = {
        "device": name,
        "tiny": a.tiny,
        "layers": a.layers,
        "lengths": [a.source_len, a.target_len],
        "torch": torch.__version__,
    }
    report["memory_plan"] = [check_plan(m, a, device) for m in MODELS]
    report["train_step"] = [r for m in MODELS for r in compare_steps(m, a, device)]
    report["generation"] = [r for m in MODELS for r in generation(m, a, device)]
    report["ddp"] = ddp(device)
    report["compile"] = [compiled(m, a, device) for m in MODELS]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    (a.out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
