"""Interrupted jobs say so: SIGTERM and SIGINT mark the job ``status: interrupted``.

While a job runs (moelora.harness.runner.run), SIGTERM raises :class:`JobInterrupted` (a
``KeyboardInterrupt``, as SIGINT raises) in the main thread, so the runner records
``{"status": "interrupted", "interrupted": {"signal", "step"}}`` in results.json before the
process ends, the sweep summary is printed (moelora.harness.hydra_callbacks.SweepSummary), and
``make report`` lists the job apart from one that is still running. A rerun resumes it from its
last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from moelora.engine.progress import current_step


class JobInterrupted(KeyboardInterrupt):
    """The job received SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signal = signal.Signals(signum).name


def _raise(signum: int, frame: Any) -> None:
    raise JobInterrupted(signum)


def sigterm_raises() -> None:
    """From now on SIGTERM raises :class:`JobInterrupted` in the main thread (a sweep's
    process: it then exits through Python, so exit handlers such as the summary run)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)


@contextlib.contextmanager
def raise_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`JobInterrupted` (main thread only; elsewhere
    signals cannot be handled and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_record(error: BaseException) -> dict[str, Any]:
    """The results.json fields of a job stopped by ``error`` (SIGTERM or SIGINT)."""
    name = getattr(error, "signal", "SIGINT")
    step = current_step()
    reached = f"after optimiser step {step}" if step is not None else "before any training step"
    return {
        "status": "interrupted",
        "interrupted": {"signal": name, "step": step, "at": time.time()},
        "error": f"interrupted by {name} {reached}; rerun the same command to resume it from "
        "its last checkpoint",
    }
