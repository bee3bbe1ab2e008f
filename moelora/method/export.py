"""Export each task of a MOELoRA model as a standard PEFT LoRA adapter (docs/methods.md §6.5, §9b).

For task ``j``: ``Σ_i ω_ji B_i A_i = B'_j A_cat`` with ``B'_j = B_cat diag(expand(ω_j))``, so
task j's MOELoRA is an ordinary rank-r LoRA with ``lora_A = A_cat``, ``lora_B = B'_j``.
PEFT scales by ``lora_alpha / r``; ``lora_alpha`` is set to ``s · r'`` (``r'`` the exported
rank) so the scaling ``s`` of the MOELoRA layers is reproduced exactly (``α`` itself for
``scaling_rank: total`` at full rank). For a −∞-masked sparse gate the all-zero rank
blocks are dropped (``r' = K·r/N``). Layers that wrap transformers' ``Conv1D`` (GPT-2) are
exported with peft's ``fan_in_fan_out`` (the factors are the same; peft transposes ΔW when
it merges).

Command line: ``python -m moelora.inference.export`` (moelora/inference/export.py). The
adapters are served per request by vLLM and SGLang; :func:`serving_commands` writes the commands.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from moelora.method.model import get_router, moelora_layers
from moelora.method.tasks import check_task_name

BUILDER = "moelora.method.model.build"


def _peft_targets(model: nn.Module, names: list[str]) -> list[str]:
    """``target_modules`` for peft that select exactly the adapted layers ``names``: their name
    suffixes when those match nothing else, else the full names (GPT-2's ``c_proj`` names the
    attention and the MLP output, and a preset may adapt only one of them)."""
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    tails = tuple("." + s for s in suffixes)
    matched = {
        n for n, _ in model.named_modules() if n.endswith(tails) and not n.endswith(".base_layer")
    }
    return suffixes if matched == set(names) else sorted(names)


def _task_factors(layer: nn.Module, task_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_cat, B'_j)`` in fp32 for one layer and task."""
    omega = layer.weight_source.task_weights(layer, task_id).float().to(layer.lora_B.device)
    scale = omega.repeat_interleave(layer.rank // layer.num_experts)  # (r,)
    return layer.lora_A.detach().float(), layer.lora_B.detach().float() * scale


def export_task_adapters(
    model: nn.Module,
    out_dir: str | Path,
    *,
    tasks: Sequence[str],
    base_name_or_path: str,
    drop_zero_blocks: bool = True,
) -> list[Path]:
    """Write one PEFT LoRA adapter per task of ``model`` (built by moelora.method.model.build).

    Args:
        model: the MOELoRA model (weights loaded).
        out_dir: parent folder; task ``t`` goes to ``out_dir/t/``.
        tasks: task names to export (must be the model's tasks).
        base_name_or_path: recorded as ``base_model_name_or_path`` in each adapter config.
        drop_zero_blocks: drop rank coordinates whose weight is exactly 0 (sparse gates).

    Returns:
        the adapter folders, in ``tasks`` order.
    """
    from peft import LoraConfig

    router = get_router(model)
    layers = moelora_layers(model)
    if not layers:
        raise ValueError("the model has no MOELoRA layers to export")
    unknown = [t for t in tasks if t not in router.task_names]
    if unknown:
        raise ValueError(f"tasks {unknown} are not tasks of this model ({router.task_names})")
    targets = _peft_targets(model, [name for name, _ in layers])
    first = layers[0][1]
    out_dir = Path(out_dir)
    written = []
    for task in tasks:
        task_id = router.valid_task_ids[router.task_names.index(task)]
        factors = {name: _task_factors(layer, task_id) for name, layer in layers}
        support = {name: _omega_support(layer, task_id) for name, layer in layers}
        ranks = {int(k.sum()) for k in support.values()}
        sparse = drop_zero_blocks and len(ranks) == 1 and 0 < next(iter(ranks)) < first.rank
        state = {}
        for name, (a, b) in factors.items():
            if sparse:
                idx = support[name]
                a, b = a[idx], b[:, idx]
            state[f"base_model.model.{name}.lora_A.weight"] = a.contiguous()
            state[f"base_model.model.{name}.lora_B.weight"] = b.contiguous()
        rank = next(iter(ranks)) if sparse else first.rank
        config = LoraConfig(
            r=rank,
            lora_alpha=first.scaling * rank,
            target_modules=targets,
            fan_in_fan_out=any(layer.fan_in_fan_out for _, layer in layers),
            lora_dropout=first.dropout_p,
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=str(base_name_or_path),
            init_lora_weights=True,
        )
        path = out_dir / check_task_name(task)  # a task name never leaves out_dir
        path.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(path))
        save_file(state, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
        written.append(path)
    return written


def _omega_support(layer: nn.Module, task_id: int) -> torch.Tensor:
    """Boolean ``(r,)``: rank coordinates with a non-zero expert weight for this task."""
    omega = layer.weight_source.task_weights(layer, task_id).float()
    return (omega != 0).repeat_interleave(layer.rank // layer.num_experts).to(layer.lora_A.device)


# vLLM's accepted --max-lora-rank values (``MaxLoRARanks`` of vllm/config/lora.py,
# https://docs.vllm.ai/api/vllm/config/lora.html); its default is 16, and max_loras defaults to 1.
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass
class TaskAdapters:
    """Exported task adapters (``paths``: task → folder) and the commands that serve them."""

    paths: dict[str, Path]
    base_model: str
    max_lora_rank: int
    vllm_command: str
    sglang_command: str

    def __str__(self) -> str:
        lines = [f"{task}: {path}" for task, path in self.paths.items()]
        return "\n".join([*lines, "# vLLM", self.vllm_command, "# SGLang", self.sglang_command])


def serving_commands(paths: Sequence[Path], *, base_model: str) -> TaskAdapters:
    """The ``vllm serve`` and SGLang ``launch_server`` commands that serve every exported task
    adapter (folder name = task name = the adapter's name in requests), with ``--max-loras``
    set to the number of tasks and ``--max-lora-rank`` to the smallest value vLLM accepts that
    holds the largest exported rank."""
    import json

    paths = [Path(p) for p in paths]
    ranks = [json.loads((p / "adapter_config.json").read_text())["r"] for p in paths]
    fits = [r for r in VLLM_MAX_LORA_RANKS if r >= max(ranks)]
    if not fits:
        raise ValueError(
            f"exported rank {max(ranks)} exceeds vLLM's largest --max-lora-rank "
            f"{VLLM_MAX_LORA_RANKS[-1]}; train with a smaller rank"
        )
    max_rank = fits[0]
    modules = " ".join(shlex.quote(f"{p.name}={p}") for p in paths)
    base = shlex.quote(base_model)
    n = len(paths)
    vllm = (
        f"vllm serve {base} --enable-lora --lora-modules {modules} "
        f"--max-loras {n} --max-lora-rank {max_rank}"
    )
    sglang = (
        f"python -m sglang.launch_server --model-path {base} --enable-lora --lora-paths {modules} "
        f"--max-loras-per-batch {n} --max-lora-rank {max_rank}"
    )
    return TaskAdapters(
        paths={p.name: p for p in paths},
        base_model=base_model,
        max_lora_rank=max_rank,
        vllm_command=vllm,
        sglang_command=sglang,
    )
