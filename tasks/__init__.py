"""Prefect layer: see docs/design.md §3 "Layers"."""
