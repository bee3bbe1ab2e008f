"""In-context learning baseline (docs/methods.md §2): packing, backends and the pipeline."""

from __future__ import annotations

from baselines.icl.pipeline import pipeline

__all__ = ["pipeline"]
