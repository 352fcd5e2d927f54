"""diffparts: unsupervised part discovery and correspondence from diffusion attention.

The library: arrays in, arrays out. It never imports Prefect; the Prefect layer lives in the
top-level ``flows`` and ``tasks`` packages (docs/design.md §3 "Layers").
"""

from pathlib import Path

__version__ = "0.1.0"

#: Root of the source checkout (the embedded checkpoint and samples live under ``data/``).
REPO_ROOT = Path(__file__).resolve().parents[2]
