"""``MoeLoraConfig``: MOELoRA's settings in the PEFT idiom (docs/library.md).

One dataclass holds what :func:`moelora.method.model.inject` takes (Eqs. 4-7: ``N`` experts of
total rank ``r``, scaling ``α``, the task gate and its ``d_T``) plus the ordered task list, whose
order defines the task ids. Every field carries a help text (``dataclasses.fields(...)[i]
.metadata["help"]``); ``__post_init__`` refuses a bad value with a message that names the field
and the fix. ``to_dict``/``from_dict`` read and write the ``adapter_config.json`` that
:meth:`moelora.method.peft_model.MoeLoraModel.save_pretrained` writes, which is also the file the
harness writes into ``RUN_DIR/adapter/`` (its ``hparams`` are this config's build arguments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from moelora.method.gate import GATES, SPARSE_MODES
from moelora.method.layer import DROPOUT_MODES, EXPERT_INITS, SCALING_RANKS
from moelora.method.model import ALL_LINEAR
from moelora.method.tasks import TaskMap

# The builder every MOELoRA adapter config names; "moelora.moe.build" is its spelling before the
# package layout of version 0.2 (moelora/utils/names.py, tests/test_library_api.py checks both).
BUILDER = "moelora.method.model.build"
BUILDERS = (BUILDER, "moelora.moe.build")
TASK_ID_SCHEMES = ("dense", "authors")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass(kw_only=True)
class MoeLoraConfig:
    """MOELoRA's hyper-parameters and task list (paper defaults: N=8, r=16, α=32, d_T=64)."""

    peft_type: ClassVar[str] = "MOELORA"

    tasks: list[str] = _help(
        "The ordered task names; task i of this list is task id i (task_id_scheme='dense').",
        default_factory=list,
    )
    target_modules: str | list[str] = _help(
        "Module-name suffixes of the linear layers to adapt (q_proj, v_proj, attn.c_attn, ...), "
        "or 'all-linear' for every linear layer but the output head.",
        default=ALL_LINEAR,
    )
    num_experts: int = _help("N, the number of LoRA experts per adapted layer.", default=8)
    rank: int = _help(
        "r, the TOTAL rank of the N experts (each expert has rank r/N); a multiple of N.",
        default=16,
    )
    alpha: float = _help("α; the adapter output is scaled by α/r (Eq. 4).", default=32.0)
    dropout: float = _help("Dropout probability on the adapter input, in [0, 1).", default=0.1)
    gate: str = _help(
        "'dense' (Eq. 5), 'sparse' (top_k experts, Eqs. 6-7), 'uniform' (no gate) or "
        "'per_layer' (one gate per adapted layer).",
        default="dense",
    )
    top_k: int = _help("K, the experts a sparse gate keeps per task (1..N).", default=2)
    task_embed_dim: int = _help("d_T, the size of the task embedding of the gate.", default=64)
    sparse_mode: str = _help(
        "'mask_neg_inf' (non-top-K logits set to -inf) or 'literal_zero' (Eq. 7 as printed).",
        default="mask_neg_inf",
    )
    expert_init: str = _help(
        "'normal_0.01' (A ~ N(0, 0.01^2)) or 'kaiming' (LoRA's init); B starts at 0 either way.",
        default="normal_0.01",
    )
    dropout_mode: str = _help(
        "'shared' (one dropout mask for all experts) or 'per_expert'.", default="shared"
    )
    scaling_rank: str = _help("'total' (s = α/r) or 'expert' (s = α/(r/N)).", default="total")
    task_id_scheme: str = _help(
        "'dense' (ids 0..T-1) or 'authors' (ids 1..16, a table of 17 rows).", default="dense"
    )
    batch_axis: int = _help(
        "The batch axis of the hidden states: 0, or 1 for sequence-first models (ChatGLM-6B).",
        default=0,
    )

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ValueError:
            return ValueError(f"MoeLoraConfig.{name}={getattr(self, name)!r}: {fix}")

        if isinstance(self.tasks, str) or not isinstance(self.tasks, Sequence) or not self.tasks:
            raise bad("tasks", "give the ordered list of task names, e.g. tasks=['qa', 'ner']")
        self.tasks = list(self.tasks)
        if not all(isinstance(t, str) and t for t in self.tasks):
            raise bad("tasks", "every task name must be a non-empty string")
        if len(set(self.tasks)) != len(self.tasks):
            raise bad("tasks", "task names must be distinct; remove the repeated ones")
        if isinstance(self.target_modules, str):
            if self.target_modules != ALL_LINEAR:
                raise bad(
                    "target_modules", f"use {ALL_LINEAR!r} or a list of module names ['q_proj']"
                )
        else:
            self.target_modules = list(self.target_modules)
            if not self.target_modules or not all(isinstance(t, str) for t in self.target_modules):
                raise bad(
                    "target_modules", "list module-name suffixes such as ['q_proj', 'v_proj']"
                )
        for name in ("num_experts", "rank", "task_embed_dim", "top_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "use a positive integer")
        if self.rank % self.num_experts:
            lower = max(self.num_experts, self.rank - self.rank % self.num_experts)
            raise bad(
                "rank",
                f"rank={self.rank} is not divisible by num_experts={self.num_experts} (each "
                f"expert has rank r/N); use a multiple of {self.num_experts}, e.g. rank={lower}",
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise bad("dropout", "use a probability in [0, 1)")
        for name, allowed in (
            ("gate", GATES),
            ("sparse_mode", SPARSE_MODES),
            ("expert_init", EXPERT_INITS),
            ("dropout_mode", DROPOUT_MODES),
            ("scaling_rank", SCALING_RANKS),
            ("task_id_scheme", TASK_ID_SCHEMES),
        ):
            if getattr(self, name) not in allowed:
                raise bad(name, f"use one of {', '.join(map(repr, allowed))}")
        if self.gate == "sparse" and self.top_k > self.num_experts:
            raise bad("top_k", f"a sparse gate keeps 1..num_experts={self.num_experts} experts")
        if self.batch_axis not in (0, 1):
            raise bad("batch_axis", "use 0 (batch-first) or 1 (sequence-first)")
        self.task_map()  # the id scheme fits the task list

    # ---- what build() takes ------------------------------------------------------------
    def task_map(self) -> TaskMap:
        """Task names ↔ ids (moelora.method.tasks.TaskMap)."""
        return TaskMap(self.tasks, scheme=self.task_id_scheme)

    def hparams(self) -> dict[str, Any]:
        """The keyword arguments of :func:`moelora.method.model.build` besides ``tasks`` and
        ``target_modules`` (the ``hparams`` of an adapter config)."""
        skip = ("tasks", "target_modules")
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }

    # ---- adapter_config.json -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The config's part of ``adapter_config.json`` (the harness's adapter meta keys)."""
        return {
            "peft_type": self.peft_type,
            "method": "moelora",
            "builder": BUILDER,
            "hparams": self.hparams(),
            "tasks": list(self.tasks),
            "task_id_scheme": self.task_id_scheme,
            "target_modules": self.target_modules,
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "adapter_config.json"
    ) -> MoeLoraConfig:
        """Read :meth:`to_dict`'s keys, or a harness run's ``adapter/adapter_config.json``.

        Raises:
            ValueError: naming ``source``, the field and the fix: another method's adapter, a
                missing ``tasks``/``target_modules``, an unknown hyper-parameter, a bad value.
        """
        builder = data.get("builder")
        if builder not in BUILDERS:
            kind = data.get("peft_type") or data.get("method") or "unknown"
            raise ValueError(
                f"{source}: builder={builder!r} (adapter type {kind}) is not a MOELoRA adapter "
                f"(builder {BUILDER!r}); load it with the library that wrote it "
                "(peft.PeftModel.from_pretrained for a stock LoRA)"
            )
        for key in ("tasks", "target_modules"):
            if key not in data:
                raise ValueError(
                    f"{source}: no {key!r} field; it was not written by save_pretrained"
                )
        hparams = dict(data.get("hparams") or {})
        if data.get("task_id_scheme"):  # harness adapters of older versions keep it apart
            hparams.setdefault("task_id_scheme", data["task_id_scheme"])
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(hparams) - known):
            raise ValueError(
                f"{source}: hparams {unknown} are not MoeLoraConfig fields ({sorted(known)}); "
                "was it saved by a newer version of moelora? Upgrade moelora to load it"
            )
        targets = data["target_modules"]
        try:
            return cls(
                tasks=list(data["tasks"]),
                target_modules=targets if isinstance(targets, str) else list(targets),
                **hparams,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from None
