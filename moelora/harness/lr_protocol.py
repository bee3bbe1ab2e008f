"""Which learning rate each method trains at (``conf/lr_protocol/``).

* ``lr_protocol=shared`` (default, the paper's protocol, docs/methods.md §1.3): every method at
  ``method.optim.lr × trainer.lr_scale``.
* ``lr_protocol=dev``: each method at its own ``trainer.lr_scale``, chosen on the dev split by
  ``analysis.lr_select`` and listed in ``conf/lr_protocol/dev.yaml`` with the settings it was
  chosen under (``chosen_with``). This departs from the paper's equal-lr protocol: at equal lr
  a MOELoRA update moves about N× more slowly than a LoRA one (docs/methods.md §6.1), and a
  compressed schedule shows it (docs/notes/2026-12-02-fine-tuning-lr-peaks.md).

:func:`apply` writes the method's entry into ``trainer.lr_scale`` before the job's identity is
taken (moelora.harness.identity ignores the ``lr_protocol`` node itself), so a job's identity depends
on the lr it trains at and not on the rest of the table: adding a method to the table changes
no finished job. An explicit ``trainer.lr`` still wins, as it does over ``lr_scale``.
:func:`check_trains` refuses to train a method that a non-empty table does not list, rather
than train it silently at the shared lr.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from moelora.harness.schema import ConfigError

PROTOCOL_DIR = "conf/lr_protocol"


def _table(cfg: DictConfig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    node = OmegaConf.select(cfg, "lr_protocol")
    if node is None:
        return "shared", {}, {}
    plain = OmegaConf.to_container(node, resolve=True)
    return (
        str(plain.get("name", "shared")),
        dict(plain.get("lr_scale") or {}),
        dict(plain.get("chosen_with") or {}),
    )


def apply(cfg: DictConfig) -> str | None:
    """Set ``trainer.lr_scale`` from the protocol's table for this method (in place).

    Returns:
        A line saying what was set, or None when the table does not list the method.

    Raises:
        ConfigError: the job differs from the settings the table was chosen under.
    """
    name, table, chosen_with = _table(cfg)
    method = str(OmegaConf.select(cfg, "method.name"))
    if method not in table:
        return None
    differs = [
        f"{key}={OmegaConf.select(cfg, key)!r} (chosen with {value!r})"
        for key, value in chosen_with.items()
        if OmegaConf.select(cfg, key) != value
    ]
    if differs:
        raise ConfigError(
            f"lr_protocol={name}: {PROTOCOL_DIR}/{name}.yaml was chosen under other settings than "
            f"this job's: {'; '.join(differs)}. Its lr does not carry over; choose one for these "
            "settings on the dev split (analysis/lr_select.py), or use lr_protocol=shared"
        )
    scale = table[method]  # as written (15, not 15.0): the identity of
    cfg.trainer.lr_scale = scale  # `trainer.lr_scale=15` on the command line
    lr = OmegaConf.select(cfg, "trainer.lr")
    if lr is not None:
        return (
            f"lr_protocol={name}: {method} is listed at lr_scale {scale:g}, but "
            f"trainer.lr={lr} is set and wins"
        )
    return (
        f"lr_protocol={name}: {method} trains at trainer.lr_scale={scale:g} "
        f"(lr {float(scale) * float(cfg.method.optim.lr):g}, chosen on the dev split)"
    )


def check_trains(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` when a non-empty table does not list the training method."""
    name, table, _ = _table(cfg)
    method = str(OmegaConf.select(cfg, "method.name"))
    if table and method not in table and OmegaConf.select(cfg, "trainer.lr") is None:
        raise ConfigError(
            f"lr_protocol={name}: {PROTOCOL_DIR}/{name}.yaml lists no lr for method {method} "
            f"(it lists {', '.join(sorted(table))}), and it is not trained at the shared lr "
            "unasked. Run its dev sweep, add its line from analysis.lr_select "
            f"(`{method}: <lr_scale>`), or run it with lr_protocol=shared"
        )
