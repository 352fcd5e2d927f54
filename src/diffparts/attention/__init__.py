"""Attention arrays after capture: aggregation over resolutions (DiffSeg, docs/design.md §5.1 "Extract")."""

from diffparts.attention.aggregate import (
    WEIGHT_PRESETS,
    aggregate_cross_attention,
    aggregate_self_attention,
    resolution_weights,
)

__all__ = ["WEIGHT_PRESETS", "aggregate_cross_attention", "aggregate_self_attention", "resolution_weights"]
