"""The store's layout: opening, versions, per-image arrays, completion markers, failures.

docs/design.md §6 "The store"; the whole schema, every group and array, is docs/store.md. One Zarr v3
store per run; one group per stage (``attention/``, ``segments/``, ``parts/`` ...); every array
has ``dimension_names`` from the shape vocabulary and, when it has an ``image`` axis, that axis
first with chunks of one image, so that each task writes only whole chunks of its own images
and two writers never share a chunk. Within a group one dimension name has one length, and no
array is named like a dimension, so ``xarray.open_zarr(store, group=...)`` and
``xarray.open_datatree(store, engine="zarr")`` read every group.

```
<store>/                      attrs: manifest {...}, current_version
  images/image_id   (image,) int64       images/name (image,) str     images/sha256 (image,) str
  <stage>/done      (image,) bool        chunk 1, written AFTER the stage's data
  failures/<stage>  (image,) str         "" = no failure, else the reason (chunk 1: no races)
  versions/<n>/     the same layout again for version n >= 2 (a changed model or config)
```

Everything that changes the shape of an array (creating it, growing the image axis) happens in
one single-writer set-up step before the fan-out; the per-image writes afterwards only fill
chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from diffparts.store.markers import read_image_vector

#: Root attribute naming the group (relative to the root) of the version in use ("" = root).
CURRENT_VERSION_ATTR = "current_version"
#: Group holding versions 2, 3, ... of a store whose model or config changed (docs/design.md §6 "The store").
VERSIONS_GROUP = "versions"
#: Group holding one failure array per stage.
FAILURES_GROUP = "failures"
#: Attribute of a version group set while a set-up is changing ``images/`` (the manifest's image
#: list may lag the arrays until the set-up ends): readers then take the arrays.
IMAGES_PENDING_ATTR = "images_pending"


def listed_images(root: zarr.Group) -> list[dict] | None:
    """The manifest's image list when it describes ``images/`` exactly (same length, no set-up
    in progress, every row with image_id, name and sha256), else None: read the arrays."""
    if "images/image_id" not in root or root.attrs.get(IMAGES_PENDING_ATTR):
        return None
    listed = root.attrs.get("manifest", {}).get("images") or []
    if len(listed) != int(root["images/image_id"].shape[0]):
        return None
    if not all("name" in r and "image_id" in r and "sha256" in r for r in listed):
        return None
    return listed


try:  # zarr >= 3.1 raises this (not a FileNotFoundError) for a missing group on fsspec stores
    from zarr.errors import GroupNotFoundError as _GroupNotFound
except ImportError:  # pragma: no cover
    _GroupNotFound = FileNotFoundError

#: What opening a store that does not exist raises.
MISSING_STORE_ERRORS = (FileNotFoundError, _GroupNotFound)


def _as_store(path: str | Path) -> str:
    """A zarr store argument: a local path (``file://`` URLs become one) or an fsspec URL."""
    path = str(path)
    return path[len("file://") :] if path.startswith("file://") else path


def open_store(path: str | Path, mode: str = "r", version: int | None = None) -> zarr.Group:
    """Open a store and return the group of its current version (or of ``version``).

    ``mode`` is ``"r"`` (read only) or ``"r+"`` (read and write existing arrays). The returned
    group is the "root" every other helper takes: ``root["attention/self"]`` and so on.
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    try:
        top = zarr.open_group(_as_store(path), mode=mode)
    except MISSING_STORE_ERRORS as err:
        raise FileNotFoundError(f"no diffparts store at {path}") from err
    return version_group(top, version)


def version_group(top: zarr.Group, version: int | None = None) -> zarr.Group:
    """The group of ``version`` (1 = the store root) or of the current version if None."""
    if version is None:
        rel = str(top.attrs.get(CURRENT_VERSION_ATTR, ""))
    elif version == 1:
        rel = ""
    elif version >= 2:
        rel = f"{VERSIONS_GROUP}/{version}"
    else:
        raise ValueError(f"version must be >= 1, got {version}")
    if not rel:
        return top
    if rel not in top:
        raise ValueError(f"store {top.store} has no version group {rel!r}")
    return top[rel]


def version_number(root: zarr.Group) -> int:
    """1 for the store root, n for ``versions/<n>``."""
    name = root.path.rsplit("/", 1)[-1]
    return int(name) if root.path.startswith(f"{VERSIONS_GROUP}/") else 1


def create_stage_array(
    group: zarr.Group,
    name: str,
    shape: Sequence[int],
    dtype: Any,
    dimension_names: Sequence[str],
    chunks: Sequence[int] | None = None,
    fill_value: Any = None,
    attributes: dict | None = None,
    earlier_dimension_names: Sequence[str] | None = None,
) -> zarr.Array:
    """Create (or reopen, if it already matches) an array of a stage group.

    ``chunks`` default to one image per chunk along a leading ``image`` axis and the whole
    extent elsewhere. Reopening an existing array checks its dtype, dimension names and
    trailing shape and grows its image axis to ``shape[0]`` if needed; anything else raises.
    ``earlier_dimension_names``: the names an older store wrote for this array (before a
    rename); such an array is reopened as it is (readers index by position, not by name).
    Call this only from the single-writer set-up step, never from fanned-out tasks.
    """
    shape = tuple(int(s) for s in shape)
    dimension_names = tuple(dimension_names)
    accepted = {dimension_names, tuple(earlier_dimension_names or dimension_names)}
    if len(dimension_names) != len(shape):
        raise ValueError(f"dimension_names {dimension_names} do not match shape {shape}")
    if chunks is None:
        chunks = tuple(1 if d == "image" else max(s, 1) for d, s in zip(dimension_names, shape))
    chunks = tuple(int(c) for c in chunks)
    if dimension_names and dimension_names[0] == "image" and chunks[0] != 1:
        raise ValueError(f"arrays with an image axis need chunks of one image, got {chunks}")
    if name in group:
        arr = group[name]
        if not isinstance(arr, zarr.Array):
            raise ValueError(f"{group.path}/{name} exists and is not an array")
        if tuple(arr.metadata.dimension_names or ()) not in accepted:
            raise ValueError(
                f"{arr.path} has dimension_names {arr.metadata.dimension_names}, "
                f"not {dimension_names}"
            )
        if np.dtype(arr.dtype) != np.dtype(dtype) and not _both_str(arr.dtype, dtype):
            raise ValueError(f"{arr.path} has dtype {arr.dtype}, not {dtype}")
        if tuple(arr.shape[1:]) != shape[1:] or tuple(arr.chunks) != chunks:
            raise ValueError(
                f"{arr.path} has shape {arr.shape} chunks {arr.chunks}, "
                f"not {shape} chunks {chunks}"
            )
        if arr.shape[0] < shape[0]:
            arr.resize(shape)
        return arr
    kwargs: dict[str, Any] = {}
    if fill_value is not None:
        kwargs["fill_value"] = fill_value
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        dimension_names=dimension_names,
        attributes=attributes,
        **kwargs,
    )


def _both_str(a: Any, b: Any) -> bool:
    return np.dtype(a).kind in "UT" and (b is str or np.dtype(b).kind in "UT")


def ensure_stage(root: zarr.Group, stage: str) -> zarr.Group:
    """Create the group of ``stage`` with its ``done`` marker and failure array (set-up only)."""
    n = image_count(root)
    group = root.require_group(stage)
    create_stage_array(group, "done", (n,), bool, ("image",), fill_value=False)
    failures_group = root.require_group(FAILURES_GROUP)
    create_stage_array(failures_group, stage, (n,), str, ("image",), fill_value="")
    return group


def reset_if_changed(parent: zarr.Group, name: str, identity: dict) -> str | None:
    """Delete the group ``parent/name`` when any ``identity`` key differs from its attributes.

    For a stage whose output depends on settings made elsewhere (categories, model, config):
    returns the reason (naming the keys that changed) or None. Set-up only (single writer); the
    caller recreates the group and writes ``identity`` into its attributes.
    """
    if name not in parent:
        return None
    old = dict(parent[name].attrs)
    changed = [k for k, v in identity.items() if old.get(k) != v]
    if not changed:
        return None
    where = f"{parent.path}/{name}".lstrip("/")
    del parent[name]
    return f"{where}/ was made with other {', '.join(changed)}: redone"


def image_count(root: zarr.Group) -> int:
    """Number of images on the store's image axis."""
    return int(root["images/image_id"].shape[0]) if "images/image_id" in root else 0


def image_table(root: zarr.Group, from_arrays: bool = False) -> list[dict]:
    """One dict per stored image: ``{"image_id", "name", "index"}`` (index = image axis).

    Read from the manifest's image list (in the group's own attributes: no array read) when it
    describes the stored images (``listed_images``), else (or with ``from_arrays``) from
    ``images/``: one chunk per image, seconds for thousands of images, and every stage asks
    (issue 20). A set-up marks ``images_pending`` before it changes the arrays and clears it
    with the manifest it writes last.
    """
    if "images/image_id" not in root:
        return []
    listed = None if from_arrays else listed_images(root)
    if listed is not None:
        return [{"image_id": int(r["image_id"]), "name": str(r["name"]), "index": k} for k, r in enumerate(listed)]
    ids = root["images/image_id"][:]
    names = root["images/name"][:]
    return [
        {"image_id": int(i), "name": str(n), "index": k} for k, (i, n) in enumerate(zip(ids, names))
    ]


def image_hashes(root: zarr.Group) -> list[str]:
    """The sha256 of every stored image, in index order: from the manifest when it lists exactly
    the stored images (as ``image_table``), else from ``images/sha256``."""
    if "images/sha256" not in root:
        return []
    listed = listed_images(root)
    if listed is not None:
        return [str(r["sha256"]) for r in listed]
    return [str(v) for v in root["images/sha256"][:]]


def grow_image_axis(root: zarr.Group, n_images: int) -> None:
    """Resize every array of this version whose first axis is ``image`` to ``n_images``.

    Metadata-only in Zarr: existing chunks are untouched. Set-up only (single writer).
    """
    for path, node in root.members(max_depth=None):
        if path == VERSIONS_GROUP or path.startswith(VERSIONS_GROUP + "/"):
            continue
        if isinstance(node, zarr.Array):
            dims = tuple(node.metadata.dimension_names or ())
            if dims and dims[0] == "image" and node.shape[0] < n_images:
                node.resize((n_images, *node.shape[1:]))


#: The stages each stage reads (docs/design.md §5 "Stages"): clearing one stage's markers clears every stage
#: that depends on it, directly or not, so nothing downstream keeps results of the old data.
STAGE_INPUTS = {
    "segments": ("attention",),
    "parts": ("segments",),
    "embeddings": ("parts",),
    "occlusion": ("parts", "embeddings"),
}


def dependent_stages(stage: str) -> list[str]:
    """Every stage that reads ``stage``, directly or through others, in pipeline order."""
    out: list[str] = []
    frontier = [stage]
    while frontier:
        current = frontier.pop(0)
        for name, inputs in STAGE_INPUTS.items():
            if current in inputs and name not in out:
                out.append(name)
                frontier.append(name)
    return out


def clear_dependents(root: zarr.Group, stage: str, index: int | None = None) -> list[str]:
    """Unset the done markers (every ``done`` array in the group) and failures of the stages
    depending on ``stage``, for one image or (``index`` None) all. Returns the stages cleared.

    Per-image markers are cleared at ``index``; markers on other axes (e.g. embeddings' per
    part) cannot be told apart per image and are cleared whole. Set-up only (single writer).
    """
    cleared = []
    for name in dependent_stages(stage):
        if name not in root:
            continue
        for path, node in root[name].members(max_depth=None):
            if isinstance(node, zarr.Array) and path.rsplit("/", 1)[-1] == "done":
                per_image = tuple(node.metadata.dimension_names or ())[:1] == ("image",)
                if index is None or not per_image:
                    node[...] = False
                else:
                    node[int(index)] = False
        key = f"{FAILURES_GROUP}/{name}"
        if key in root:
            if index is None:
                root[key][...] = ""
            else:
                root[key][int(index)] = ""
        cleared.append(name)
    return cleared


def stage_arrays(root: zarr.Group, stage: str) -> dict[str, zarr.Array]:
    """The arrays of one stage group, by name (``done`` included)."""
    if stage not in root:
        return {}
    return {k: v for k, v in root[stage].arrays()}


def is_done(root: zarr.Group, stage: str, index: int) -> bool:
    """Whether image ``index`` finished ``stage`` (its data written, then its marker)."""
    if f"{stage}/done" not in root:
        return False
    return bool(root[f"{stage}/done"][int(index)])


def done_mask(root: zarr.Group, stage: str) -> np.ndarray:
    """(image,) bool: the ``done`` markers of ``stage`` (all False if the stage is absent)."""
    if f"{stage}/done" not in root:
        return np.zeros(image_count(root), dtype=bool)
    return np.asarray(read_image_vector(root[f"{stage}/done"]), dtype=bool)


def mark_done(root: zarr.Group, stage: str, index: int, done: bool = True) -> None:
    """Set image ``index``'s marker for ``stage``. Call only AFTER its data are written."""
    root[f"{stage}/done"][int(index)] = bool(done)


def record_failure(
    root: zarr.Group,
    stage: str,
    image_id: int,
    name: str,
    reason: str,
    index: int | None = None,
) -> None:
    """Record that ``stage`` failed on one image (its own chunk: safe under concurrency).

    The image is found by ``image_id`` and ``name`` among the stored images (pass its
    ``index`` too to save the look-up; it is checked). The failure array ``failures/<stage>``
    must exist (``ensure_stage`` creates it in the set-up step).
    """
    if index is None:
        index = _find_index(root, image_id, name)
    elif (
        int(root["images/image_id"][int(index)]) != int(image_id)
        or str(root["images/name"][int(index)]) != name
    ):
        raise ValueError(f"image {image_id} ({name!r}) is not at index {index}")
    if not reason:
        raise ValueError(f"empty failure reason for image {image_id} ({name})")
    root[f"{FAILURES_GROUP}/{stage}"][index] = str(reason)


def clear_failure(root: zarr.Group, stage: str, index: int) -> None:
    """Forget an earlier failure of image ``index`` (after it succeeded). Writes only if set."""
    key = f"{FAILURES_GROUP}/{stage}"
    if key in root and root[key][int(index)]:
        root[key][int(index)] = ""


def failures(root: zarr.Group, stage: str | None = None) -> list[dict]:
    """Recorded failures: ``[{"image_id", "name", "index", "stage", "reason"}]``."""
    if FAILURES_GROUP not in root:
        return []
    table = image_table(root)
    out = []
    for name, arr in sorted(root[FAILURES_GROUP].arrays()):
        if stage is not None and name != stage:
            continue
        reasons = read_image_vector(arr)
        for k in np.flatnonzero(reasons != ""):
            row = table[int(k)]
            out.append({**row, "stage": name, "reason": str(reasons[k])})
    return out


def _find_index(root: zarr.Group, image_id: int, name: str) -> int:
    for row in image_table(root):
        if row["image_id"] == int(image_id) and row["name"] == name:
            return row["index"]
    raise ValueError(f"image {image_id} ({name!r}) is not in the store")
