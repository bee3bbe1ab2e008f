"""Rebuild a finished run directory into its adapted model (base + trained adapter).

``load_run(RUN_DIR)`` serves every trained method without knowing any by name:

* the default: ``RUN_DIR/adapter/adapter_config.json`` names the adapter's builder
  (``builder``, the ``_target_`` of the method's ``adapter``), its hyper-parameters, the ordered
  task list and the base model; the base is loaded, the builder re-applied with the saved
  hyper-parameters and the saved weights loaded into it (moelora.engine.adapters.load_adapter, which
  refuses a mismatched base, task list or parameter set). This covers LoRA (Full),
  LoRA (Full+TP), MoLoRA and P-Tuning; MOELoRA (every gate) loads through the library API,
  ``moelora.method.peft_model.MoeLoraModel.from_pretrained`` (the same files, the same checks);
* a pipeline that stores its weights another way provides ``load_run(run_dir, *, config,
  device, dtype, trust_remote_code) -> LoadedRun`` in its own module (the module of
  ``method.pipeline`` in the run's ``config.yaml``), e.g. ``baselines.lora_single.load_run``
  (one adapter per task, loaded as named peft adapters).

A :class:`LoadedRun` carries what inference needs besides the model: the run's config (its
encoder and decoding settings, its task prompt) and, for models with one adapter per task,
the two hooks of :func:`moelora.engine.generation.generate_predictions` (``task_scope``,
``batch_kwargs``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from torch import nn

from moelora.data.encoding import Encoder, apply_task_prompt
from moelora.engine.adapters import load_adapter, read_adapter_config
from moelora.engine.generation import DecodingSettings
from moelora.harness.allowlist import (
    UntrustedNameError,
    check_config_targets,
    check_name,
)
from moelora.harness.context import RunContext
from moelora.harness.results import read_results
from moelora.method.config import BUILDER as MOELORA_BUILDER
from moelora.method.merge import supports_merge
from moelora.method.peft_model import MoeLoraModel
from moelora.method.tasks import TaskMap
from moelora.utils.manifest import MANIFEST_NAME, ManifestError, verify_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_NAME = "config.yaml"


class RunLoadError(ValueError):
    """The run directory cannot be rebuilt into a model; the message says why and what to do."""


@dataclass
class LoadedRun:
    """A finished run, rebuilt.

    Attributes:
        run_dir: the run directory.
        model: the adapted model, in eval mode, on ``device``.
        base_dir: the base model's folder (its tokenizer is loaded from there on first use).
        meta: the adapter's ``adapter_config.json`` (the first task's, for per-task adapters).
        config: the run's resolved ``config.yaml`` (None when the folder has only ``adapter/``).
        task_map: the ordered tasks and their ids.
        device: where the model is.
        task_scope: ``task_id -> context`` selecting that task's weights (per-task adapters).
        batch_kwargs: ``task_ids -> generate() kwargs`` for a batch mixing tasks.
        trust_remote_code: as the base was loaded.
    """

    run_dir: Path
    model: nn.Module
    base_dir: Path
    meta: dict[str, Any]
    config: DictConfig | None
    task_map: TaskMap
    device: torch.device
    task_scope: Callable[[int], AbstractContextManager[Any]] | None = None
    batch_kwargs: Callable[[torch.Tensor], dict[str, Any]] | None = None
    trust_remote_code: bool = False
    _tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer (left padding), loaded on first use."""
        if self._tokenizer is None:
            from moelora.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.base_dir, trust_remote_code=self.trust_remote_code
            )
        return self._tokenizer

    @property
    def method(self) -> str:
        return str(self.meta.get("method") or (self.config.method.name if self.config else "?"))

    @property
    def mergeable(self) -> bool:
        """Whether per-task merging (Eq. 8) applies (not for token-routed experts)."""
        return supports_merge(self.model)

    def context(self, accelerator: Any = None) -> RunContext:
        """A :class:`moelora.harness.context.RunContext` of this run's config (its encoder, decoding,
        sampler and training settings), without data or logger."""
        return RunContext(
            cfg=self._config(),
            run_dir=self.run_dir,
            task_map=self.task_map,
            splits={},
            accelerator=accelerator,
            logger=None,
        )

    def encoder(self) -> Encoder:
        return self.context().encoder(self.tokenizer)

    def decoding(self, **overrides: Any) -> DecodingSettings:
        """The run's decoding settings (``decoding``, ``trainer.eval.*``), with ``overrides``
        (DecodingSettings fields; None values are ignored)."""
        return replace(
            self.context().decoding(), **{k: v for k, v in overrides.items() if v is not None}
        )

    def splits(self) -> dict[str, list[dict[str, Any]]]:
        """The run's data splits, as the job read them (``trainer.eval.limit_per_task`` applied,
        task prompt not)."""
        from moelora.harness.runner import load_splits

        return load_splits(self._config(), self.task_map)

    def prepare_inputs(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``records`` with the run's task prompt prefixed (LoRA (Full+TP)); a copy."""
        mode = self._config().method.get("task_prompt")
        if not mode:
            return records
        train = self.splits()["train"] if mode == "one_shot" else []
        return apply_task_prompt(
            {"train": train, "x": records}, mode, seed=int(self._config().seed)
        )["x"]

    def _config(self) -> DictConfig:
        if self.config is None:
            raise RunLoadError(
                f"{self.run_dir}: no {CONFIG_NAME}; encoding, decoding and data "
                "settings come from the run's config (a folder written by run.py)"
            )
        return self.config


def read_run_config(run_dir: str | Path) -> DictConfig | None:
    """The run's resolved ``config.yaml``, or None when there is none."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    config = OmegaConf.load(path)
    try:  # a run folder is data: it may name only the project's own pipelines and targets
        check_config_targets(config, source=path)
    except UntrustedNameError as e:
        raise RunLoadError(str(e)) from None
    return config


def resolve_path(path: str | Path, *, run_dir: Path) -> Path:
    """A path recorded by a run: as written (relative to the current folder), else relative to
    the repository root (run.py's default launch folder).

    Raises:
        RunLoadError: found in neither place.
    """
    path = Path(path)
    for candidate in (path, REPO_ROOT / path):
        if candidate.exists():
            return candidate
    raise RunLoadError(
        f"{run_dir}: the recorded path {path} exists neither in the current folder "
        f"nor under {REPO_ROOT}; run from the folder the job ran in (or rebuild "
        "it: `make base` for the embedded base model)"
    )


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _builder_kwargs(
    builder: Callable[..., nn.Module], meta: dict[str, Any], adapter_dir: Path
) -> dict[str, Any]:
    """The saved hyper-parameters, checked against the builder's signature."""
    params = inspect.signature(builder).parameters
    hparams = dict(meta.get("hparams") or {})
    if meta.get("task_id_scheme") and "task_id_scheme" in params:  # older MOELoRA adapters
        hparams.setdefault("task_id_scheme", meta["task_id_scheme"])
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = set(params) - {"model", "tasks", "target_modules"}
        if extra := sorted(set(hparams) - allowed):
            raise RunLoadError(
                f"{adapter_dir}: hyper-parameters {extra} are not arguments of "
                f"{meta.get('builder')} (it takes {sorted(allowed)}); was the "
                "adapter saved by another version of the method?"
            )
    return hparams


def build_from_adapter(
    adapter_dir: str | Path,
    *,
    config: DictConfig | None = None,
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
    device: str | torch.device | None = "cpu",
) -> tuple[nn.Module, Path, dict[str, Any]]:
    """Base model + the adapter saved in ``adapter_dir``, weights loaded.

    Args:
        adapter_dir: a folder written by moelora.engine.adapters.save_adapter.
        config: the run's config (model dtype default).
        dtype: the base dtype (default: the run's ``model.dtype``, else float32).
        trust_remote_code: the caller's choice only (None: False); never read from the run
            folder, which may come from someone else.
        device: where the model goes.

    Returns:
        ``(model, base_dir, meta)``, the model in eval mode.
    """
    from moelora.models.loading import load_base_model

    adapter_dir = Path(adapter_dir)
    meta = read_adapter_config(adapter_dir)
    name = meta.get("builder") or (config and OmegaConf.select(config, "method.adapter._target_"))
    if not name:
        raise RunLoadError(
            f"{adapter_dir}: adapter_config.json names no builder and the run has "
            "no method.adapter._target_; cannot rebuild the adapter"
        )
    try:
        name = check_name(name, kind="method", source=adapter_dir / "adapter_config.json")
    except UntrustedNameError as e:
        raise RunLoadError(str(e)) from None
    builder = get_method(name)
    base_path = (meta.get("base_model") or {}).get("name_or_path")
    if not base_path:
        raise RunLoadError(f"{adapter_dir}: adapter_config.json has no base_model.name_or_path")
    base_dir = resolve_path(base_path, run_dir=adapter_dir)
    model_cfg = config.model if config is not None else {}
    dtype = dtype or model_cfg.get("dtype") or "float32"
    trust_remote_code = bool(trust_remote_code)  # the caller's flag, never the folder's
    model = load_base_model(
        base_dir,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_cfg.get("attn_implementation"),
        quantization=model_cfg.get("quantization"),
        device=_device(device),
    )
    targets = meta["target_modules"]  # a list of suffixes, or a keyword ("all-linear")
    if name == MOELORA_BUILDER:  # MOELoRA loads through the library API
        loaded = MoeLoraModel.from_pretrained(
            model, adapter_dir, tasks=list(meta["tasks"]), is_trainable=True
        )
        model = loaded.get_base_model()
    else:
        model = builder(
            model,
            tasks=list(meta["tasks"]),
            target_modules=targets if isinstance(targets, str) else list(targets),
            **_builder_kwargs(builder, meta, adapter_dir),
        )
        load_adapter(model, adapter_dir, expected_tasks=list(meta["tasks"]))
    meta = {**meta, "trust_remote_code": trust_remote_code}
    return model.to(_device(device)).eval(), base_dir, meta


def _run_hook(config: DictConfig | None) -> Callable[..., LoadedRun] | None:
    """``load_run`` of the module of the run's pipeline, when that module provides one."""
    pipeline = OmegaConf.select(config, "method.pipeline") if config is not None else None
    if not pipeline or "." not in str(pipeline):
        return None  # a shared pipeline of moelora.harness.context: the default loader
    name = check_name(pipeline, kind="method", source=CONFIG_NAME)
    module = importlib.import_module(name.rsplit(".", 1)[0])
    hook = getattr(module, "load_run", None)
    return hook if callable(hook) else None


def _check_finished(run_dir: Path) -> None:
    results = read_results(run_dir)
    status = results.get("status") if results else None
    if status not in (None, "success"):
        raise RunLoadError(
            f"{run_dir}: results.json says status {status!r}; only a finished "
            "run can be rebuilt (rerun it with `python run.py ...`)"
        )


def _check_files(run_dir: Path) -> None:
    """Refuse a run whose files no longer match its manifest (moelora.utils.manifest); a run
    written before manifests is loaded with a printed note."""
    results = read_results(run_dir) or {}
    try:
        verified = verify_manifest(
            run_dir,
            fix="it is not loaded: restore the file from a copy, or rerun the job with "
            "`python run.py ... overwrite=true`",
        )
    except ManifestError as e:
        raise RunLoadError(str(e)) from None
    if verified:
        return
    if results.get("manifest"):
        raise RunLoadError(
            f"{run_dir / MANIFEST_NAME}: missing, but results.json says the run wrote one; "
            "its files cannot be verified: rerun the job with overwrite=true"
        )
    print(
        f"[legacy] {run_dir}: no {MANIFEST_NAME} (written before manifests); files not verified",
        file=sys.stderr,
    )


def load_run(
    run_dir: str | Path,
    *,
    device: str | torch.device | None = "cpu",
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
) -> LoadedRun:
    """Rebuild ``run_dir`` (written by run.py) into its adapted model.

    Args:
        run_dir: a finished run directory (``adapter/``, or what its pipeline's own
            ``load_run`` reads), or a folder holding only ``adapter/``.
        device: ``cpu``, ``cuda``, ``auto`` or a torch device.
        dtype: base dtype (default: the run's ``model.dtype``).
        trust_remote_code: the caller's choice (default False); a run folder never turns it on.

    Raises:
        RunLoadError: not a finished run, no trained adapter (ICL, Task-Arithmetic and LoRAHub
            train nothing), or a recorded path that no longer exists.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunLoadError(f"{run_dir}: no such run directory")
    config = read_run_config(run_dir)
    _check_finished(run_dir)
    _check_files(run_dir)
    hook = _run_hook(config)
    if hook is not None:
        return hook(
            run_dir,
            config=config,
            device=_device(device),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
    adapter_dir = run_dir / "adapter"
    if not adapter_dir.is_dir():
        method = OmegaConf.select(config, "method.name") if config is not None else None
        raise RunLoadError(
            f"{run_dir}: no adapter/ folder; "
            + (
                f"method {method} saved no trained adapter (methods that train "
                "nothing, such as ICL, Task-Arithmetic and LoRAHub, cannot be "
                "rebuilt)"
                if method
                else "is this a run directory of run.py?"
            )
        )
    model, base_dir, meta = build_from_adapter(
        adapter_dir, config=config, dtype=dtype, trust_remote_code=trust_remote_code, device=device
    )
    task_map = TaskMap(meta["tasks"], scheme=meta.get("task_id_scheme") or "dense")
    return LoadedRun(
        run_dir=run_dir,
        model=model,
        base_dir=base_dir,
        meta=meta,
        config=config,
        task_map=task_map,
        device=_device(device),
        trust_remote_code=meta["trust_remote_code"],
    )
