"""Learned part embeddings on disk and in the store (issue 10 item 3, docs/design.md §6 "The store").

Files, in diffparts' ``<store>.<stage>/`` convention beside a local store::

    <store>.embeddings/<loss>/part-<k>.safetensors   {"<part-k>": (vector, channel) float32}
    <store>.embeddings/<loss>/part-<k>.json          its index row, written with the file (so the
                                                      row of a token finished by a run that crashed
                                                      before the stage's end is not lost)
    <store>.embeddings/<loss>/index.json             one row per category: token, category, loss,
                                                      steps, final_loss, model_hash, file, config
    <store>.embeddings/<loss>/checkpoints/            resumable training state (train.py)

Each ``.safetensors`` is diffusers' textual-inversion format: ``pipe.load_textual_inversion(
path, token="<part-k>")`` loads it into a fresh pipeline (a multi-vector token becomes
``<part-k>, <part-k>_1, ...`` and prompts naming ``<part-k>`` are expanded by the pipeline).

The store's ``embeddings/`` group (``category`` = the K + 1 part categories, background
included, as ``parts/prevalence``; the whole store: docs/store.md)::

    embeddings/held_out            (image,) bool     never trained on (attrs: rule)
    embeddings/<loss>/vectors      (category, vector, channel) float32   row 0 (background) unused
    embeddings/<loss>/final_loss   (category,) float32   mean of the last 10 step losses
    embeddings/<loss>/steps        (category,) int32
    embeddings/<loss>/done         (category,) bool  written after the three above
    attrs (per loss): tokens, model_hash, config, parts_fingerprint, num_vectors, n_categories

One chunk per category, so tasks training different categories never share a chunk. Groups
written before issue 13 name the axis ``part``; they are read and resumed as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from diffparts.inversion.data import STAGE
from diffparts.inversion.tokens import part_token
from diffparts.store.markers import read_image_vector


def embeddings_dir(store: str | Path, loss: str, out_dir: str | Path | None = None) -> Path:
    """``out_dir/<loss>``, by default ``<store>.embeddings/<loss>`` (local stores only)."""
    if out_dir is None:
        text = str(store)
        if "://" in text and not text.startswith("file://"):
            raise ValueError(f"store {text!r} is not a local path: pass out_dir for the embedding files")
        out_dir = f"{text.removeprefix('file://').rstrip('/')}.embeddings"
    return Path(out_dir) / loss


def embedding_file(directory: Path, category: int) -> Path:
    return Path(directory) / f"part-{int(category)}.safetensors"


def row_file(directory: Path, category: int) -> Path:
    """``part-<k>.json``: the category's ``index.json`` row, written when its file is."""
    return Path(directory) / f"part-{int(category)}.json"


def parts_fingerprint(root) -> str:
    """Hash of the fitted categories (centres): embeddings of other categories are stale."""
    centers = np.ascontiguousarray(np.asarray(root["parts/centers"][:], np.float32))
    return hashlib.sha256(centers.tobytes() + str(centers.shape).encode()).hexdigest()[:16]


def require_parts(root) -> int:
    """K + 1 (categories with background); ValueError naming what is missing otherwise."""
    from diffparts.store import done_mask

    needed = ["parts/labels", "parts/centers", "parts/prevalence"]
    missing = [k for k in needed if k not in root]
    if "parts" not in root or "n_categories" not in root["parts"].attrs:
        missing.insert(0, "parts attrs n_categories")
    if missing:
        raise ValueError(f"the store's parts stage is not done (missing {', '.join(missing)}): run "
                         "`diffparts parts --store STORE` first")
    if not done_mask(root, "parts").any():
        raise ValueError("the store's parts stage labelled no image (parts/done is all False): run "
                         "`diffparts parts --store STORE` first")
    return int(root["parts"].attrs["n_categories"])


def write_held_out(root, held_out: np.ndarray, rule: str) -> None:
    """``embeddings/held_out`` (set-up only). An existing split is kept for the images it has;
    images added since are appended with the new flags."""
    from diffparts.store import create_stage_array

    group = root.require_group(STAGE)
    n = len(held_out)
    existing = group["held_out"] if "held_out" in group else None
    old = np.asarray(read_image_vector(existing), bool) if existing is not None else np.zeros(0, bool)
    arr = create_stage_array(group, "held_out", (n,), bool, ("image",), fill_value=False)
    merged = np.asarray(held_out, bool).copy()
    merged[: len(old)] = old[:n]
    kept = min(len(old), n)                 # unchanged flags are not written again (one chunk each)
    if kept < n:
        arr[kept:] = merged[kept:]
    if arr.attrs.get("rule") != rule:
        arr.attrs["rule"] = rule


def prepare_loss_group(root, loss: str, n_categories: int, num_vectors: int, channels: int,
                       model_hash: str, config: dict) -> dict:
    """Create (or check) ``embeddings/<loss>``; a group made for other categories, another model
    or another config is deleted and redone. Returns {"reset": reason or None, "done": [k...]}."""
    from diffparts.store import reset_if_changed

    group = root.require_group(STAGE)
    wanted = {"parts_fingerprint": parts_fingerprint(root), "model_hash": model_hash, "config": config,
              "num_vectors": int(num_vectors), "n_categories": int(n_categories)}
    reset = reset_if_changed(group, loss, wanted)
    sub = group.require_group(loss)
    shape = (int(n_categories), int(num_vectors), int(channels))
    if "vectors" not in sub:
        sub.create_array("vectors", shape=shape, dtype="float32", chunks=(1, *shape[1:]),
                         dimension_names=("category", "vector", "channel"), fill_value=0.0)
        sub.create_array("final_loss", shape=shape[:1], dtype="float32", chunks=(1,), dimension_names=("category",),
                         fill_value=np.nan)
        sub.create_array("steps", shape=shape[:1], dtype="int32", chunks=(1,), dimension_names=("category",),
                         fill_value=0)
        sub.create_array("done", shape=shape[:1], dtype="bool", chunks=(1,), dimension_names=("category",),
                         fill_value=False)
    sub.attrs.update({**wanted, "tokens": [None] + [part_token(k) for k in range(1, n_categories)]})
    done = [int(k) for k in np.flatnonzero(np.asarray(sub["done"][:], bool))]
    return {"reset": reset, "done": done}


def remove_embedding_files(directory: Path) -> list[str]:
    """Delete this stage's own files in ``directory`` (part files, pictures, index, checkpoints)
    when its categories, model or config changed; nothing else there is touched."""
    directory = Path(directory)
    removed = []
    patterns = ("part-*.safetensors", "part-*.json", "part-*.png", "index.json", "checkpoints/part-*.safetensors",
                "checkpoints/part-*.safetensors.json")
    for pattern in patterns:
        for path in directory.glob(pattern):
            if path.is_file() and not path.is_symlink():
                path.unlink()
                removed.append(path.name)
    return removed


def save_embedding(path: Path, token: str, vectors) -> Path:
    """``{token: (vector, channel) float32}`` as safetensors (diffusers' textual-inversion format)."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = torch.as_tensor(vectors, dtype=torch.float32).reshape(-1, torch.as_tensor(vectors).shape[-1])
    tmp = path.with_name(path.name + ".tmp")
    save_file({token: tensor.contiguous()}, str(tmp))
    tmp.replace(path)
    return path


def record_embedding(root, directory: Path, result, model_hash: str, config) -> dict:
    """Write one trained category: its file and index row, its store rows, then its done marker;
    the index row back (``finish_index`` gathers the rows into ``index.json``)."""
    k = int(result.category)
    path = save_embedding(embedding_file(directory, k), result.token, result.vectors)
    row = {"token": result.token, "category": k, "loss": result.loss, "steps": int(result.steps),
           "final_loss": round(float(result.final_loss), 6), "model_hash": model_hash, "file": path.name,
           "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)}
    tmp = row_file(directory, k).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(row, indent=1))
    tmp.replace(row_file(directory, k))
    sub = root[f"{STAGE}/{result.loss}"]
    sub["vectors"][k] = np.asarray(result.vectors, np.float32)
    sub["final_loss"][k] = np.float32(result.final_loss)
    sub["steps"][k] = np.int32(result.steps)
    sub["done"][k] = True
    return row


def write_index(directory: Path, rows: Sequence[dict]) -> Path:
    """``index.json``: the rows sorted by category (rewritten whole; call from one writer)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.json"
    path.write_text(json.dumps(sorted(rows, key=lambda r: r["category"]), indent=1))
    return path


def read_index(directory: Path) -> list[dict]:
    path = Path(directory) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no embeddings index at {str(path)!r}: train the embeddings first")
    return json.loads(path.read_text())


def load_part_embeddings(pipe, directory: Path, categories: Sequence[int] | None = None) -> list[str]:
    """Load the categories' files into ``pipe`` with diffusers' ``load_textual_inversion``."""
    rows = read_index(directory)
    wanted = None if categories is None else {int(c) for c in categories}
    tokens = []
    for row in rows:
        if wanted is not None and row["category"] not in wanted:
            continue
        pipe.load_textual_inversion(str(Path(directory) / row["file"]), token=row["token"])
        tokens.append(row["token"])
    return tokens
