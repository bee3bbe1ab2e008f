"""Serving mixed-task traffic (#16): one batched path for all tasks vs per-task adapters.

A stream of requests arrives in random task order (8 tasks, equally many each). Four setups
answer the same stream, interleaved in one process with the order alternated per repetition:

* ``base``: the bare base model (the floor);
* ``moelora_mixed``: MOELoRA (N = 8, r = 16) unmerged, consecutive requests batched whatever
  their task; each row reads its own task's expert weights (moelora.method.gate.task_context);
* ``moelora_grouped_merged``: a batch holds one task's requests only and runs with that task's
  weights merged (Eq. 8, moelora.method.merge.merged_for_task, re-merged when the task changes); a
  request waits until its task has a full batch;
* ``single_mixed``: peft LoRA (Single), the 8 task adapters (r = 16 each) loaded at once,
  consecutive requests batched with ``adapter_names`` (one per row), which peft splits by
  adapter inside every layer.

Every request gets a fixed number of new tokens (greedy, EOS ignored), so every setup does the
same work. Throughput = generated tokens / summed batch time. Latency of a request = the end
of its batch − its arrival, with requests arriving at a constant rate (``--load`` × the bare
base's capacity at that batch size) and one server taking ready batches in order: mixed
batches are ready when their B-th request has arrived, one-task batches when the B-th request
of that task has. Memory: the bytes of each setup's parameters (adapters apart), and on CUDA
the peak allocated while serving. On CUDA the table adds model FLOPs utilisation: 2 × base
linear parameters × processed tokens / time / the device's peak (``--peak-tflops``).

    python experiments/bench_serving.py                  # the bench's tiny Llama
    python experiments/bench_serving.py --base medsynth  # the MedSynth-8 base (`make base`)
    python experiments/bench_serving.py --quick          # a short check that it works
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from experiments.bench_moelora import TARGETS, TASKS, make_base  # noqa: E402
from moelora.method.gate import task_context  # noqa: E402
from moelora.method.merge import merged_for_task  # noqa: E402
from moelora.method.model import build  # noqa: E402
from moelora.utils.io import write_json  # noqa: E402
from moelora.utils.measure import alternating, spread, sync  # noqa: E402

SETUPS = ("base", "moelora_mixed", "moelora_grouped_merged", "single_mixed")
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "4090": 165.0,
}  # dense bf16/fp16 tensor-core peaks


@dataclass
class Request:
    task: int
    prompt: list[int]
    arrival: int  # arrival index in the stream


@dataclass
class Setup:
    name: str
    model: nn.Module
    one_task_batches: bool = False
    merged: bool = False
    row_kwargs: Callable[[list[int]], dict] | None = None
    param_bytes: int = 0
    adapter_bytes: int = 0
    peak_bytes: list[int] = field(default_factory=list)


# ---- models ----------------------------------------------------------------------------
def _bytes(params) -> int:
    return int(sum(p.numel() * p.element_size() for p in params))


def _randomise_lora_b(model: nn.Module, std: float) -> None:
    """A trained-looking adapter: B ≠ 0 (B = 0 at init would make every adapter a no-op)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def make_setups(
    load_base: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype = torch.float32
) -> dict[str, Setup]:
    """The four setups on copies of one base (adapter weights in fp32, as peft keeps them)."""
    from peft import LoraConfig, get_peft_model

    def fresh() -> nn.Module:
        return load_base().to(dtype)

    base = fresh().to(device).eval()
    base_bytes = _bytes(base.parameters())
    moelora = build(
        fresh(), tasks=TASKS, target_modules=TARGETS, num_experts=8, rank=16, alpha=32, dropout=0.0
    )
    _randomise_lora_b(moelora, 0.02)
    moelora = moelora.to(device).eval()
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"
    )
    single = get_peft_model(fresh(), lora, adapter_name=TASKS[0])
    for task in TASKS[1:]:
        single.add_adapter(task, lora)
    _randomise_lora_b(single, 0.02)
    single = single.to(device).eval()
    moelora_bytes = _bytes(
        p for n, p in moelora.named_parameters() if "lora_" in n or "moelora_router" in n
    )
    single_bytes = _bytes(p for n, p in single.named_parameters() if "lora_" in n)
    return {
        "base": Setup("base", base, param_bytes=base_bytes),
        "moelora_mixed": Setup(
            "moelora_mixed",
            moelora,
            param_bytes=base_bytes + moelora_bytes,
            adapter_bytes=moelora_bytes,
        ),
        "moelora_grouped_merged": Setup(
            "moelora_grouped_merged",
            moelora,
            one_task_batches=True,
            merged=True,
            param_bytes=base_bytes + moelora_bytes,
            adapter_bytes=moelora_bytes,
        ),
        "single_mixed": Setup(
            "single_mixed",
            single,
            row_kwargs=lambda tasks: {"adapter_names": [TASKS[t] for t in tasks]},
            param_bytes=base_bytes + single_bytes,
            adapter_bytes=single_bytes,
        ),
    }


def tiny_llama() -> tuple[Callable[[], nn.Module], Callable[[int], list[list[int]]], int]:
    """The bench's tiny Llama (hidden 256, 4 blocks) and random 32-token prompts."""
    g = torch.Generator().manual_seed(0)

    def prompts(task: int) -> list[list[int]]:
        return [torch.randint(3, 2000, (32,), generator=g).tolist() for _ in range(64)]

    return (lambda: make_base(torch.device("cpu"))), prompts, 0


def medsynth_base(
    path: Path, data: Path
) -> tuple[Callable[[], nn.Module], Callable[[int], list[list[int]]], int]:
    """The MedSynth-8 base and the prompts of its test split, per task."""
    from moelora.data.encoding import Encoder, load_split
    from moelora.method.tasks import PAPER_TASKS, TaskMap
    from moelora.models.loading import load_base_model, load_tokenizer

    tok = load_tokenizer(path)
    task_map = TaskMap(list(PAPER_TASKS))
    encoder = Encoder(
        tokenizer=tok, task_map=task_map, max_source_length=256, max_target_length=128
    )
    records = load_split(data / "test.jsonl", task_map)
    by_task: dict[int, list[list[int]]] = {}
    for r in records:
        by_task.setdefault(task_map.id(r["task_dataset"]), []).append(
            encoder.prompt_ids(r["input"])
        )
    return (lambda: load_base_model(path, dtype="float32")), by_task.__getitem__, encoder.pad_id


def make_stream(
    prompts: Callable[[int], list[list[int]]], per_task: int, seed: int
) -> list[Request]:
    """``per_task`` requests of each task in a random order (prompts drawn with replacement)."""
    rng = random.Random(seed)
    tasks = [t for t in range(len(TASKS)) for _ in range(per_task)]
    rng.shuffle(tasks)
    return [Request(t, rng.choice(prompts(t)), i) for i, t in enumerate(tasks)]


# ---- serving ---------------------------------------------------------------------------
def batches_of(stream: list[Request], size: int, one_task: bool) -> list[list[Request]]:
    """Batches in the order they become ready: consecutive requests, or (``one_task``) a batch
    per task once ``size`` requests of it have arrived; leftovers when the stream ends."""
    if not one_task:
        return [stream[i : i + size] for i in range(0, len(stream), size)]
    waiting: dict[int, list[Request]] = {}
    ready = []
    for r in stream:
        waiting.setdefault(r.task, []).append(r)
        if len(waiting[r.task]) == size:
            ready.append(waiting.pop(r.task))
    return ready + sorted(waiting.values(), key=lambda b: b[-1].arrival)


def serve(
    setup: Setup,
    batches: list[list[Request]],
    *,
    new_tokens: int,
    pad_id: int,
    device: torch.device,
) -> tuple[list[float], float]:
    """Run every batch; returns each batch's seconds (merges included) and the merge seconds."""
    kw = dict(
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=pad_id,
        use_cache=True,
    )
    times, merge_s, current = [], 0.0, None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with ExitStack() as merged:
        for batch in batches:
            width = max(len(r.prompt) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(batch):
                ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
                mask[i, width - len(r.prompt) :] = 1
            ids, mask = ids.to(device), mask.to(device)
            tasks = [r.task for r in batch]
            task_ids = torch.tensor(tasks, device=device)
            extra = setup.row_kwargs(tasks) if setup.row_kwargs else {}
            sync(device)
            t0 = time.perf_counter()
            if setup.merged and tasks[0] != current:
                merged.close()
                merged.enter_context(merged_for_task(setup.model, tasks[0]))
                current = tasks[0]
                merge_s += time.perf_counter() - t0
            with torch.no_grad(), task_context(setup.model, task_ids):
                setup.model.generate(input_ids=ids, attention_mask=mask, **kw, **extra)
            sync(device)
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        setup.peak_bytes.append(int(torch.cuda.max_memory_allocated(device)))
    return times, merge_s


def latencies(batches: list[list[Request]], times: list[float], interval: float) -> list[float]:
    """Per request: end of its batch − its arrival (arrivals every ``interval`` seconds, one
    server, batches taken in ready order)."""
    out, free = [], 0.0
    for batch, t in zip(batches, times):
        start = max(free, max(r.arrival for r in batch) * interval)
        free = start + t
        out.extend(free - r.arrival * interval for r in batch)
    return out


def linear_params(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def adapter_flops_fraction(moelora: nn.Module, base: nn.Module) -> float:
    """FLOPs of the rank-r adapter path per token (``r·(d_in + d_out)`` per adapted linear) over
    the base's linear FLOPs (``d_in·d_out`` each, the output head included): the least extra
    time an unmerged adapter costs when matmuls dominate."""
    from moelora.method.model import moelora_layers

    extra = sum(m.rank * (m.in_features + m.out_features) for _, m in moelora_layers(moelora))
    return extra / linear_params(base)


# ---- one measurement -------------------------------------------------------------------
def measure(
    setups: dict[str, Setup],
    prompts: Callable[[int], list[list[int]]],
    *,
    pad_id: int,
    batch_size: int,
    per_task: int,
    new_tokens: int,
    repeats: int,
    load: float,
    device: torch.device,
) -> dict:
    """Every setup on the same stream, ``repeats`` times, order alternated; raw times kept."""
    stream = make_stream(prompts, per_task, seed=batch_size)
    plans = {n: batches_of(stream, batch_size, s.one_task_batches) for n, s in setups.items()}
    for name, setup in setups.items():  # warm-up, not recorded
        serve(setup, plans[name][:2], new_tokens=new_tokens, pad_id=pad_id, device=device)
    raw: dict[str, list[dict]] = {n: [] for n in setups}
    for _, order in alternating(list(setups), repeats):
        for name in order:
            times, merge_s = serve(
                setups[name], plans[name], new_tokens=new_tokens, pad_id=pad_id, device=device
            )
            raw[name].append({"batch_seconds": times, "merge_seconds": merge_s})
    tokens = len(stream) * new_tokens
    out: dict = {
        "batch_size": batch_size,
        "requests": len(stream),
        "new_tokens": new_tokens,
        "tokens": tokens,
        "setups": {},
        "ratios": {},
    }
    for rep in range(repeats):
        base_times = raw["base"][rep]["batch_seconds"]
        # arrivals at `load` × the bare base's capacity at this batch size (same repetition)
        interval = statistics.median(base_times) / batch_size / load
        for name in setups:
            r = raw[name][rep]
            r["seconds"] = sum(r["batch_seconds"])
            r["tokens_per_s"] = tokens / r["seconds"]
            lat = sorted(latencies(plans[name], r["batch_seconds"], interval))
            r["latency_p50"] = lat[len(lat) // 2]
            r["latency_p95"] = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
            r["arrival_interval"] = interval
    processed = sum(len(r.prompt) for r in stream) + tokens
    for name, setup in setups.items():
        reps = raw[name]
        entry = {
            k: spread([r[k] for r in reps])
            for k in ("seconds", "tokens_per_s", "latency_p50", "latency_p95", "merge_seconds")
        }
        entry.update(
            param_bytes=setup.param_bytes,
            adapter_bytes=setup.adapter_bytes,
            batches=len(plans[name]),
            raw=reps,
        )
        if setup.peak_bytes:
            entry["peak_bytes"] = max(setup.peak_bytes)
        if device.type == "cuda":
            flops = 2 * linear_params(setups["base"].model) * processed
            entry["model_tflops_per_s"] = spread([flops / r["seconds"] / 1e12 for r in reps])
        out["setups"][name] = entry

    def ratio(a: str, b: str, key: str) -> dict[str, float]:
        return spread([raw[a][i][key] / raw[b][i][key] for i in range(repeats)])

    out["ratios"] = {
        "moelora_mixed_vs_single_mixed_throughput": ratio(
            "moelora_mixed", "single_mixed", "tokens_per_s"
        ),
        "moelora_mixed_vs_base_time": ratio("moelora_mixed", "base", "seconds"),
        "moelora_grouped_merged_vs_base_time": ratio("moelora_grouped_merged", "base", "seconds"),
        "single_mixed_vs_base_time": ratio("single_mixed", "base", "seconds"),
        "moelora_grouped_merged_vs_mixed_latency_p50": ratio(
            "moelora_grouped_merged", "moelora_mixed", "latency_p50"
        ),
    }
    return out


def profile(
    setups: dict[str, Setup],
    prompts: Callable[[int], list[list[int]]],
    *,
    pad_id: int,
    batch_size: int,
    new_tokens: int,
    device: torch.device,
    rows: int = 12,
) -> str:
    """Where mixed batches' time goes: torch.profiler tables of the bare base, MOELoRA mixed and
    peft's 8-adapter mixed batch over the same 4 batches (self time per operator)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    stream = make_stream(prompts, max(batch_size, 8), seed=batch_size)
    batch = batches_of(stream, batch_size, one_task=False)[:4]  # several batches: less noise
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    text = []
    for name in ("base", "moelora_mixed", "single_mixed"):
        serve(setups[name], batch, new_tokens=new_tokens, pad_id=pad_id, device=device)
        with torch_profile(activities=activities) as prof:
            serve(setups[name], batch, new_tokens=new_tokens, pad_id=pad_id, device=device)
        text += [
            f"--- {name}: {len(batch)} batches of {batch_size} × {new_tokens} new tokens",
            prof.key_averages().table(sort_by=sort, row_limit=rows),
        ]
    return "\n".join(text)


def _peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def print_table(result: dict, *, peak: float | None) -> None:
    print(f"\n{result['label']}: {result['requests_note']}")
    head = "| batch | setup | tokens/s | time vs base | latency p50 / p95 (ms) | parameters (MiB) |"
    print(head + (" MFU |" if peak else ""))
    print("|---" * (6 + bool(peak)) + "|")
    for row in result["batch_sizes"]:
        base_s = row["setups"]["base"]["seconds"]["median"]
        for name, e in row["setups"].items():
            mib = f"{e['param_bytes'] / 2**20:.1f}" + (
                f" (adapters {e['adapter_bytes'] / 2**20:.2f})" if e["adapter_bytes"] else ""
            )
            line = (
                f"| {row['batch_size']} | {name} | {e['tokens_per_s']['median']:.0f} | "
                f"{e['seconds']['median'] / base_s:.3f}x | {1e3 * e['latency_p50']['median']:.0f}"
                f" / {1e3 * e['latency_p95']['median']:.0f} | {mib} |"
            )
            if peak:
                line += f" {100 * e['model_tflops_per_s']['median'] / peak:.2f} % |"
            print(line)
    for row in result["batch_sizes"]:
        r = row["ratios"]
        fmt = ", ".join(
            f"{k} {v['median']:.3f}x ({v['min']:.3f}–{v['max']:.3f})" for k, v in r.items()
        )
        print(f"batch {row['batch_size']}: {fmt}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base",
        default="tiny",
        help="tiny (the bench's Llama) | medsynth (artifacts/base/medsynth-tiny) | a path",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "artifacts" / "medsynth",
        help="MedSynth-8 folder (prompts for --base medsynth or a path)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--per-task",
        type=int,
        default=None,
        help="requests per task (default: max(batch, 8), so 8 batches at 32)",
    )
    parser.add_argument("--new-tokens", type=int, default=None, help="default 16 (--quick: 8)")
    parser.add_argument("--repeats", type=int, default=None, help="default 5 (--quick: 2)")
    parser.add_argument(
        "--load",
        type=float,
        default=0.5,
        help="arrival rate as a fraction of the bare base's capacity",
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats, 8 new tokens")
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default=None, help="base dtype (default: bfloat16 on CUDA, else float32)"
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (MFU)")
    parser.add_argument("--out", type=Path, default=None, help="write every raw time here (JSON)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared CPU
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.new_tokens = args.new_tokens or (8 if args.quick else 16)
    if args.base == "tiny":
        load_base, prompts, pad_id = tiny_llama()
        label = "tiny Llama (hidden 256, 4 blocks, vocab 2000), random 32-token prompts"
    else:
        path = (
            ROOT / "artifacts" / "base" / "medsynth-tiny"
            if args.base == "medsynth"
            else Path(args.base)
        )
        load_base, prompts, pad_id = medsynth_base(path, args.data)
        label = f"{path} with the prompts of {args.data / 'test.jsonl'}"
    from moelora.models.loading import resolve_dtype

    dtype = resolve_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    setups = make_setups(load_base, device, dtype)
    peak = _peak_tflops(device, args.peak_tflops)
    result = {
        "label": label,
        "device": str(device),
        "dtype": str(dtype),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "peak_tflops": peak,
        "repeats": args.repeats,
        "load": args.load,
        "versions": {"torch": torch.__version__},
        "batch_sizes": [],
    }
    for b in args.batch_sizes:
        per_task = args.per_task or max(b, 8)
        result["batch_sizes"].append(
            measure(
                setups,
                prompts,
                pad_id=pad_id,
                batch_size=b,
                per_task=per_task,
                new_tokens=args.new_tokens,
                repeats=args.repeats,
                load=args.load,
                device=device,
            )
        )
    result["requests_note"] = (
        f"{args.new_tokens} new tokens per request (greedy, fixed length), "
        f"{args.repeats} alternating repetitions, medians; requests arrive "
        f"at {args.load:g}× the bare base's capacity; device {device}, "
        f"{dtype}, "
        f"{result['threads']} thread(s)"
    )
    result["adapter_flops_fraction"] = adapter_flops_fraction(
        setups["moelora_mixed"].model, setups["base"].model
    )
    print_table(result, peak=peak)
    print(
        f"adapter FLOPs (rank 16, unmerged) = {100 * result['adapter_flops_fraction']:.1f} % of "
        "the base's linear FLOPs per token: the floor of moelora_mixed's time vs base when "
        "matmuls dominate"
    )
    print(
        "targets at batch 32: moelora_mixed ≥ 2x single_mixed's throughput, ≤ 1.15x the base's time"
    )
    if args.profile:
        print(
            profile(
                setups,
                prompts,
                pad_id=pad_id,
                batch_size=max(args.batch_sizes),
                new_tokens=args.new_tokens,
                device=device,
            )
        )
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
