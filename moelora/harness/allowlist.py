"""Run folders are data, not code: what a loaded run folder may name to import.

A run folder's ``config.yaml`` names a pipeline (``method.pipeline``), its ``adapter_config.json``
an adapter builder (``builder``), and both may hold ``_target_`` entries that Hydra would
instantiate. A folder received from someone else could name any module, so whatever reads a run
folder (moelora.inference.load) imports only what the project's own configs name:

* pipelines and builders: the ``pipeline`` values and every ``_target_`` of ``conf/method/*.yaml``
  (a bare pipeline name such as ``joint`` is a function of moelora.harness.context);
* any other ``_target_``: those of every YAML file under ``conf/``;

each also under the old spellings that moelora.utils.names.current_name maps to it. Anything
else is refused with the name, the file it came from and the fix.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from moelora.utils.names import current_name

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SHARED_PIPELINES = "moelora.harness.context"


class UntrustedNameError(ValueError):
    """A run folder names something to import that the project does not register."""


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _load(path: Path) -> Any:
    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a config Hydra cannot read names nothing
        return None


@functools.cache
def registered(conf_dir: Path = CONF_DIR) -> dict[str, frozenset[str]]:
    """``{"method": pipelines and builders of conf/method, "target": every conf _target_}``."""
    method: set[str] = set()
    target: set[str] = set()
    for path in sorted(conf_dir.rglob("*.yaml")):
        data = _load(path)
        found = set(_targets(data))
        target |= found
        if path.parent == conf_dir / "method" and isinstance(data, dict):
            method |= found
            pipeline = data.get("pipeline")
            if isinstance(pipeline, str):
                method.add(pipeline if "." in pipeline else f"{SHARED_PIPELINES}.{pipeline}")
    return {"method": frozenset(method), "target": frozenset(target | method)}


def check_name(name: Any, *, kind: str, source: str | Path) -> str:
    """The current spelling of ``name``, refused unless the project's configs register it.

    Args:
        name: a dotted import path read from a run folder.
        kind: ``"method"`` (a pipeline or an adapter builder) or ``"target"`` (any
            ``_target_``).
        source: the file it was read from (named in the error).

    Raises:
        UntrustedNameError: naming the value, the file and the fix.
    """
    text = str(name)
    full = text if "." in text or kind != "method" else f"{SHARED_PIPELINES}.{text}"
    if current_name(full) in registered()[kind] or full in registered()[kind]:
        return current_name(full)
    what = "pipelines and adapter builders of conf/method/" if kind == "method" else "conf/"
    raise UntrustedNameError(
        f"{source}: names {text!r} to import, which is not one of the project's registered "
        f"{what} (a run folder is data: it may not run other code); restore the value the run "
        "was written with, or add a method config under conf/method/ that names it"
    )


def check_config_targets(config: Any, *, source: str | Path) -> None:
    """Refuse a loaded config whose ``method.pipeline`` or any ``_target_`` is not registered."""
    data = OmegaConf.to_container(config, resolve=False) if OmegaConf.is_config(config) else config
    if not isinstance(data, dict):
        return
    pipeline = (data.get("method") or {}).get("pipeline")
    if pipeline:
        check_name(pipeline, kind="method", source=source)
    for target in _targets(data):
        check_name(target, kind="target", source=source)
