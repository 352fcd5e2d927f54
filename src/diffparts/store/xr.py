"""A store read with xarray, images selectable by name (issue 21; docs/store.md).

The store keeps no array named like a dimension (each group opens with xarray as it is), so
its ``image`` dimension has no coordinate: positions only. These readers add one from the
version's ``images/`` group: ``image`` = the image's name (its path in the corpus) and
``image_id`` beside it, so ``ds.sel(image="001.Sparrow/bird_0003.png")`` works. Nothing is
written; the metadata is read without consolidation (the store has none, and xarray warns at
length when it looks for it). xarray is an optional dependency (the ``dev`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from diffparts.store.layout import CURRENT_VERSION_ATTR, VERSIONS_GROUP


def _xarray():
    try:
        import xarray
    except ImportError as err:  # pragma: no cover - xarray is in the dev extra
        raise ImportError("reading a store with xarray needs xarray: pip install 'xarray>=2024.10'") from err
    return xarray


def _version_prefix(top: zarr.Group, version: int | None) -> str:
    if version is None:
        return str(top.attrs.get(CURRENT_VERSION_ATTR, "")).strip("/")
    return "" if int(version) == 1 else f"{VERSIONS_GROUP}/{int(version)}"


def image_coordinates(root: zarr.Group, n: int | None = None) -> dict:
    """``{"image": names, "image_id": ("image", ids)}`` of a version's root group (the first ``n``)."""
    names = np.array([str(v) for v in root["images/name"][:]], dtype=object)
    ids = np.asarray(root["images/image_id"][:])
    n = len(names) if n is None else int(n)
    return {"image": names[:n], "image_id": ("image", ids[:n])}


def with_image_names(ds, root: zarr.Group):
    """``ds`` with the ``image`` coordinate (names) and ``image_id``, when it has an ``image`` axis."""
    if "image" not in ds.sizes or "images" not in root:
        return ds
    return ds.assign_coords(image_coordinates(root, ds.sizes["image"]))


def open_group(store: str | Path, group: str, version: int | None = None, **kwargs):
    """``xarray.open_zarr`` of ``group`` (e.g. ``"parts"``) in ``version`` (default the current
    one), images named: ``open_group(s, "segments")["n_segments"].sel(image=name)``."""
    xr = _xarray()
    top = zarr.open_group(str(store), mode="r")
    prefix = _version_prefix(top, version)
    ds = xr.open_zarr(str(store), group=f"{prefix}/{group}".strip("/"), consolidated=False, **kwargs)
    return with_image_names(ds, top[prefix] if prefix else top)


def open_tree(store: str | Path, **kwargs):
    """``xarray.open_datatree`` of the whole store (every version), each group with an
    ``image`` axis given its version's image names as coordinate."""
    xr = _xarray()
    top = zarr.open_group(str(store), mode="r")
    tree = xr.open_datatree(str(store), engine="zarr", consolidated=False, **kwargs)
    for node in tree.subtree:
        path = node.path.strip("/")
        parts = path.split("/")
        prefix = "/".join(parts[:2]) if parts[0] == VERSIONS_GROUP and len(parts) >= 2 else ""
        ds = node.to_dataset(inherit=False)
        if "image" in ds.sizes:
            node.dataset = with_image_names(ds, top[prefix] if prefix else top)
    return tree
