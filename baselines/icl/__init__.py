"""In-context learning baseline (methods.md §2): packing, backends and the pipeline."""

from __future__ import annotations

from baselines.icl.pipeline import pipeline

__all__ = ["pipeline"]
