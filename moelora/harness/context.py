"""What a pipeline gets: the composed config, the data, and the shared building blocks.

A method's YAML names its pipeline (``pipeline: joint`` or a dotted path such as
``baselines.lora_single.pipeline``). A pipeline is a function ``(ctx: RunContext) ->
PipelineOutput``; it composes the shared pieces below (load the base, build the adapter,
train, generate) and never re-implements them.

Pipelines: The joint multi-task pipeline, shared by LoRA (Full), MOELoRA and most baselines.

Load the frozen base → build the method's adapter → train on the mixture of all tasks
(the method's sampler decides the batches) → save the adapter → generate the test split.
Methods that need another pipeline (one adapter per task, composition of existing
adapters, no training) name their own function in their YAML.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from moelora.data.encoding import Encoder, token_warnings
from moelora.data.samplers import StepSampler
from moelora.engine.adapters import save_adapter
from moelora.engine.distributed import effective_batch_size, frozen_dtype
from moelora.engine.generation import DecodingSettings, GenerationResult, generate_sharded
from moelora.engine.train import TrainResult, TrainSettings, train
from moelora.harness.identity import ADDED_KEYS
from moelora.harness.lr_protocol import check_trains
from moelora.method.merge import merge_blocker
from moelora.method.tasks import TaskMap
from moelora.models.loading import (
    load_base_model,
    load_tokenizer,
    resolve_checkpointing,
    resolve_special_tokens,
    resolve_target_modules,
)


@dataclass
class PipelineOutput:
    predictions: list[dict[str, Any]]
    model: nn.Module | None = None
    train: TrainResult | None = None
    generation: GenerationResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    cfg: DictConfig
    run_dir: Path
    task_map: TaskMap
    splits: dict[str, list[dict[str, Any]]]
    accelerator: Any
    logger: Any
    infer_mode: str | None = None  # what generate() actually ran: merged_per_task | unmerged
    token_stats: dict[str, Any] = field(default_factory=dict)  # split → Encoder.token_stats

    # ---- model -------------------------------------------------------------------
    def load_base(self) -> tuple[nn.Module, Any]:
        m = self.cfg.model
        tokenizer = load_tokenizer(m.path, trust_remote_code=m.trust_remote_code)
        mixed = str(self.accelerator.mixed_precision)
        dtype = frozen_dtype(m.dtype, mixed)  # frozen weights in the compute dtype
        if dtype != m.dtype and m.dtype != "auto":
            self.accelerator.print(f"[precision] model.dtype={m.dtype} stored as {dtype} ({mixed})")
        model = load_base_model(
            m.path,
            dtype=dtype,
            trust_remote_code=m.trust_remote_code,
            gradient_checkpointing=resolve_checkpointing(m.gradient_checkpointing, m.path),
            attn_implementation=m.get("attn_implementation"),
            quantization=m.get("quantization"),
            device=self.accelerator.device,
        )
        return model.to(self.accelerator.device), tokenizer

    @property
    def target_modules(self) -> list[str]:
        return resolve_target_modules(self.cfg.model, self.cfg.method.target_modules)

    def build_adapter(self, model: nn.Module, *, tasks: list[str] | None = None) -> nn.Module:
        """Apply the method's ``adapter`` builder (``_target_`` + hyper-parameters)."""
        if self.cfg.method.get("adapter") is None:
            return model
        build = instantiate(self.cfg.method.adapter)
        adapted = build(
            model, tasks=list(tasks or self.task_map.tasks), target_modules=self.target_modules
        )
        return adapted.to(self.accelerator.device)

    def adapter_meta(self, *, tasks: list[str] | None = None) -> dict[str, Any]:
        hparams = OmegaConf.to_container(self.cfg.method.get("adapter") or {}, resolve=True)
        return {
            "method": self.cfg.method.name,
            "hparams": {k: v for k, v in hparams.items() if not k.startswith("_")},
            "builder": hparams.get("_target_"),
            "tasks": list(tasks or self.task_map.tasks),
            "task_id_scheme": self.task_map.scheme,
            "target_modules": self.target_modules,
            # absolute, so the adapter finds its base from any working directory (export)
            "base_model": {
                "name_or_path": os.path.abspath(str(self.cfg.model.path)),
                "name": self.cfg.model.name,
            },
        }

    def save_adapter(
        self, model: nn.Module, directory: Path, *, tasks: list[str] | None = None
    ) -> Path:
        """Save the adapter (rank 0 only: every rank holds the same weights)."""
        if self.accelerator.is_main_process:
            save_adapter(
                self.accelerator.unwrap_model(model), directory, meta=self.adapter_meta(tasks=tasks)
            )
        return directory

    # ---- data ----------------------------------------------------------------------
    def encoder(self, tokenizer: Any, *, task_map: TaskMap | None = None) -> Encoder:
        """The run's encoder. The first call also measures every split (unknown tokens and
        truncation per task, ``results.json`` → ``token_stats``), warns above 1 % and refuses
        prompts that encode to nothing (moelora.data.encoding.Encoder.token_stats)."""
        d = self.cfg.data
        encoder = Encoder(
            tokenizer=tokenizer,
            task_map=task_map or self.task_map,
            max_source_length=d.max_source_length,
            max_target_length=d.max_target_length,
            truncation_side=d.truncation_side,
            add_special_tokens=resolve_special_tokens(self.cfg.model.add_special_tokens, tokenizer),
        )
        if not self.token_stats:
            for split, records in self.splits.items():
                source = Path(d.root) / d.files[split] if split in d.files else None
                stats = encoder.token_stats(records, split=split, source=source)
                for line in token_warnings(
                    stats,
                    split,
                    max_source_length=d.max_source_length,
                    max_target_length=d.max_target_length,
                ):
                    self.accelerator.print(f"[tokens] warning: {line}")
                self.token_stats[split] = stats
        return encoder

    def sampler(self, encoder: Encoder, records: list[dict[str, Any]]) -> StepSampler:
        batch = effective_batch_size(self.accelerator.num_processes, self.cfg.trainer)
        task_ids = [encoder.task_map.id(r["task_dataset"]) for r in records]
        return instantiate(
            self.cfg.method.sampler, task_ids=task_ids, batch_size=batch, seed=self.cfg.seed
        )

    # ---- train / generate ----------------------------------------------------------
    def train_settings(self, *, max_steps: int | None = None) -> TrainSettings:
        t = self.cfg.trainer
        check_trains(self.cfg)  # lr_protocol=dev lists every method it trains
        lr = t.lr if t.lr is not None else self.cfg.method.optim.lr * t.lr_scale
        return TrainSettings(
            max_steps=max_steps or t.max_steps,
            per_device_batch_size=t.per_device_batch_size,
            grad_accum=t.grad_accum,
            lr=lr,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            warmup_steps=t.warmup_steps,
            save_every=t.save_every,
            log_every=t.log_every,
            keep_checkpoints=t.keep_checkpoints,
            progress=self.cfg.progress,
            length_groups=t.length_groups,
            loss_weighting=t.loss_weighting,
            # a run saved before the key existed drew its masks as the key's earlier value
            dropout_masks=t.get("dropout_masks", ADDED_KEYS["trainer.dropout_masks"]),
            compile=t.get("compile", ADDED_KEYS["trainer.compile"]),
            compile_cache_dir=f"{self.cfg.paths.artifacts_dir}/torch_compile",
        )

    def train(
        self,
        model: nn.Module,
        encoder: Encoder,
        records: list[dict[str, Any]],
        *,
        ckpt_dir: Path | None = None,
        max_steps: int | None = None,
        tasks: list[str] | None = None,
        log_prefix: str = "",
        on_step: Any = None,
    ) -> TrainResult:
        settings = self.train_settings(max_steps=max_steps)
        whole = (
            records is self.splits.get("train")  # measured once by encoder()
            and encoder.max_source_length == self.cfg.data.max_source_length
        )
        encoder.check_prompt_budget(
            records,
            split="train",
            max_truncated_fraction=self.cfg.data.max_truncated_fraction,
            stats=self.token_stats.get("train") if whole else None,
        )

        def log(metrics: dict[str, float], step: int) -> None:
            self.logger.log({f"{log_prefix}{k}": v for k, v in metrics.items()}, step)

        return train(
            model,
            encoder,
            records,
            settings=settings,
            sampler=self.sampler(encoder, records),
            accelerator=self.accelerator,
            ckpt_dir=ckpt_dir if ckpt_dir is not None else self.run_dir / "checkpoints",
            adapter_meta=self.adapter_meta(tasks=tasks),
            log=log,
            on_step=on_step,
        )

    def decoding(self) -> DecodingSettings:
        e = self.cfg.trainer.eval
        return DecodingSettings(
            mode=self.cfg.decoding,
            temperature=e.temperature,
            top_p=e.top_p,
            top_k=e.top_k,
            max_new_tokens=e.max_new_tokens or self.cfg.data.max_target_length,
            batch_size=e.batch_size,
        )

    def generate(
        self,
        model: nn.Module,
        encoder: Encoder,
        records: list[dict[str, Any]],
        *,
        merge: bool | None = None,
    ) -> GenerationResult:
        infer = self.cfg.method.get("infer", "unmerged")
        if infer not in ("unmerged", "merged_per_task"):
            raise ValueError(f"method.infer={infer!r}; use 'unmerged' or 'merged_per_task'")
        merge = (infer == "merged_per_task") if merge is None else merge
        if merge and (reason := merge_blocker(self.accelerator.unwrap_model(model))):
            print(
                f"[infer] {self.cfg.method.name} cannot be merged per task ({reason}); generating unmerged"
            )
            merge = False
        self.infer_mode = "merged_per_task" if merge else "unmerged"
        return generate_sharded(  # each process its share; all get every prediction back
            self.accelerator.unwrap_model(model),
            encoder,
            records,
            accelerator=self.accelerator,
            decoding=self.decoding(),
            seed=self.cfg.seed,
            merge=merge,
            device=self.accelerator.device,
            progress=self.cfg.progress,
        )


# ---- pipelines ----------------------------------------
def joint(ctx: RunContext) -> PipelineOutput:
    model, tokenizer = ctx.load_base()
    model = ctx.build_adapter(model)
    encoder = ctx.encoder(tokenizer)
    trained = ctx.train(model, encoder, ctx.splits["train"])
    ctx.save_adapter(model, ctx.run_dir / "adapter")
    generation = ctx.generate(model, encoder, ctx.splits["test"])
    return PipelineOutput(
        predictions=generation.predictions, model=model, train=trained, generation=generation
    )
