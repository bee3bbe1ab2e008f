"""The whole config is checked before a job touches its run directory.

Hydra's struct mode already refuses a typo in an existing key; this module catches what it
lets through, each with the key and the fix:

* **Values**: a value of the wrong type or outside its range (``seed=abc``,
  ``trainer.save_every=abc``), or not one of a key's choices (``resume=sometimes``).
  The table :data:`VALUES` is the one place that lists them.
* **Keys that nothing reads**, added with ``+`` (``+method.num_experts=3``). A node with a
  ``_target_`` (``method.adapter``, ``method.sampler``, ``data.prepare`` ...) accepts the
  parameters of that target (``inspect.signature``); every other key must be defined by the
  selected option's YAML (``conf/<group>/<option>.yaml`` and the files its defaults list pulls
  in; for the method, the file named by ``method.name``), by ``conf/config.yaml``, or by a
  global-package file (``conf/experiment``, ``conf/debug``, ``conf/local``).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("model", "data", "method", "trainer", "lr_protocol", "logger", "paths")
GLOBAL_DIRS = ("experiment", "debug", "local")
# Keys that configure instantiation rather than the target's parameters.
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """The composed config is invalid; the message names every bad key and its fix."""


# key: (kind, minimum or choices, example). kinds: int, float, bool, str (choices).
# "?" after the kind: null is allowed.
VALUES: dict[str, tuple[str, Any, str]] = {
    "seed": ("int", None, "seed=42"),
    "threads": ("int?", 1, "threads=2 (or threads=null)"),
    "overwrite": ("bool", None, "overwrite=true"),
    "reuse": ("bool", None, "reuse=false"),
    "progress": ("bool", None, "progress=false"),
    "deterministic": ("bool", None, "deterministic=true"),
    "resume": ("str", ("auto", "never"), "resume=never"),
    "decoding": ("str", ("sample", "greedy"), "decoding=greedy"),
    "device": ("str", ("auto", "cpu"), "device=cpu"),
    "trainer.max_steps": ("int", 1, "trainer.max_steps=500"),
    "trainer.per_device_batch_size": ("int", 1, "trainer.per_device_batch_size=16"),
    "trainer.grad_accum": ("int", 1, "trainer.grad_accum=1"),
    "trainer.effective_batch": ("int?", 1, "trainer.effective_batch=64 (null: grad_accum as set)"),
    "trainer.length_groups": ("int", 1, "trainer.length_groups=4 (1: sampler order)"),
    "trainer.loss_weighting": ("str", ("token", "example"), "trainer.loss_weighting=example"),
    "trainer.dropout_masks": ("str", ("bits16", "torch"), "trainer.dropout_masks=torch"),
    "trainer.compile": ("str", ("off", "on"), "trainer.compile=on"),
    "trainer.lr": ("float?", None, "trainer.lr=5e-3 (or null: method.optim.lr × lr_scale)"),
    "trainer.lr_scale": ("float", None, "trainer.lr_scale=1.0"),
    "trainer.weight_decay": ("float", None, "trainer.weight_decay=0.0"),
    "trainer.max_grad_norm": ("float", None, "trainer.max_grad_norm=1.0"),
    "trainer.warmup_steps": ("int", 0, "trainer.warmup_steps=0"),
    "trainer.precision": ("str", ("auto", "no", "fp16", "bf16"), "trainer.precision=bf16"),
    "trainer.save_every": ("int", 0, "trainer.save_every=100 (0: no checkpoints)"),
    "trainer.keep_checkpoints": ("int", 1, "trainer.keep_checkpoints=2"),
    "trainer.log_every": ("int", 1, "trainer.log_every=10"),
    "trainer.eval.batch_size": ("int", 1, "trainer.eval.batch_size=32"),
    "trainer.eval.limit_per_task": ("int?", 1, "trainer.eval.limit_per_task=4 (or null: all)"),
    "trainer.eval.max_new_tokens": ("int?", 1, "trainer.eval.max_new_tokens=128"),
    "trainer.eval.temperature": ("float", None, "trainer.eval.temperature=0.95"),
    "trainer.eval.top_p": ("float", None, "trainer.eval.top_p=0.7"),
    "trainer.eval.top_k": ("int", 0, "trainer.eval.top_k=50"),
    "data.max_source_length": ("int", 1, "data.max_source_length=256"),
    "data.max_target_length": ("int", 2, "data.max_target_length=128"),
    "data.truncation_side": ("str", ("right", "left"), "data.truncation_side=left"),
    "data.task_ids": ("str", ("dense", "authors"), "data.task_ids=dense"),
    "data.max_truncated_fraction": ("float", None, "data.max_truncated_fraction=0.5"),
    "data.build": ("bool", None, "data.build=true"),
    "model.build": ("bool", None, "model.build=true"),
    "model.attn_implementation": (
        "str?",
        ("sdpa", "flash_attention_2", "eager"),
        "model.attn_implementation=flash_attention_2",
    ),
    "model.quantization": ("str?", ("4bit", "8bit"), "model.quantization=4bit"),
    "model.max_lr": ("float?", None, "model.max_lr=1e-3 (or null: no limit)"),
    "method.infer": ("str", ("unmerged", "merged_per_task"), "method.infer=merged_per_task"),
}


def _value_problem(key: str, value: Any, kind: str, limit: Any, example: str) -> str | None:
    if kind.endswith("?"):
        if value is None:
            return None
        kind = kind[:-1]
    if kind == "bool":
        ok, what = isinstance(value, bool), "true or false"
    elif kind == "int":
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind == "float":
        ok, what = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        ok, what = value in limit, "one of " + ", ".join(limit)
    if kind in ("int", "float") and limit is not None:
        ok, what = ok and value >= limit, f"{what} ≥ {limit}"
    if ok:
        return None
    return f"{key}={value!r}: must be {what}; e.g. {example}"


def check_values(cfg: DictConfig) -> list[str]:
    """Every key of :data:`VALUES` present in ``cfg`` has a value of its kind."""
    problems = []
    for key, (kind, limit, example) in VALUES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
        except Exception as e:  # noqa: BLE001 - an interpolation that does not resolve
            problems.append(f"{key}: {e}")
            continue
        if value is not _ABSENT:
            problem = _value_problem(key, value, kind, limit, example)
            if problem:
                problems.append(problem)
    return problems


_ABSENT = object()


# ---- keys that nothing reads --------------------------------------------------------------
def _keys(node: Any) -> Iterator[str]:
    """Dotted paths of every key of a plain dict tree (dicts are walked, lists are leaves;
    a top-level ``defaults`` or ``hydra`` is skipped)."""
    return (path for path, _ in _nodes(node))


def _nodes(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every key of a plain dict tree, as :func:`_keys` walks it."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("defaults", "hydra") and not prefix:
                continue
            yield f"{prefix}{k}", v
            yield from _nodes(v, f"{prefix}{k}.")


@functools.cache
def _load(path: Path) -> dict[str, Any]:
    container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return container if isinstance(container, dict) else {}


def option_keys(group: str, option: str) -> set[str] | None:
    """Dotted keys (relative to the group) that ``conf/<group>/<option>.yaml`` and the
    same-group files of its defaults list define; None when the file does not exist."""
    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return None
    data = _load(path)
    keys = set(_keys(data))
    for item in data.get("defaults") or []:
        if isinstance(item, str) and item != "_self_":
            keys |= option_keys(group, item) or set()
    return keys


def _group_keys(group: str, option: str | None) -> set[str]:
    """The selected option's keys; all options' keys when the option is unknown."""
    if option is not None and (keys := option_keys(group, option)) is not None:
        return keys
    out: set[str] = set()
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        out |= option_keys(group, path.stem) or set()
    return out


def _global_keys() -> set[str]:
    keys = set(_keys(_load(CONF_DIR / "config.yaml"))) | set(GROUPS)
    for folder in GLOBAL_DIRS:
        for path in sorted((CONF_DIR / folder).glob("*.yaml")):
            keys |= set(_keys(_load(path)))
    return keys


@functools.cache
def _target_params(target: str) -> frozenset[str] | None:
    """Parameter names of a ``_target_`` (None: not importable, or it takes ``**kwargs``).
    Imported only when a key under it is not in the YAML files."""
    from hydra._internal.utils import _locate

    try:
        obj = _locate(target)
        params = inspect.signature(obj).parameters.values()
    except Exception:  # noqa: BLE001 - instantiate reports an unimportable target itself
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def unknown_keys(cfg: DictConfig, choices: dict[str, str] | None = None) -> list[str]:
    """Keys of ``cfg`` that no YAML defines and no ``_target_`` accepts, each with the valid
    keys next to it and a suggestion.

    Args:
        cfg: the composed config.
        choices: Hydra's ``runtime.choices`` (group → option) when known; otherwise the
            method's option is ``method.name`` and other groups accept the keys of any option.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    choices = dict(choices or {})
    choices.setdefault("method", str(tree.get("method", {}).get("name")))
    known = {f"{g}.{k}" for g in GROUPS for k in _group_keys(g, choices.get(g))} | _global_keys()
    targets = {
        path: node["_target_"]
        for path, node in _nodes(tree)  # node → its target
        if isinstance(node, dict) and isinstance(node.get("_target_"), str)
    }
    problems = []
    for path in _keys(tree):
        parent, _, leaf = path.rpartition(".")
        if (
            path in known
            or leaf in HYDRA_KEYS
            or any(path.startswith(t + ".") and _target_params(targets[t]) is None for t in targets)
        ):
            continue
        if parent in targets and (params := _target_params(targets[parent])) is not None:
            if leaf in params:
                continue
            valid = sorted(
                params
                - {"model", "tasks", "target_modules", "task_ids", "batch_size", "seed", "run_dir"}
            )
        else:
            if parent and parent not in known and parent not in targets:
                continue  # reported at its first unknown ancestor
            prefix = parent + "." if parent else ""
            valid = sorted(
                k[len(prefix) :]
                for k in known
                if k.startswith(prefix) and "." not in k[len(prefix) :]
            )
        hint = _suggest(path, leaf, valid, known, targets)
        problems.append(
            f"{path}: no builder or pipeline reads this key (added with '+'?). "
            f"Valid keys of {parent or 'the top level'}: {', '.join(valid) or 'none'}"
            f"{hint}"
        )
    return problems


def _suggest(
    path: str, leaf: str, valid: list[str], known: set[str], targets: dict[str, str]
) -> str:
    group = path.split(".", 1)[0]
    elsewhere = sorted(
        {k for k in known if k.rsplit(".", 1)[-1] == leaf and k.startswith(group)}
        | {
            f"{t}.{leaf}"
            for t, target in targets.items()
            if t.startswith(group) and leaf in (_target_params(target) or ())
        }
    )
    if elsewhere:
        return f". Did you mean {' or '.join(elsewhere)}?"
    close = difflib.get_close_matches(leaf, valid, n=1)
    return (
        f". Did you mean {path.rpartition('.')[0] + '.' if '.' in path else ''}{close[0]}?"
        if close
        else ""
    )


def check_config(cfg: DictConfig, choices: dict[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` listing every bad value and every key nothing reads."""
    problems = check_values(cfg) + unknown_keys(cfg, choices)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"the config has {len(problems)} problem(s); nothing was run or changed:\n{lines}"
        )
