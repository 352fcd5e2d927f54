"""Load a Stable Diffusion pipeline from a hub id, a local folder or the embedded checkpoint.

docs/design.md §5.1 "Extract": ``use_safetensors=True`` always (weights are never unpickled), explicit
device and dtype, no safety checker, and an error that names the id or path and says what to do
when the weights are missing or the hub cannot be reached.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from diffparts import REPO_ROOT

#: The embedded toy checkpoint (docs/design.md §4 "The embedded default"), trained by ``diffparts train-toy``.
DEFAULT_MODEL = REPO_ROOT / "data" / "models" / "diffparts-toy-birds"

# A hub id: "name" or "owner/name" (letters, digits, - _ .), as huggingface_hub validates them.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Components whose folders hold weights in a diffusers Stable Diffusion folder.
_WEIGHT_COMPONENTS = ("unet", "vae", "text_encoder")
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def _dtype_argument() -> str:
    """``dtype`` for diffusers versions that renamed it, else the older ``torch_dtype``."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_folder(path: Path) -> None:
    """Raise FileNotFoundError / ValueError if ``path`` is not a loadable safetensors SD folder."""
    if not path.is_dir():
        raise FileNotFoundError(f"model path {str(path)!r} is not a folder; pass a diffusers Stable Diffusion folder")
    index = path / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"model folder {str(path)!r} has no model_index.json; it is not a diffusers pipeline folder "
            "(save one with StableDiffusionPipeline.save_pretrained(..., safe_serialization=True))"
        )
    try:
        components = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model folder {str(path)!r}: model_index.json is not valid JSON ({err})") from err
    for name in _WEIGHT_COMPONENTS:
        if name not in components:
            continue
        folder = path / name
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {str(path)!r} lacks its {name!r} subfolder (listed in model_index.json)")
        files = [p.name for p in folder.iterdir() if p.is_file()]
        if any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in files):
            continue
        pickled = sorted(f for f in files if f.endswith(_PICKLE_SUFFIXES))
        if pickled:
            raise ValueError(
                f"model folder {str(path)!r}: {name}/ has only pickle weights {pickled}, and diffparts never "
                "unpickles weights; convert them once with StableDiffusionPipeline.from_pretrained(path)"
                ".save_pretrained(new_path, safe_serialization=True) in a trusted environment"
            )
        raise FileNotFoundError(f"model folder {str(path)!r}: {name}/ has no weights (*.safetensors)")


def _resolve(model: str | Path | None) -> tuple[str | Path, bool]:
    """(what to pass to from_pretrained, whether it is a local folder)."""
    if model is None:
        if not DEFAULT_MODEL.exists():
            raise FileNotFoundError(
                f"the embedded toy checkpoint {str(DEFAULT_MODEL)!r} does not exist yet; "
                "train it with `diffparts train-toy`, or pass a model id or folder"
            )
        return DEFAULT_MODEL, True
    if isinstance(model, Path):
        return model.expanduser(), True
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a hub id, a folder path or None, got {model!r}")
    path = Path(model).expanduser()
    if path.exists():
        return path, True
    if _HUB_ID.match(model) and not model.startswith("."):
        return model, False
    raise FileNotFoundError(f"model folder {model!r} does not exist (and it is not a hub id of the form owner/name)")


def load_pipeline(model: str | Path | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A ``StableDiffusionPipeline`` for ``model`` on ``device`` in ``dtype``.

    ``model``: a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``), a local diffusers
    folder, or None for :data:`DEFAULT_MODEL`. Safetensors weights only; no safety checker.
    Local folders, and hub ids while ``HF_HUB_OFFLINE`` is set, load with
    ``local_files_only=True`` (hub ids then come from the local cache).
    Raises FileNotFoundError (nothing to load: missing folder, files or cache entry, hub
    unreachable) or ValueError (bad argument, pickle-only weights), each naming the model.
    """
    from diffusers import StableDiffusionPipeline

    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype (torch.float32, torch.float16, ...), got {dtype!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device") from err

    source, local = _resolve(model)
    if local:
        _check_folder(Path(source))
    offline = _hub_offline()
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            source,
            use_safetensors=True,
            **{_dtype_argument(): dtype},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=local or offline,
        )
    except Exception as err:  # OSError, huggingface_hub's offline / HTTP / connection errors
        text = str(err)
        if local:
            raise ValueError(f"could not load the model folder {str(source)!r}: {text}") from err
        if "safetensors" in text.lower():
            raise ValueError(
                f"hub model {source!r} has no safetensors weights and diffparts never unpickles weights; "
                f"use a revision or copy of it saved with safe_serialization=True ({text})"
            ) from err
        where = (
            "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
            if offline
            else "the hub could not be reached or has no such model"
        )
        raise FileNotFoundError(
            f"could not load hub model {source!r}: {where}. Download it where the hub is reachable "
            f"(`huggingface-cli download {source}`) into the cache, or pass a local diffusers folder ({text})"
        ) from err
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
