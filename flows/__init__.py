"""Prefect layer: see DESIGN.md section 3."""
