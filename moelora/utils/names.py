"""Dotted names that configs and run folders hold, across the package's moves.

Configs name code by dotted path (``method.adapter._target_``, ``method.sampler._target_``,
``method.pipeline``, ``data.build._target_``), and every finished run keeps them: in its
``config.yaml``, in ``results.json`` and as the ``builder`` of ``adapter/adapter_config.json``.
When a module moves, :data:`MOVED` (old module → new module) is the one alias map:

* :func:`current_name` turns an old name into the importable one (loading a run, resolving a
  pipeline or builder);
* :func:`identity_name` turns a new name back into its old spelling, so a job's identity hash
  (moelora.harness.identity) is the same before and after a move and finished runs stay done.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

# old module → new module (the package layout of version 0.2: method/, models/, data/, engine/,
# harness/, inference/, utils/).
MOVED: dict[str, str] = {
    "moelora.layer": "moelora.method.layer",
    "moelora.dropout": "moelora.method.dropout",
    "moelora.gate": "moelora.method.gate",
    "moelora.routing": "moelora.method.gate",
    "moelora.moe": "moelora.method.model",
    "moelora.merge": "moelora.method.merge",
    "moelora.introspect": "moelora.method.introspect",
    "moelora.tasks": "moelora.method.tasks",
    "moelora.export": "moelora.method.export",
    "moelora.models": "moelora.models.loading",
    "moelora.chatglm": "moelora.models.chatglm",
    "moelora.data": "moelora.data.encoding",
    "moelora.samplers": "moelora.data.samplers",
    "moelora.prepare_promptcblue": "moelora.data.promptcblue",
    "moelora.medsynth": "moelora.data.medsynth",
    "moelora.train": "moelora.engine.train",
    "moelora.checkpoint": "moelora.engine.checkpoint",
    "moelora.adapters": "moelora.engine.adapters",
    "moelora.generation": "moelora.engine.generation",
    "moelora.distributed": "moelora.engine.distributed",
    "moelora.seed": "moelora.utils.seed",
    "moelora.io": "moelora.utils.io",
    "moelora.redaction": "moelora.utils.redaction",
    "moelora.measure": "moelora.utils.measure",
    "moelora.runner": "moelora.harness.runner",
    "moelora.context": "moelora.harness.context",
    "moelora.pipelines": "moelora.harness.context",
    "moelora.identity": "moelora.harness.identity",
    "moelora.reuse": "moelora.harness.reuse",
    "moelora.rundir": "moelora.harness.runner",
    "moelora.summary": "moelora.harness.results",
    "moelora.results": "moelora.harness.results",
    "moelora.loggers": "moelora.harness.loggers",
    "moelora.hydra_callbacks": "moelora.harness.hydra_callbacks",
    "moelora.schema": "moelora.harness.schema",
    "moelora.naming": "moelora.harness.naming",
    "moelora.inputs": "moelora.harness.inputs",
    "moelora.lr_protocol": "moelora.harness.lr_protocol",
    "moelora.runs": "moelora.inference.load",
    "moelora.predict": "moelora.inference.predict",
}
# Names that moved on their own, not with their module.
MOVED_NAMES: dict[str, str] = {
    "moelora.models.find_targets": "moelora.method.model.find_targets",
    "moelora.models.ALL_LINEAR": "moelora.method.model.ALL_LINEAR",
    "moelora.models.is_conv1d": "moelora.method.layer.is_conv1d",
    "moelora.models.linear_shape": "moelora.method.layer.linear_shape",
    "moelora.export.load_run_model": "moelora.inference.export.load_run_model",
}

_DOTTED = re.compile(r"^moelora(\.\w+)+$")
# new module → old, only where one old module moved there (the merged ones never appear in a
# config: they hold no builder, sampler or pipeline).
_TARGETS = [new for new in MOVED.values()]
_BACK = {new: old for old, new in MOVED.items() if _TARGETS.count(new) == 1}
_BACK_NAMES = {new: old for old, new in MOVED_NAMES.items()}


def _split(name: str) -> tuple[str, str]:
    module, _, attr = name.rpartition(".")
    return module, attr


def current_name(name: str) -> str:
    """The importable spelling of a dotted name that may predate a move (unchanged otherwise)."""
    if not isinstance(name, str) or not _DOTTED.match(name):
        return name
    if name in MOVED_NAMES:
        return MOVED_NAMES[name]
    module, attr = _split(name)
    if module in MOVED:
        return f"{MOVED[module]}.{attr}"
    return MOVED.get(name, name)


def identity_name(name: str) -> str:
    """The spelling job identities hash: a moved name as it was before the move."""
    if not isinstance(name, str) or not _DOTTED.match(name):
        return name
    if name in _BACK_NAMES:
        return _BACK_NAMES[name]
    module, attr = _split(name)
    if module in _BACK:
        return f"{_BACK[module]}.{attr}"
    return _BACK.get(name, name)


def source_fingerprint(path: str | Path) -> bytes:
    """What a cached build hashes of its own generator source: the code without docstrings
    and with every moved module spelled as :func:`identity_name` spells it, so that editing
    a docstring or moving a module does not rebuild an identical artefact."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()
        if isinstance(node, ast.ImportFrom) and node.module:
            node.module = identity_name(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                alias.name = identity_name(alias.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = identity_name(node.value)
    return ast.dump(tree, include_attributes=False).encode("utf-8")
