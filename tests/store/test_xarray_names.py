"""A store read with xarray selects images by name, with no warning (issue 21, docs/store.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("xarray")


def test_groups_and_tree_select_an_image_by_name(tmp_path):
    from diffparts.parts.synthetic import make_part_store
    from diffparts.store.xr import open_group, open_tree

    store = tmp_path / "s.zarr"
    make_part_store(store, n_images=4, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # no consolidated-metadata warnings
        segments = open_group(store, "segments")
        tree = open_tree(store)
    assert list(segments.image.values) == [f"obj/{i:04d}.png" for i in range(4)]
    assert list(segments.image_id.values) == [1, 2, 3, 4]
    by_name = segments["labels"].sel(image="obj/0002.png").values
    assert np.array_equal(by_name, segments["labels"].isel(image=2).values)
    assert list(tree["attention"].dataset.image.values) == list(segments.image.values)
    assert tree["attention"]["cross"].sel(image="obj/0001.png").dims[0] != "image"
    assert "image" not in tree["images"].dataset.coords or tree["images"].dataset.sizes["image"] == 4
