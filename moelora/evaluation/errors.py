"""The one exception type of the scorer."""

from __future__ import annotations


class ScoringError(ValueError):
    """An input problem: a missing, extra or duplicate sample, an unknown task or mode, a
    malformed record or structured answer. The message says what is wrong and how to fix it."""
