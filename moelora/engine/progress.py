"""How far the job in this process got: the last optimiser step the shared loop finished.

Read when a job is stopped (SIGTERM, SIGINT: moelora.harness.interrupt) to record the step it
reached; written by moelora.engine.train after every optimiser step.
"""

from __future__ import annotations

_state: dict[str, int | None] = {"step": None}


def reached(step: int | None) -> None:
    """Record that optimiser step ``step`` finished (None: no training in progress)."""
    _state["step"] = step


def current_step() -> int | None:
    """The last finished optimiser step of the training in progress, or None."""
    return _state["step"]
