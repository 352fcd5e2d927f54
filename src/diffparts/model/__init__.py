"""Diffusion models: building (``build``), loading (``load``), attention capture (``capture``)
and extraction of aggregated attention from images (``extract``).

Submodules import torch and diffusers; this package imports them only when a name is used.
"""

_EXPORTS = {
    "load_pipeline": "diffparts.model.load",
    "DEFAULT_MODEL": "diffparts.model.load",
    "AttentionCapture": "diffparts.model.capture",
    "CaptureConfig": "diffparts.model.extract",
    "AttentionResult": "diffparts.model.extract",
    "extract_attention": "diffparts.model.extract",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffparts.model' has no attribute {name!r}")
