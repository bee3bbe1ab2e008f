"""Efficiency of the fused MOELoRA layer (docs/methods.md §8 Fig. 5, §9a), measured in one run.

On a tiny Llama built from a config (hidden 256, 4 blocks, all 7 projections adapted):

* training step (forward + backward + AdamW) time and peak memory of MOELoRA (N = 8,
  r = 16, fused) vs peft LoRA (r = 16) vs a per-expert Python loop (the authors' layer
  design: N separate rank-r/N experts, one dropout each, summed in a loop);
* generation latency of MOELoRA merged per task (Eq. 8) vs the bare base model;
* on the CPU, the training step of LoRA and MOELoRA with dropout masks drawn 16 bits an entry
  (``trainer.dropout_masks=bits16``, the CPU default) vs torch's kernel (``torch``).

Peak memory (moelora.utils.measure.peak_memory): ``torch.cuda.max_memory_allocated`` on CUDA; on
the CPU, the bytes of the distinct tensors saved for backward plus trainable parameters, their
gradients and AdamW state (the part that differs between methods; the frozen base is common).
Medians over repeats, warm-up excluded. Run: ``python experiments/bench_moelora.py``
(``--quick`` for a shorter run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from moelora.method.dropout import mask_sampling, use_in  # noqa: E402
from moelora.method.gate import task_context  # noqa: E402
from moelora.method.merge import merged_for_task  # noqa: E402
from moelora.method.model import build, get_router, moelora_layers  # noqa: E402
from moelora.utils.measure import peak_memory, sync  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TASKS = [f"task{i}" for i in range(8)]


class LoopMoELoRALinear(nn.Module):
    """Reference design: N experts as separate modules, looped in Python (one dropout each)."""

    def __init__(
        self, base: nn.Linear, router, *, num_experts: int, rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        self.base_layer = base
        k = rank // num_experts
        self.lora_A = nn.ModuleList(
            nn.Linear(base.in_features, k, bias=False) for _ in range(num_experts)
        )
        self.lora_B = nn.ModuleList(
            nn.Linear(k, base.out_features, bias=False) for _ in range(num_experts)
        )
        self.dropouts = nn.ModuleList(nn.Dropout(dropout) for _ in range(num_experts))
        self.scaling = alpha / rank
        object.__setattr__(self, "router", router)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        w = self.router._weights  # (batch, N)
        for i, (a, b, d) in enumerate(zip(self.lora_A, self.lora_B, self.dropouts)):
            out = out + b(a(d(x))) * w[:, i].view(-1, 1, 1).to(x.dtype) * self.scaling
        return out


def make_base(device: torch.device) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        vocab_size=2000,
    )
    model = LlamaForCausalLM(cfg).to(device)
    model.requires_grad_(False)
    return model


def make_method(name: str, device: torch.device) -> nn.Module:
    model = make_base(device)
    if name == "lora":
        from peft import LoraConfig, get_peft_model

        return get_peft_model(
            model,
            LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.1, target_modules=TARGETS, task_type="CAUSAL_LM"
            ),
        )
    model = build(
        model, tasks=TASKS, target_modules=TARGETS, num_experts=8, rank=16, alpha=32, dropout=0.1
    )
    if name == "loop":
        router = get_router(model)
        for full_name, layer in moelora_layers(model):
            parent, _, child = full_name.rpartition(".")
            loop = LoopMoELoRALinear(
                layer.base_layer, router, num_experts=8, rank=16, alpha=32, dropout=0.1
            ).to(device)
            setattr(model.get_submodule(parent), child, loop)
    return model


def bench_training(
    names: list[str], device: torch.device, *, batch: int, seq: int, warmup: int, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median step time and peak memory per method; steps interleaved across methods so that
    machine load affects all of them alike. ``name@bits16`` draws the dropout masks with
    ``bits16`` (moelora.method.dropout); a plain name with torch's kernel."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2000, (batch, seq), generator=g).to(device)
    task_ids = torch.arange(batch, device=device) % len(TASKS)
    steps, params = {}, {}
    for name in names:
        method, _, masks = name.partition("@")
        model = make_method(method, device).train()
        use_in(model)
        params[name] = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params[name], lr=2e-4)

        def step(model=model, opt=opt, masks=masks or "torch") -> None:
            with task_context(model, task_ids), mask_sampling(masks):
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps[name] = step
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            sync(device)
            t0 = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {
        n: (statistics.median(times[n]), peak_memory(steps[n], params[n], device)) for n in names
    }


def bench_inference(
    device: torch.device, *, batch: int, prompt: int, new_tokens: int, warmup: int, repeats: int
) -> tuple[float, float]:
    base = make_base(device).eval()
    model = make_method("moelora", device).eval()
    with torch.no_grad():  # a trained-looking adapter
        for _, layer in moelora_layers(model):
            layer.lora_B.normal_(std=0.02)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 2000, (batch, prompt), generator=g).to(device)
    kw = dict(
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=0,
    )
    task_ids = torch.zeros(batch, dtype=torch.long, device=device)

    def run_base() -> None:
        with torch.no_grad():
            base.generate(input_ids=ids, **kw)

    def run_merged() -> None:
        with torch.no_grad(), task_context(model, task_ids):
            model.generate(input_ids=ids, **kw)

    def timed(fn: Callable[[], None]) -> float:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    with merged_for_task(model, 0):
        for _ in range(warmup):
            run_base()
            run_merged()
        # alternate single calls so that machine load affects both alike; medians of each
        base_t, merged_t = [], []
        for _ in range(repeats):
            base_t.append(timed(run_base))
            merged_t.append(timed(run_merged))
    return statistics.median(base_t), statistics.median(merged_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # steadier timings on a shared CPU
    reps = 3 if args.quick else 7
    shape = dict(batch=4, seq=64) if device.type == "cpu" else dict(batch=16, seq=512)
    print(f"device={device}  train batch={shape['batch']} seq={shape['seq']}  repeats={reps}")
    rows = bench_training(["lora", "moelora", "loop"], device, warmup=2, repeats=reps, **shape)
    for name, (t, m) in rows.items():
        print(f"  {name:8s} step {t * 1e3:8.1f} ms   peak {m / 2**20:8.1f} MiB")
    lora_t, lora_m = rows["lora"]
    for name in ("moelora", "loop"):
        t, m = rows[name]
        print(f"  {name} / lora: step time {t / lora_t:.3f}x   peak memory {m / lora_m:.3f}x")
    if device.type == "cpu":
        masks = bench_training(
            ["lora", "lora@bits16", "moelora", "moelora@bits16"],
            device,
            warmup=2,
            repeats=3 * reps,
            **shape,
        )
        for name in ("lora", "moelora"):
            ratio = masks[f"{name}@bits16"][0] / masks[name][0]
            print(
                f"  {name} dropout masks bits16 / torch: step time {ratio:.3f}x "
                f"({masks[name][0] * 1e3:.1f} -> {masks[name + '@bits16'][0] * 1e3:.1f} ms)"
            )
    base_s, merged_s = bench_inference(
        device, batch=4, prompt=32, new_tokens=16, warmup=2, repeats=5 * reps
    )
    print(
        f"generate 4x(32+16 tokens): base {base_s * 1e3:.1f} ms   merged MOELoRA "
        f"{merged_s * 1e3:.1f} ms   ratio {merged_s / base_s:.3f}x"
    )
    print(
        "targets: step ≤ 1.05x, peak memory ≤ 1.10x vs LoRA; merged latency ≤ 1.02x vs base; "
        "CPU dropout masks bits16 ≤ 0.90x torch"
    )


if __name__ == "__main__":
    main()
