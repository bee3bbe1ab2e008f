"""Shared pieces of the composition baselines (Task-Arithmetic §5.1, LoRAHub §5.2) and of
the validation-based selections (LoRA (Single) §4.2).

* Finding the LoRA (Single) run of the same seed and reading its eight adapters as plain
  factors ``A_t (r×d_in)``, ``B_t (d_out×r)`` with scaling ``s_t = α/r``.
* :class:`LowRankDelta`: a wrapper around a frozen linear that adds ``scale · B A x``.
  Every composition is such a delta: the exact task-arithmetic sum is the rank-8r
  concatenation ``A = [A_1;…;A_8]``, ``B = [s B_1, …, s B_8]`` (§9(e)); the element-wise
  (LoRAHub / legacy PEFT "linear") one is ``A' = Σ w A_t``, ``B' = Σ w B_t``.
* :func:`merged`: fold the deltas into the base weights (fp32 sum, cast once) and restore
  the kept originals exactly afterwards.
* Validation helpers: a seeded per-task subset, teacher-forced CE (Eq. 2 masking) and the
  generation metric of the run's scorer.
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from moelora.data.encoding import IGNORE_INDEX, Encoder
from moelora.engine.adapters import CONFIG_NAME, WEIGHTS_NAME, read_adapter_config
from moelora.harness.naming import run_dirname
from moelora.method.gate import task_context
from moelora.utils.io import inside, read_json
from moelora.utils.manifest import verify_manifest
from moelora.utils.redaction import redact_override

# Keys under the composition methods' own YAML nodes: they do not exist for lora_single,
# so they are dropped when the lora_single run directory is derived from this run's.
OWN_OVERRIDE_PREFIXES = ("method.ta.", "method.lorahub.", "method.inputs.", "method.single.")
_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.(?P<name>[^.]+)\.weight$"
)
_OVERRIDE_SPLIT = re.compile(r",(?=[A-Za-z_+~][\w.+~/-]*=)")


class MissingInputRunError(FileNotFoundError):
    """The LoRA (Single) run a composition method needs does not exist or did not succeed."""


# ---- locating the LoRA (Single) run ---------------------------------------------------
def _hydra_task_overrides() -> list[str] | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ValueError, ImportError):
        return None


def _is_own(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key.startswith(OWN_OVERRIDE_PREFIXES)


def input_run_command(
    input_method: str, seed: int, run_dir: Path, overrides: Sequence[str] | None = None
) -> str:
    """The ``python run.py …`` command that creates the input run of this job.

    Args:
        input_method: the method of the input run (``lora_single``).
        seed: the run seed.
        run_dir: this job's run directory (used when Hydra's overrides are unavailable).
        overrides: this job's command-line overrides (Hydra's ``overrides.task``).
    """
    if overrides is None:
        overrides = _hydra_task_overrides()
    if overrides is None:  # rebuild from the directory name: <exp>/<method>/<overrides>/seed=S
        exp_dir, overrides = _split_run_dir(run_dir)
        if exp_dir.name and exp_dir.name != "default":
            overrides = [f"experiment_name={exp_dir.name}", *overrides]
    kept = [
        redact_override(o)
        for o in overrides
        if o.split("=", 1)[0].lstrip("+~") not in ("method", "seed") and not _is_own(o)
    ]
    return " ".join(
        shlex.quote(a)
        for a in ["python", "run.py", f"method={input_method}", f"seed={seed}", *kept]
    )


def _split_run_dir(run_dir: Path) -> tuple[Path, list[str]]:
    """``<out>/<exp>/<method>/[<overrides>/]seed=S`` → (experiment dir, overrides)."""
    run_dir = Path(run_dir)
    if "=" in run_dir.parent.name:  # an override_dirname (k=v,k=v)
        return run_dir.parent.parent.parent, _OVERRIDE_SPLIT.split(run_dir.parent.name)
    return run_dir.parent.parent, []  # no overrides: Hydra's override_dirname is empty


def derive_input_run_dir(run_dir: Path, input_method: str) -> Path:
    """This job's run directory with the method component replaced and this method's own
    overrides (``method.ta.*``, ``method.lorahub.*``, ``method.inputs.*``) removed."""
    exp_dir, overrides = _split_run_dir(run_dir)
    name = ",".join(o for o in overrides if o and not _is_own(o))
    task = _hydra_task_overrides()
    if task is not None:  # the name Hydra gives the input run (moelora.harness.naming)
        from hydra.core.hydra_config import HydraConfig

        name = run_dirname(
            [o for o in task if not _is_own(o)], HydraConfig.get().job.config.override_dirname
        )
    method_dir = exp_dir / input_method
    return (method_dir / name if name else method_dir) / Path(run_dir).name


def find_input_run(ctx: Any) -> Path:
    """The LoRA (Single) run of the same seed (``method.inputs.run_dir`` overrides).

    Raises:
        MissingInputRunError: naming the command that creates it. Composition methods never
            train their inputs silently.
    """
    inputs = ctx.cfg.method.inputs
    input_method = inputs.method
    run_dir = Path(ctx.run_dir)
    explicit = inputs.get("run_dir")
    path = Path(explicit) if explicit else derive_input_run_dir(run_dir, input_method)
    command = input_run_command(input_method, int(ctx.cfg.seed), run_dir)
    results = path / "results.json"
    status = read_json(results).get("status") if results.is_file() else None
    if status != "success":
        what = "does not exist" if status is None else f"has status {status!r}"
        raise MissingInputRunError(
            f"{ctx.cfg.method.name} composes the {input_method} adapters of the same seed, but "
            f"the {input_method} run at {path} {what}. Create it first with:\n  {command}\n"
            f"(or point method.inputs.run_dir=<dir> at an existing successful {input_method} run)"
        )
    # its adapters are used only while they match its manifest (moelora/utils/manifest.py)
    verify_manifest(path, fix=f"rerun it with overwrite=true:\n  {command} overwrite=true")
    return path


# ---- the single-task adapters as factors ----------------------------------------------
@dataclass
class LoraFactors:
    """One task's LoRA: ``A[module] (r×d_in)``, ``B[module] (d_out×r)``, scaling ``s``."""

    task: str
    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    scaling: float
    config: dict[str, Any]


def read_lora_factors(directory: Path, task: str | None = None) -> LoraFactors:
    """Read an adapter saved by :func:`moelora.engine.adapters.save_adapter` from a ``peft`` LoRA.

    Module names are those of the plain base model (the ``base_model.model.`` prefix and the
    adapter name are removed). ``s = alpha / rank`` from the saved hyper-parameters (Eq. 3).
    """
    directory = Path(directory)
    if not (directory / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_NAME}; is this a LoRA (Single) adapter?")
    config = read_adapter_config(directory)
    saved = config.get("tasks")
    if task is not None and saved is not None and list(saved) != [task]:
        raise ValueError(f"{directory}: adapter is for tasks {saved}, expected [{task!r}]")
    hp = config.get("hparams", {})
    rank, alpha = hp.get("rank", 16), hp.get("alpha", 32)
    state = load_file(str(directory / WEIGHTS_NAME))
    A: dict[str, torch.Tensor] = {}
    B: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            raise ValueError(f"{directory}: parameter {key!r} is not a LoRA factor (lora_A/lora_B)")
        (A if m["ab"] == "A" else B)[m["module"]] = value.float()
    if set(A) != set(B) or not A:
        raise ValueError(f"{directory}: lora_A and lora_B modules differ or are empty")
    if any(a.shape[0] != rank for a in A.values()):
        raise ValueError(f"{directory}: lora_A rank differs from hparams.rank={rank}")
    return LoraFactors(
        task=task or (saved or ["?"])[0], A=A, B=B, scaling=alpha / rank, config=config
    )


def load_single_adapters(single_dir: Path, tasks: Sequence[str]) -> dict[str, LoraFactors]:
    """The eight adapters under ``<single_dir>/adapters/<task>/``, same modules for all."""
    out = {}
    for task in tasks:
        path = inside(Path(single_dir) / "adapters", task)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{path}: LoRA (Single) adapter of task {task} is missing; rerun lora_single "
                "(it resumes and only trains the missing tasks)"
            )
        out[task] = read_lora_factors(path, task)
    modules = {t: set(f.A) for t, f in out.items()}
    first = next(iter(modules.values()))
    if any(m != first for m in modules.values()):
        raise ValueError(f"{single_dir}: the single-task adapters adapt different modules")
    return out


def exact_sum(
    factors: Sequence[LoraFactors], module: str, weights: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-Σr concatenation with ``B A = Σ_t w_t s_t B_t A_t`` (sum of products, §5.1)."""
    weights = [1.0] * len(factors) if weights is None else list(weights)
    A = torch.cat([f.A[module] for f in factors], dim=0)
    B = torch.cat([w * f.scaling * f.B[module] for f, w in zip(factors, weights)], dim=1)
    return A, B


def elementwise_sum(
    factors: Sequence[LoraFactors],
    module: str,
    weights: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A' = Σ w_t A_t``, ``B' = Σ w_t B_t`` (LoRAHub / legacy PEFT "linear"; cross terms)."""
    A = sum(w * f.A[module] for f, w in zip(factors, weights))
    B = sum(w * f.B[module] for f, w in zip(factors, weights))
    return A, B


# ---- a low-rank delta on a frozen linear ------------------------------------------------
class LowRankDelta(nn.Module):
    """``h = base(x) + scale · B (A x)``; ``A``/``B`` are buffers (nothing trains)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.register_buffer("A", torch.zeros(0, base.in_features), persistent=False)
        self.register_buffer("B", torch.zeros(base.out_features, 0), persistent=False)
        self.scale = 0.0
        self.active = True

    def set_delta(self, A: torch.Tensor, B: torch.Tensor, scale: float) -> None:
        dev = self.base.weight.device
        self.A = A.to(device=dev, dtype=torch.float32)
        self.B = B.to(device=dev, dtype=torch.float32)
        self.scale = float(scale)

    def delta_weight(self) -> torch.Tensor:
        """``scale · B A`` in fp32, shape of the base weight."""
        return self.scale * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.active or self.A.shape[0] == 0 or self.scale == 0.0:
            return out
        u = nn.functional.linear(x.to(self.A.dtype), self.A)
        return out + (self.scale * nn.functional.linear(u, self.B)).to(out.dtype)


def install_deltas(model: nn.Module, modules: Sequence[str]) -> dict[str, LowRankDelta]:
    """Wrap each named linear of ``model`` in a :class:`LowRankDelta` (zero delta)."""
    wrappers = {}
    for name in modules:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        if isinstance(base, LowRankDelta):
            wrappers[name] = base
            continue
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"{name} is {type(base).__name__}, not nn.Linear; the adapters do "
                "not fit this base model"
            )
        wrapper = LowRankDelta(base)
        setattr(parent, child, wrapper)
        wrappers[name] = wrapper
    return wrappers


@contextmanager
def merged(wrappers: dict[str, LowRankDelta]) -> Iterator[None]:
    """Fold every delta into its base weight (fp32 sum, cast once) with the adapter path
    off; on exit restore the kept original weights exactly (no subtraction)."""
    kept = {}
    try:
        with torch.no_grad():
            for name, w in wrappers.items():
                weight = w.base.weight
                kept[name] = weight.detach().clone()
                if w.A.shape[0]:
                    weight.copy_((weight.float() + w.delta_weight()).to(weight.dtype))
                w.active = False
        yield
    finally:
        with torch.no_grad():
            for name, original in kept.items():
                wrappers[name].base.weight.copy_(original)
                wrappers[name].active = True


# ---- validation helpers -----------------------------------------------------------------
def by_task(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["task_dataset"], []).append(r)
    return groups


def val_subset(
    records: Sequence[dict[str, Any]], tasks: Sequence[str], per_task: int | str | None, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """A fixed seeded subset of ``per_task`` examples of every task (``all``/None: all)."""
    groups = by_task(records)
    out = {}
    for task in tasks:
        rows = list(groups.get(task, []))
        if not rows:
            raise ValueError(
                f"the dev split has no example of task {task}; validation-based "
                "selection needs every task's validation set"
            )
        if per_task not in (None, "all") and int(per_task) < len(rows):
            rng = random.Random(f"{seed}:{task}")
            keep = sorted(rng.sample(range(len(rows)), int(per_task)))
            rows = [rows[i] for i in keep]
        out[task] = rows
    return out


@torch.no_grad()
def teacher_forced_loss(
    model: nn.Module,
    encoder: Encoder,
    records: Sequence[dict[str, Any]],
    *,
    batch_size: int = 8,
    device: Any = "cpu",
    norm: str = "mean",
) -> float:
    """Teacher-forced CE of ``model`` on ``records`` with §1.2 masking (Eq. 2), no dropout.

    Args:
        records: PromptCBLUE records, or examples already encoded by
            ``encoder.train_example`` (cheaper when the same set is scored many times).
        norm: ``mean`` = token-level mean over every supervised token of ``records``;
            ``reference`` = Σ_batches (batch mean CE) / number of examples (LoRAHub's code).
    """
    was_training = model.training
    model.eval()
    examples = [r if "input_ids" in r else encoder.train_example(r) for r in records]
    total, tokens, batch_means = 0.0, 0, 0.0
    for i in range(0, len(examples), batch_size):
        batch = encoder.collate_train(examples[i : i + batch_size])
        batch = {k: v.to(device) for k, v in batch.items()}
        task_ids = batch.pop("task_ids")
        with task_context(model, task_ids):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        labels = batch["labels"][:, 1:]
        ce = nn.functional.cross_entropy(
            logits[:, :-1].float().flatten(0, 1),
            labels.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        n = int((labels != IGNORE_INDEX).sum())
        total += float(ce)
        tokens += n
        batch_means += float(ce) / max(1, n)
    model.train(was_training)
    if norm == "mean":
        return total / max(1, tokens)
    if norm == "reference":
        return batch_means / max(1, len(examples))
    raise ValueError(f"loss norm {norm!r}; use 'mean' or 'reference'")


def metric_scores(
    ctx: Any, model: nn.Module, encoder: Encoder, records: dict[str, list[dict[str, Any]]]
) -> dict[str, float]:
    """Generate the validation records and score them with the run's primary scorer:
    ``{task: score}`` (same metrics as test)."""
    try:
        from moelora.evaluation import score_records
    except ImportError as e:  # pragma: no cover - depends on the scoring package
        raise ImportError(
            f"validation by metric needs moelora.evaluation ({e}); use select_by=loss meanwhile"
        ) from e
    flat = [r for rows in records.values() for r in rows]
    preds = ctx.generate(model, encoder, flat, merge=False).predictions
    report = score_records(flat, preds, mode=ctx.cfg.scorer.modes[0], tasks=list(records))
    # an undefined score (None) counts as 0: the worst value of every metric
    return {t: float(report.scores[t] or 0.0) for t in records}


def loss_scores(
    ctx: Any, model: nn.Module, encoder: Encoder, records: dict[str, list[dict[str, Any]]]
) -> dict[str, float]:
    """``{task: teacher-forced validation CE}`` (lower is better)."""
    bs = ctx.cfg.trainer.eval.batch_size
    return {
        t: teacher_forced_loss(model, encoder, rows, batch_size=bs, device=ctx.accelerator.device)
        for t, rows in records.items()
    }


def validation_scores(
    ctx: Any,
    model: nn.Module,
    encoder: Encoder,
    records: dict[str, list[dict[str, Any]]],
    select_by: str,
) -> dict[str, float]:
    if select_by == "metric":
        return metric_scores(ctx, model, encoder, records)
    if select_by == "loss":
        return loss_scores(ctx, model, encoder, records)
    raise ValueError(f"select_by={select_by!r}; use 'metric' or 'loss'")


def higher_is_better(select_by: str) -> bool:
    return select_by == "metric"
