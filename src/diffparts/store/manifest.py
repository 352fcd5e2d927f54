"""The store's manifest and its single-writer set-up (docs/design.md §6 "The store").

The manifest lives in the attributes of each version's root group::

    manifest = {
        "code_version": "0.1.0+g<commit>",     # code that created the version
        "last_code_version": "...",            # code of the latest set-up
        "model": "data/models/...",            # the id or path the user gave
        "model_hash": "sha256:...",            # content of the weights and configs
        "config_hash": "sha256:...",           # hash of "config" below
        "config": {...},                       # capture settings + storage precision
        "precision": "float16",
        "compute": {"device": "cpu", "dtype": "float32", "batch_size": 4},   # see below
        "images": [{"image_id", "name", "sha256", "size", "mtime_ns"}, ...],   # size, mtime_ns: the
                                               # file's stat when hashed (since issue 20; reused if equal)
        "corpus": {"path": "/abs/corpus", "kind": "cub" | "folder"},   # where the images came from
    }

The ``corpus`` entry is not part of the identity: later stages (parts, evaluation, transfer)
read the boxes, keypoints and classes from it when not told another corpus, and a corpus that
moved (same images, new path) only updates it.

``compute`` holds what else changes the stored values (issue 12, item 8): the device kind
(``cuda:1`` counts as ``cuda``), the model dtype (float16 on a GPU and float32 on a CPU give
different attention) and the batch size (a batch is computed with the same members, and batched
float arithmetic can differ in the last bit with the batch's make-up). A manifest written before
it was recorded, or by a caller that gives none, counts as ``COMPUTE_DEFAULTS`` (the CLI's and the
flow's defaults), so a plain re-run of an old store goes on.

A store written with one model, config or compute never takes writes from another: ``prepare_store``
raises ``StoreMismatchError`` unless told to start a new version, which becomes the group
``versions/<n>`` of the same store (the root's ``current_version`` attribute points at it, so
``open_store(path)`` and every later stage use it; ``open_store(path, version=1)`` reads the old).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from diffparts.store.hashes import known_hashes
from diffparts.store.layout import (
    CURRENT_VERSION_ATTR,
    FAILURES_GROUP,
    IMAGES_PENDING_ATTR,
    MISSING_STORE_ERRORS,
    VERSIONS_GROUP,
    _as_store,
    create_stage_array,
    ensure_stage,
    grow_image_axis,
    image_table,
    listed_images,
    version_group,
    version_number,
)
from diffparts.store.lock import LockConfig, setup_lock

#: The compute settings of a manifest without a ``compute`` entry (stores written before it
#: was recorded): the defaults of ``diffparts extract`` and the extract flow.
COMPUTE_DEFAULTS = {"device": "cpu", "dtype": "float32", "batch_size": 4}
#: Model dtypes a run may use.
DTYPES = ("float32", "float16", "bfloat16")

#: Files of a model folder that do not change what the model computes.
_UNHASHED_SUFFIXES = (".md", ".lock")


class StoreMismatchError(ValueError):
    """The store was written with another model, config or compute (start a new version to go on)."""


def compute_settings(device: str = "cpu", dtype: str = "float32", batch_size: int = 4) -> dict:
    """The manifest's ``compute`` entry: device kind (``cuda:1`` -> ``cuda``), dtype, batch size."""
    kind = str(device).split(":", 1)[0].strip().lower()
    if not kind:
        raise ValueError(f"device must name a torch device (cpu, cuda, cuda:1, mps), got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return {"device": kind, "dtype": str(dtype), "batch_size": int(batch_size)}


def manifest_compute(entry: dict) -> dict:
    """The compute settings of a manifest or identity (``COMPUTE_DEFAULTS`` for what it lacks)."""
    return {**COMPUTE_DEFAULTS, **dict(entry.get("compute") or {})}


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def config_hash(config: dict) -> str:
    """``sha256:<hex>`` of a config dict's canonical JSON (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def model_hash(model: str | Path) -> str:
    """A hash of what a model computes: its weight and config files, not its path.

    A local folder (or file) hashes the content of every file except docs (``*.md``), with
    their relative paths; in a diffusers folder (one with ``model_index.json``) only that file
    and the component folders count, so a model card, sample pictures or evaluation JSON beside
    them do not make a new model. A hub id resolves to its cached snapshot's commit (offline)
    or asks the hub for the current commit. Raises ``ValueError`` naming the model if neither
    works.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return "sha256:" + file_sha256(path)
    if path.is_dir():
        h = hashlib.sha256()
        diffusers_layout = (path / "model_index.json").is_file()
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not p.name.endswith(_UNHASHED_SUFFIXES)
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
            and (not diffusers_layout or p.parent != path or p.name == "model_index.json")
        )
        if not files:
            raise ValueError(f"model folder {path} is empty")
        for p in files:
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            h.update(file_sha256(p).encode())
        return "sha256:" + h.hexdigest()
    return _hub_revision(str(model))


def _hub_revision(model_id: str) -> str:
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(model_id, local_files_only=True))
        return f"hf:{model_id}@{snapshot.name}"
    except Exception:  # not cached: ask the hub unless offline
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ValueError(
            f"model {model_id!r} is not a local path and not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set: give a local diffusers folder or download it first"
        )
    try:
        from huggingface_hub import HfApi

        return f"hf:{model_id}@{HfApi().model_info(model_id).sha}"
    except Exception as err:
        raise ValueError(
            f"model {model_id!r} is not a local path and the hub could not resolve it ({err})"
        ) from err


def code_version() -> str:
    """``<package version>+g<short commit>`` (commit omitted outside a git checkout)."""
    from diffparts import REPO_ROOT, __version__

    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}" if sha else __version__


def build_manifest(model: str, model_hash: str, config: dict, compute: dict | None = None) -> dict:
    """The identity part of a manifest (images are added by ``prepare_store``).

    ``compute``: ``compute_settings(...)`` of the run; None records none (``COMPUTE_DEFAULTS``
    then stand for it, as for stores written before it was recorded).
    """
    version = code_version()
    return {
        **({"compute": dict(compute)} if compute is not None else {}),
        "code_version": version,
        "last_code_version": version,
        "model": str(model),
        "model_hash": model_hash,
        "config_hash": config_hash(config),
        "config": config,
        "precision": config.get("precision"),
        "images": [],
    }


@dataclass
class PreparedStore:
    """What ``prepare_store`` did: where to write and which store index each image has."""

    path: str  # the store as given (local path or URL)
    version: int  # 1 = store root, n = versions/<n>
    indices: list[int]  # store image index of each given image, in the given order
    added: list[int] = field(default_factory=list)  # indices appended by this set-up
    changed: list[int] = field(default_factory=list)  # indices whose content hash changed


def describe_corpus(path: str | Path) -> dict:
    """The manifest's ``corpus`` entry: absolute path and reader kind (``cub`` or ``folder``)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise ValueError(f"corpus {path} is not a folder")
    return {"path": str(path), "kind": "cub" if (path / "images.txt").is_file() else "folder"}


def manifest_corpus(root: zarr.Group) -> str | None:
    """The corpus path the manifest records (``corpus.path``; a plain string is read too), or None."""
    entry = manifest(root).get("corpus")
    if isinstance(entry, dict):
        return entry.get("path") or None
    return str(entry) if entry else None


def manifest(root: zarr.Group) -> dict:
    """The manifest of a version group ({} if none)."""
    return dict(root.attrs.get("manifest", {}))


def prepare_store(
    path: str | Path,
    images: Sequence[dict],
    identity: dict,
    stages: Sequence[str] = ("attention",),
    new_version: bool = False,
    corpus: dict | None = None,
    lock: LockConfig | None = None,
) -> PreparedStore:
    """Create or extend a store before the fan-out (the single writer; docs/design.md §6 "The store").

    The whole set-up runs under the store's set-up lock (``store.lock.setup_lock``; ``lock``:
    when a lock is stale), so concurrent runs on one local store take turns and the second sees
    the first's images and manifest.

    1. Create the store with ``identity`` (``build_manifest``) or check that the current
       version's model hash, config hash and compute settings (``manifest_compute``: a manifest
       without them counts as ``COMPUTE_DEFAULTS``) equal it; on a mismatch raise
       ``StoreMismatchError``, or with ``new_version`` start ``versions/<n>``.
    2. Match ``images`` (``{"image_id", "name", "sha256"}``) to stored images by name; append
       new ones (growing every image axis), update changed ids, and for images whose content
       changed clear the done markers and failures of every stage so they are redone.
    3. Create each stage's ``done`` and ``failures`` arrays; write the manifest, with
       ``corpus`` (``describe_corpus``) as its ``corpus`` entry when given (not identity: a
       moved corpus updates it, it never refuses the store).
    """
    with setup_lock(path, lock):
        return _prepare_store(path, images, identity, stages, new_version, corpus)


def _prepare_store(path, images, identity, stages, new_version, corpus) -> PreparedStore:
    """``prepare_store``'s steps, with the set-up lock held."""
    # 1. Open or create, check the identity (docs/design.md §6 "The store": never a silent overwrite).
    store = _as_store(path)
    try:
        top = zarr.open_group(store, mode="r+")
    except MISSING_STORE_ERRORS:
        top = zarr.open_group(store, mode="w-")
        top.attrs["manifest"] = {**identity, "images": []}
        top.attrs[CURRENT_VERSION_ATTR] = ""
    root = version_group(top)
    old = manifest(root)
    if old and (old.get("model_hash"), old.get("config_hash"), manifest_compute(old)) != (
        identity["model_hash"],
        identity["config_hash"],
        manifest_compute(identity),
    ):
        if not new_version:
            raise StoreMismatchError(_mismatch_message(path, version_number(root), old, identity))
        number = _next_version(top)
        root = top.require_group(f"{VERSIONS_GROUP}/{number}")
        root.attrs["manifest"] = {**identity, "images": []}
        top.attrs[CURRENT_VERSION_ATTR] = root.path
    elif not old:
        root.attrs["manifest"] = {**identity, "images": []}

    # 2. Images: match by name (folder-reader ids can shift when files are added).
    for key, dtype in (("image_id", "int64"), ("name", str), ("sha256", str)):
        create_stage_array(root.require_group("images"), key, (0,), dtype, ("image",))
    # the manifest's list where it describes the arrays (no set-up cut short since), else the arrays
    listed = listed_images(root)
    if listed is not None:
        names = [str(r["name"]) for r in listed]
        stored_ids = [int(r["image_id"]) for r in listed]
        stored_sha = [str(r["sha256"]) for r in listed]
    else:
        names = [row["name"] for row in image_table(root, from_arrays=True)]
        stored_sha = [str(v) for v in root["images/sha256"][:]] if names else []
        stored_ids = [int(v) for v in root["images/image_id"][:]] if names else []
    table = {name: k for k, name in enumerate(names)}
    n_old = len(table)
    indices, added, changed = [], [], []
    new_rows: list[dict] = []
    for img in images:
        name = str(img["name"])
        if name in table:
            k = table[name]
            indices.append(k)
            if str(stored_sha[k]) != str(img["sha256"]):
                changed.append(k)
            if stored_ids[k] != int(img["image_id"]):
                _images_pending(root)
                root["images/image_id"][k] = stored_ids[k] = int(img["image_id"])
        else:
            k = n_old + len(new_rows)
            table[name] = k
            indices.append(k)
            added.append(k)
            new_rows.append(img)
    if new_rows:
        _images_pending(root)
        grow_image_axis(root, n_old + len(new_rows))
        sl = slice(n_old, n_old + len(new_rows))
        root["images/image_id"][sl] = np.array([int(r["image_id"]) for r in new_rows], "int64")
        root["images/name"][sl] = np.array([str(r["name"]) for r in new_rows], dtype=str)
        root["images/sha256"][sl] = np.array([str(r["sha256"]) for r in new_rows], dtype=str)
        names += [str(r["name"]) for r in new_rows]
        stored_ids += [int(r["image_id"]) for r in new_rows]
        stored_sha += [str(r["sha256"]) for r in new_rows]

    # 3. Stage markers (existing stages too, so a changed image is redone everywhere).
    for stage in stages:
        ensure_stage(root, stage)
    by_index = {table[str(img["name"])]: img for img in images}
    for k in changed:
        _images_pending(root)
        _reset_image(root, k, by_index[k])
        stored_sha[k] = str(by_index[k]["sha256"])
    rows = [{"image_id": i, "name": name, "index": k} for k, (i, name) in enumerate(zip(stored_ids, names))]
    sha = stored_sha
    # each image's file stat beside its hash (from this call, else the last manifest), kept only
    # where it belongs to the stored hash: the next run reuses the hash of an unchanged file
    stats = {**known_hashes(root), **{str(img["name"]): img for img in images if "size" in img and "mtime_ns" in img}}

    def entry(r: dict) -> dict:
        row = {"image_id": r["image_id"], "name": r["name"], "sha256": str(sha[r["index"]])}
        st = stats.get(r["name"])
        if st is not None and str(st.get("sha256")) == row["sha256"] and row["sha256"]:
            row.update({"size": int(st["size"]), "mtime_ns": int(st["mtime_ns"])})
        return row

    root.attrs["manifest"] = {
        **manifest(root),
        **({"corpus": dict(corpus)} if corpus else {}),
        "last_code_version": identity.get("last_code_version", identity.get("code_version")),
        "images": [entry(r) for r in rows],
    }
    if root.attrs.get(IMAGES_PENDING_ATTR):            # the list matches the arrays again
        root.attrs[IMAGES_PENDING_ATTR] = False
    return PreparedStore(str(path), version_number(root), indices, added, changed)


def _images_pending(root: zarr.Group) -> None:
    """Mark (once) that ``images/`` is about to change, so readers take the arrays until the
    manifest written at the end of the set-up lists them again."""
    if not root.attrs.get(IMAGES_PENDING_ATTR):
        root.attrs[IMAGES_PENDING_ATTR] = True


def _reset_image(root: zarr.Group, index: int, img: dict) -> None:
    """An image's content changed: every stage's marker and failure cleared, then the new hash.
    The hash is written last: a run killed in between still sees the image as changed and clears
    it again, where the other order would leave the old work marked done for the new content."""
    for name, group in root.groups():
        if name == VERSIONS_GROUP:
            continue
        if "done" in group:
            group["done"][index] = False
    if FAILURES_GROUP in root:
        for _, arr in root[FAILURES_GROUP].arrays():
            arr[index] = ""
    root["images/sha256"][index] = str(img["sha256"])


def _next_version(top: zarr.Group) -> int:
    if VERSIONS_GROUP not in top:
        return 2
    numbers = [int(k) for k in top[VERSIONS_GROUP].group_keys() if k.isdigit()]
    return max(numbers, default=1) + 1


def _flatten(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mismatch_message(path, version: int, old: dict, new: dict) -> str:
    what = []
    if old.get("model_hash") != new["model_hash"]:
        what.append(
            f"model {old.get('model')!r} ({old.get('model_hash')}) -> "
            f"{new['model']!r} ({new['model_hash']})"
        )
    if old.get("config_hash") != new["config_hash"]:
        a, b = _flatten(old.get("config", {})), _flatten(new["config"])
        changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        what.append("config changed: " + ", ".join(changed))
    a, b = manifest_compute(old), manifest_compute(new)
    hint = ""
    if a != b:
        changed = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        what.append("compute changed: " + ", ".join(changed))
        if "compute" not in old:
            hint = (
                " The store was written before device, dtype and batch size were recorded; they are "
                f"taken as the defaults {a} (to extend it as written, run with --device {a['device']} "
                f"--dtype {a['dtype']} --batch-size {a['batch_size']})."
            )
    return (
        f"store {path} (version {version}) was written with another model, config or compute: "
        + "; ".join(what)
        + ". Refusing to mix them." + hint + " Pass new_version=True (CLI: --new-version) to start a new "
        "version group in the same store, or choose another store path."
    )
