"""Run directory names: Hydra's ``override_dirname``, made safe to be one folder name.

``conf/hydra/default.yaml`` names every job
``<output_dir>/<experiment>/<method>/${moelora.dirname:...}/seed=<seed>``. The resolver builds
the same ``k=v,k=v`` text as Hydra's ``hydra.job.override_dirname`` (same exclusions, same
order), with these changes:

* a value that contains ``/`` (a path such as ``model.path=/models/Qwen2-7B`` or a URL such as
  ``method.icl.openai.base_url=http://host:8000/v1``) becomes a short tag, its last path
  component (for a URL, its host) plus 8 hex digits of the SHA-256 of the absolute path (the
  URL): ``model.path=Qwen2-7B-1a2b3c4d``. Different models or datasets never share a folder,
  and a name never contains ``/`` (no nested folders);
* the value of a credential-like key (moelora.utils.redaction) is replaced by ``REDACTED``;
  a URL's userinfo and secret-like query parameters never reach the tag (``redact_value``);
* a name longer than 240 characters keeps its first overrides and ends in
  ``+<n>more-<8 hex digits>`` (file systems refuse names over 255 bytes);
* nothing else changes, so the defaults keep ``outputs/<experiment>/<method>/<overrides>/
  seed=<seed>/`` exactly.

The resolver must be registered before ``@hydra.main`` runs (``run.py`` calls
:func:`register_resolvers`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from moelora.utils.redaction import is_secret_key, redact_value, split_override

RESOLVER = "moelora.dirname"
REDACTED = "REDACTED"
MAX_NAME = 240  # characters of one folder name (file systems allow 255 bytes)


def path_tag(value: str) -> str:
    """``/models/Qwen2-7B`` → ``Qwen2-7B-<8 hex>``; ``http://h:8000/v1`` → ``h:8000-<8 hex>``.

    The digest is taken over the absolute path (relative paths are read from the current
    directory), so ``./x`` and ``$PWD/x`` get the same tag."""
    text = redact_value(str(value).strip().strip("'\""))  # no userinfo, token, key, ...
    url = urlsplit(text)
    if url.scheme and url.netloc:
        name, basis = url.netloc.rpartition("@")[2], text
    elif text[:1] in "[{":
        name, basis = "value", text
    else:
        basis = os.path.abspath(os.path.expanduser(text))
        name = os.path.basename(basis.split("?")[0].rstrip("/")) or "root"
    name = re.sub(r"[^\w.:+@-]", "_", name)
    return f"{name}-{hashlib.sha256(basis.encode('utf-8')).hexdigest()[:8]}"


def safe_item(item: str) -> str:
    """One override as it appears in a run directory name (see the module docstring)."""
    key, value = split_override(item)
    if "=" not in str(item):
        return str(item)
    if value and is_secret_key(key):
        return f"{key}={REDACTED}"
    if "/" in value or os.sep in value:
        return f"{key}={path_tag(value)}"
    return f"{key}={redact_value(value)}"


def run_dirname(overrides: Sequence[str], settings: Any) -> str:
    """The ``override_dirname`` of ``overrides`` under Hydra's ``job.config.override_dirname``
    settings (``exclude_keys``, ``item_sep``, ``kv_sep``), with safe values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    exclude = {str(k) for k in settings.get("exclude_keys") or []}
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    lines = sorted(o.input_line for o in parsed if o.key_or_group not in exclude)
    sep = str(settings.get("item_sep", ","))
    items = [safe_item(line).replace("=", str(settings.get("kv_sep", "="))) for line in lines]
    return _fit(items, sep)


def _fit(items: list[str], sep: str) -> str:
    """Join ``items``; a name over ``MAX_NAME`` characters keeps its first whole items and
    ends in ``+<n>more-<8 hex digits of the full name>`` (file systems refuse > 255 bytes)."""
    text = sep.join(items)
    if len(text.encode("utf-8")) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    kept: list[str] = []
    for item in items:
        if len(sep.join([*kept, item]).encode("utf-8")) > MAX_NAME - 24:
            break
        kept.append(item)
    return sep.join([*kept, f"+{len(items) - len(kept)}more-{digest}"])


def register_resolvers() -> None:
    """Register ``${moelora.dirname:<overrides>,<override_dirname settings>}`` (idempotent)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(RESOLVER, run_dirname, replace=True)
