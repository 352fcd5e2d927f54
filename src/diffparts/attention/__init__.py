"""Attention arrays after capture: aggregation over resolutions (DiffSeg, DESIGN.md 5.1)."""

from diffparts.attention.aggregate import (
    WEIGHT_PRESETS,
    aggregate_cross_attention,
    aggregate_self_attention,
    resolution_weights,
)

__all__ = ["WEIGHT_PRESETS", "aggregate_cross_attention", "aggregate_self_attention", "resolution_weights"]
