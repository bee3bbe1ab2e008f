"""``get_moelora_model`` and ``MoeLoraModel``: MOELoRA for any training stack (docs/library.md).

``get_moelora_model(model, config)`` applies :func:`moelora.method.model.inject` (the layers of
Eq. 4 and the one shared gate of Eq. 5) to a HF causal LM and wraps it, PEFT-style:

* ``forward(..., task_ids=...)`` and ``generate(..., task_ids=...)`` route each example by its
  task (one id per example) with no context manager for the caller; the caller's own routing
  (``moelora.method.gate.task_context``) is put back afterwards. Without ``task_ids`` the model
  runs with whatever routing is set, and the layers raise if there is none;
* gradient checkpointing is always non-reentrant, and each checkpointed block's recomputation
  during backward gets the routing of its own forward back (``context_fn`` of
  ``torch.utils.checkpoint``), even when other forwards ran in between;
* ``save_pretrained``/``from_pretrained`` use PEFT's file layout (``adapter_config.json`` +
  ``adapter_model.safetensors``), the same files as a harness run's ``RUN_DIR/adapter/``,
  checked against the base (a fingerprint, moelora.method.fingerprint) and the task list;
* ``merge_and_unload(task=...)`` folds one task into the base (Eq. 8);
  ``export_task_adapters(dir)`` writes each task as a stock PEFT LoRA with the commands that
  serve them (moelora.method.export).

Everything else (``config``, ``generation_config``, ``device``, ...) is the wrapped model's.

``MoeLoraDataCollator(tokenizer, tasks=config.tasks)`` pads ``input_ids``, ``attention_mask`` and
``labels`` with transformers' ``DataCollatorForSeq2Seq`` (labels padded with -100) and adds
``task_ids``, a ``(batch,)`` long tensor, from each example's ``task`` (a task name) or
``task_ids`` (an id) field. ``MoeLoraModel.forward`` takes ``task_ids`` as an argument, so the HF
``Trainer`` and TRL's ``SFTTrainer`` hand it through as they hand ``labels``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from moelora.method.config import MoeLoraConfig
from moelora.method.export import TaskAdapters, export_task_adapters, serving_commands
from moelora.method.fingerprint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterMismatchError,
    recorded_way,
    write_adapter_files,
)
from moelora.method.gate import MoELoRARouter
from moelora.method.merge import _swap_in_base_layers
from moelora.method.model import ROUTER_NAME, get_router, inject, moelora_layers
from moelora.method.tasks import TaskMap


class MoeLoraLoadError(AdapterMismatchError):
    """A saved adapter does not fit the base model or the task list it is loaded with."""


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """MOELoRA's parameters of a model built by :func:`moelora.method.model.build`: every
    layer's ``lora_A``/``lora_B`` and the gate's ``E``/``W_T``, by their names in
    ``model.named_parameters()`` (the names a harness run's adapter holds)."""
    owners = [m for _, m in moelora_layers(model)] + [get_router(model)]
    mine = {id(p) for m in owners for n, p in m.named_parameters() if "base_layer" not in n}
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if id(p) in mine}


class MoeLoraModel(nn.Module):
    """A HF causal LM with MOELoRA (Eqs. 4-8), used like a ``peft.PeftModel``.

    Build it with :func:`get_moelora_model` or :meth:`from_pretrained`. ``model`` (also
    ``get_base_model()``) is the adapted HF model (its parameter names are the adapter's keys),
    ``moelora_config`` its :class:`moelora.method.config.MoeLoraConfig`; other attributes are
    the HF model's (``base_model`` is its backbone, as in transformers).
    """

    def __init__(self, model: nn.Module, config: MoeLoraConfig) -> None:
        super().__init__()
        if not hasattr(model, ROUTER_NAME):
            inject(model, config)
        self.model = model
        self.moelora_config = config
        flag = "is_activation_checkpointing"
        if getattr(
            model, flag if hasattr(type(model), flag) else "is_gradient_checkpointing", False
        ):
            self.gradient_checkpointing_enable()  # re-enabled with the routing kept for backward

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    @property
    def router(self) -> MoELoRARouter:
        return get_router(self.model)

    @property
    def tasks(self) -> list[str]:
        return list(self.moelora_config.tasks)

    def task_id(self, task: str | int) -> int:
        """The id of a task name (ids pass through, checked)."""
        task_map = self.moelora_config.task_map()
        if isinstance(task, str):
            return task_map.id(task)
        return int(self.router.check_task_ids(torch.tensor([int(task)]))[0])

    def get_base_model(self) -> nn.Module:
        """The adapted HF model (``self.model``; its parameter names are the adapter's keys)."""
        return self.model

    # ---- routing ---------------------------------------------------------------------
    @contextmanager
    def routing(self, task_ids: Any) -> Iterator[None]:
        """Route the calls inside by ``task_ids`` (``(batch,)`` ids, or task names); put the
        previous routing back on exit. ``None`` keeps the current routing."""
        if task_ids is None:
            yield
            return
        if isinstance(task_ids, str | int):
            task_ids = [task_ids]
        if isinstance(task_ids, Sequence) and task_ids and isinstance(task_ids[0], str):
            task_ids = [self.task_id(t) for t in task_ids]
        router = self.router
        previous = router.routing_state()
        router.set_task_ids(torch.as_tensor(task_ids))
        try:
            yield
        finally:
            router.restore_routing(previous)

    def __call__(self, *args: Any, task_ids: Any = None, **kwargs: Any) -> Any:
        # Routing around the whole call, not only inside forward(): trainers may replace the
        # instance's forward (TRL's fused LM head), and the call still routes.
        with self.routing(task_ids):
            return super().__call__(*args, **kwargs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task_ids: Any = None,
        **kwargs: Any,
    ) -> Any:
        """The wrapped model's forward, routed by ``task_ids`` (one id per example)."""
        with self.routing(task_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs
            )

    def generate(self, *args: Any, task_ids: Any = None, **kwargs: Any) -> Any:
        """The wrapped model's ``generate``, routed by ``task_ids`` (one id per prompt; rows
        are repeated for ``num_return_sequences`` and beams)."""
        with self.routing(task_ids):
            return self.model.generate(*args, **kwargs)

    # ---- gradient checkpointing --------------------------------------------------------
    def _checkpoint_contexts(self) -> tuple[Any, Any]:
        """``context_fn`` of ``torch.utils.checkpoint``: called in each checkpointed forward,
        it keeps that forward's routing and restores it around the recomputation."""
        if not hasattr(self.model, ROUTER_NAME):  # merged and unloaded, or a refused load
            return nullcontext(), nullcontext()
        router = self.router
        state = router.routing_state()

        @contextmanager
        def recompute() -> Iterator[None]:
            previous = router.routing_state()
            router.restore_routing(state)
            try:
                yield
            finally:
                router.restore_routing(previous)

        return nullcontext(), recompute()

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """Non-reentrant checkpointing of the wrapped model's blocks (the reentrant variant's
        no-grad first pass would cut the gradient to the gate's ``E`` and ``W_T``)."""
        ckpt = dict(activation_checkpointing_kwargs or {})
        if ckpt.get("use_reentrant"):
            raise ValueError(
                "use_reentrant=True cuts the gradient to MOELoRA's gate; set "
                "gradient_checkpointing_kwargs={'use_reentrant': False} (or leave it unset)"
            )
        ckpt["use_reentrant"] = False
        ckpt["context_fn"] = self._checkpoint_contexts
        base = self.model
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt, **kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt, **kwargs)

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **kwargs: Any
    ) -> None:
        """Alias of :meth:`activation_checkpointing_enable` (the name before transformers 5)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    # ---- parameters --------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,} || all params: {total:,} || "
            f"trainable%: {100 * trainable / total:.4f}"
        )

    # ---- save / load -------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        **_: Any,
    ) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` to ``save_directory``
        (each file written to a temporary name, then renamed)."""
        if not safe_serialization:
            raise ValueError(
                "MOELoRA adapters are saved as safetensors only; drop safe_serialization"
            )
        if not is_main_process:
            return Path(save_directory)
        base = self.model
        name = getattr(getattr(base, "config", None), "name_or_path", "") or ""
        meta = self.moelora_config.to_dict()
        meta.update(
            task_type="CAUSAL_LM",
            base_model_name_or_path=name,
            base_model={"name_or_path": name},
        )
        return write_adapter_files(save_directory, adapter_state_dict(base), meta, base=base)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        model_id: str | os.PathLike,
        *,
        is_trainable: bool = False,
        tasks: Sequence[str] | None = None,
        check_base: bool = True,
    ) -> MoeLoraModel:
        """Build MOELoRA on ``model`` (a fresh base) from the adapter saved in ``model_id``.

        Args:
            model: the base model the adapter was trained on.
            model_id: a folder written by :meth:`save_pretrained` (or a harness run's
                ``RUN_DIR/adapter``).
            is_trainable: keep the adapter trainable (default: frozen, eval mode).
            tasks: the task list the caller's ids mean; refused if it is not the saved one.
            check_base: refuse a base whose fingerprint differs from the recorded one.

        Raises:
            MoeLoraLoadError: naming the file, the field and the fix.
        """
        directory = Path(model_id)
        config_path = directory / CONFIG_NAME
        weights_path = directory / WEIGHTS_NAME
        if not config_path.is_file():
            raise MoeLoraLoadError(
                f"{config_path}: no such file; give the folder that save_pretrained wrote"
            )
        if not weights_path.is_file():
            other = sorted(p.name for p in directory.glob("adapter_model.*"))
            raise MoeLoraLoadError(
                f"{weights_path}: no such file{f' (found {other})' if other else ''}; MOELoRA "
                "adapters are loaded from safetensors only: save them with save_pretrained"
            )
        try:
            data = json.loads(config_path.read_text(encoding="utf-8"))
            config = MoeLoraConfig.from_dict(data, source=str(config_path))
        except ValueError as err:
            raise MoeLoraLoadError(str(err)) from None
        if tasks is not None and list(tasks) != config.tasks:
            raise MoeLoraLoadError(
                f"{config_path}: field 'tasks' is {config.tasks} (in this id order) but the caller "
                f"uses {list(tasks)}; pass the saved task list so that the task ids mean the same"
            )
        if hasattr(model, ROUTER_NAME):
            raise MoeLoraLoadError(
                f"{directory}: the model given already carries MOELoRA; pass a fresh base model"
            )
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            wrapped = cls(model, config)
        except ValueError as err:
            raise MoeLoraLoadError(
                f"{config_path}: field 'target_modules' ({config.target_modules}) does not fit "
                f"this {type(model).__name__}: {err}"
            ) from None
        try:
            _load_weights(wrapped, data, config_path, weights_path, check_base=check_base)
        except MoeLoraLoadError:
            _remove(model, flags)  # the caller's base is left as it was given
            raise
        if not is_trainable:
            wrapped.requires_grad_(False)
            wrapped.eval()
        return wrapped

    # ---- merge / export ------------------------------------------------------------------
    @torch.no_grad()
    def merge_and_unload(self, task: str | int) -> nn.Module:
        """Fold ``task``'s update ``ΔW_j`` into every adapted weight (Eq. 8) and return the
        plain base model (its own modules, no adapter, no gate). This wrapper is spent."""
        task_id = self.task_id(task)
        base = self.model
        layers = [m for _, m in moelora_layers(base)]
        for layer in layers:
            layer.merge(task_id=task_id)
        _swap_in_base_layers(base, set(layers), [])
        for layer in layers:
            layer._original_weight = None  # the kept copy is not needed any more
        delattr(base, ROUTER_NAME)
        return base

    def export_task_adapters(
        self,
        out_dir: str | os.PathLike,
        *,
        tasks: Sequence[str] | None = None,
        base_model_name_or_path: str | None = None,
    ) -> TaskAdapters:
        """Write ``out_dir/<task>/`` as one stock PEFT LoRA per task (exact; rank r, or K·r/N
        for a sparse gate) and return the folders with the ``vllm serve`` and SGLang
        commands that serve them (moelora.method.export)."""
        base = base_model_name_or_path or getattr(self.model.config, "name_or_path", "")
        if not base:
            raise ValueError(
                "the base model has no config.name_or_path; pass base_model_name_or_path="
            )
        paths = export_task_adapters(
            self.model, out_dir, tasks=list(tasks or self.tasks), base_name_or_path=base
        )
        return serving_commands(paths, base_model=base)


def _load_weights(
    wrapped: MoeLoraModel, data: dict, config_path: Path, weights_path: Path, *, check_base: bool
) -> None:
    """Check the base fingerprint, then copy the saved weights into ``wrapped``."""
    model = wrapped.model
    recorded = data.get("base_fingerprint")
    if check_base and recorded is not None:
        saved_dtype = data.get("base_dtype")
        current = recorded_way(model, data)
        if current != recorded:
            raise MoeLoraLoadError(
                f"{config_path}: field 'base_fingerprint' is {recorded} (base "
                f"{data.get('base_model_name_or_path') or data.get('base_model')}), but the "
                f"model given has {current} (names, shapes and sampled weights of its frozen "
                f"parameters, in {saved_dtype}); load the adapter into the base it was "
                "trained on (check_base=False skips this check)"
            )
    state = load_file(str(weights_path))
    own = adapter_state_dict(model)
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise MoeLoraLoadError(
            f"{weights_path}: keys do not match the model built from {CONFIG_NAME}: missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}; is this the base it was trained on?"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            p = params[name]
            if p.shape != tensor.shape:
                raise MoeLoraLoadError(
                    f"{weights_path}: {name} has shape {tuple(tensor.shape)} but "
                    f"{tuple(p.shape)} in the model built from {CONFIG_NAME}"
                )
            p.copy_(tensor.to(device=p.device, dtype=p.dtype))


def _remove(model: nn.Module, flags: list[tuple[nn.Parameter, bool]]) -> None:
    """Undo the injection: the base layers back in place, no gate, the trainable flags as given."""
    layers = {m for _, m in moelora_layers(model)}
    _swap_in_base_layers(model, layers, [])
    if hasattr(model, ROUTER_NAME):
        delattr(model, ROUTER_NAME)
    for p, flag in flags:
        p.requires_grad_(flag)


def get_moelora_model(model: nn.Module, config: MoeLoraConfig) -> MoeLoraModel:
    """Turn the HF causal LM ``model`` into MOELoRA (in place) and wrap it; only the experts'
    ``lora_A``/``lora_B`` and the gate's ``E``/``W_T`` train."""
    if not isinstance(config, MoeLoraConfig):
        raise TypeError(f"config is a {type(config).__name__}; pass a moelora.MoeLoraConfig")
    if hasattr(model, ROUTER_NAME):
        raise ValueError("this model already carries MOELoRA; pass a fresh base model")
    return MoeLoraModel(model, config)


# ---- the data collator that carries each example's task id -----------------------------
class MoeLoraDataCollator:
    """Pad a list of tokenized examples and add their ``task_ids``.

    Args:
        tokenizer: the model's tokenizer (its pad token pads ``input_ids``; one without a pad
            token pads with its EOS token).
        tasks: the ordered task list of the ``MoeLoraConfig`` (names → ids).
        task_id_scheme: the config's ``task_id_scheme``.
        task_key: the field holding a task name (``task_ids`` holds an id instead).
        **kwargs: passed to ``transformers.DataCollatorForSeq2Seq`` (``pad_to_multiple_of``,
            ``padding``, ``max_length``).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        tasks: Sequence[str],
        task_id_scheme: str = "dense",
        task_key: str = "task",
        **kwargs: Any,
    ) -> None:
        from transformers import DataCollatorForSeq2Seq

        if getattr(tokenizer, "pad_token_id", None) is None:
            if getattr(tokenizer, "eos_token", None) is None:
                raise ValueError("the tokenizer has neither a pad nor an EOS token; set pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        self.task_map = TaskMap(list(tasks), scheme=task_id_scheme)
        self.task_key = task_key
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, **kwargs)

    def _task_id(self, index: int, example: dict[str, Any]) -> int:
        if "task_ids" in example:
            return int(example["task_ids"])
        if self.task_key in example:
            return self.task_map.id(example[self.task_key])
        raise KeyError(
            f"example {index} has neither {self.task_key!r} (a task name) nor 'task_ids' (an id); "
            f"add one of them to every example (its fields: {sorted(example)})"
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        task_ids = [self._task_id(i, e) for i, e in enumerate(examples)]
        drop = {self.task_key, "task_ids"}
        keep = ("input_ids", "attention_mask", "labels")
        batch = self.pad([{k: v for k, v in e.items() if k in keep} for e in examples])
        batch = {k: v for k, v in batch.items() if k not in drop}
        batch["task_ids"] = torch.tensor(task_ids, dtype=torch.long)
        return batch
