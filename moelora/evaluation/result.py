"""One task's score: the main metric, its detail metrics, and why it is undefined (if it is)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskResult:
    score: float | None
    detail: dict[str, float | None] = field(default_factory=dict)
    reason: str | None = None  # set exactly when score is None
