"""Every group of a store opens with xarray (issue 13, item 9; docs/store.md).

In a group one dimension name has one length, and no array is named like a dimension (xarray
would take it for that dimension's coordinate). Two small stores built by the pipeline's own
set-up code: one through extract, segment (the real segment arrays, names on), UNet features of
two blocks and a second version; one through parts, embeddings, one occlusion case and features.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import zarr

from diffparts.store import (build_manifest, create_attention_arrays, create_feature_arrays, create_stage_array,
                             open_store, prepare_store)


def group_paths(store: str) -> list[str]:
    """"" (the root) and every group under it, walked with zarr."""
    top = zarr.open_group(store, mode="r")
    return [""] + sorted(path for path, node in top.members(max_depth=None) if isinstance(node, zarr.Group))


def open_every_group(store: str) -> dict[str, xr.Dataset]:
    """Each group with ``xarray.open_zarr``; checks every array is read under its own dims."""
    top = zarr.open_group(store, mode="r")
    out = {}
    for path in group_paths(store):
        ds = xr.open_zarr(store, group=path or None, consolidated=False)
        group = top[path] if path else top
        arrays = dict(group.arrays())
        assert set(ds.data_vars) == set(arrays), path
        assert not ds.coords, f"{path}: arrays named like a dimension: {list(ds.coords)}"
        for name, arr in arrays.items():
            assert ds[name].dims == tuple(arr.metadata.dimension_names), f"{path}/{name}"
            assert ds[name].shape == arr.shape, f"{path}/{name}"
        out[path] = ds
    return out


def open_tree(store: str) -> xr.DataTree:
    tree = xr.open_datatree(store, engine="zarr", consolidated=False)
    assert sorted(node.path.strip("/") for node in tree.subtree) == group_paths(store)
    return tree


@pytest.fixture()
def extracted_store(tmp_path):
    """3 images: uint8 attention, features of up_blocks 0 and 1 (other channels and sides), the
    segment stage's arrays with names; then a second version (another precision)."""
    from tasks.segment import create_segment_arrays

    store = str(tmp_path / "s.zarr")
    images = [{"image_id": i + 1, "name": f"b/{i}.png", "sha256": f"{i:064x}"} for i in range(3)]
    prepare_store(store, images, build_manifest("m", "sha256:m", {"precision": "uint8"}))
    root = open_store(store, "r+")
    create_attention_arrays(root, 8, ["<sot>", "bird", "<eot>"], image_size=32, precision="uint8")
    create_feature_arrays(root, {0: (6, 4, 4), 1: (3, 8, 8)}, {"blocks": [0, 1]})
    settings = {"out_shape": [16, 16], "n_levels": 3, "max_segments": 24, "names": True, "request": {}}
    create_segment_arrays.fn(store, settings)
    prepare_store(store, images[:2], build_manifest("m", "sha256:m", {"precision": "float16"}), new_version=True)
    create_attention_arrays(open_store(store, "r+"), 4, ["<sot>", "<eot>"], image_size=16)
    return store


def test_an_extracted_and_segmented_store_opens_group_by_group_and_whole(extracted_store):
    groups = open_every_group(extracted_store)
    assert set(groups) == {"", "images", "attention", "features", "segments", "failures", "versions", "versions/2",
                           "versions/2/images", "versions/2/attention", "versions/2/failures"}
    assert groups["images"].sizes == {"image": 3}
    assert dict(groups["attention"].sizes) == {"image": 3, "qy": 8, "qx": 8, "ky": 8, "kx": 8, "token": 3}
    assert {"self", "self_scale", "cross", "done"} <= set(groups["attention"].data_vars)
    assert dict(groups["features"].sizes) == {"image": 3, "up_0_channel": 6, "up_0_y": 4, "up_0_x": 4,
                                              "up_1_channel": 3, "up_1_y": 8, "up_1_x": 8}
    assert dict(groups["segments"].sizes) == {"image": 3, "level": 3, "y": 16, "x": 16, "segment": 24}
    assert set(groups["segments"].data_vars) == {"labels", "n_segments", "n_levels", "parent", "name_token", "done"}
    assert groups["versions/2/attention"].sizes["image"] == 2 and groups["versions/2/attention"].sizes["qy"] == 4
    assert groups[""].attrs["manifest"]["config"] == {"precision": "uint8"}
    tree = open_tree(extracted_store)
    assert tree["versions/2/attention"]["self"].dims == ("image", "qy", "qx", "ky", "kx")
    assert tree["features"]["up_1"].shape == (3, 3, 8, 8)


@pytest.fixture()
def full_store(parts_store, tiny_pipeline):
    """The shared parts store (8 images, K = 2) with noise-loss tokens of both categories, one
    finished occlusion case, and feature arrays of two blocks."""
    from diffparts.inversion.stage import finish_index, setup_embeddings, train_category
    from diffparts.inversion.train import InversionConfig
    from diffparts.occlusion.cases import run_cases
    from diffparts.occlusion.stage import occlusion_config, setup_occlusion

    store, corpus = parts_store
    root = open_store(store, "r+")
    model = str(tiny_pipeline[0])
    config = InversionConfig(steps=1, batch_size=2)
    setup_embeddings(root, corpus, ["noise"], config, "h", 32, store=store)
    finish_index(store, ["noise"], [train_category(root, store, corpus, model, c, config) for c in (1, 2)])
    setup = setup_occlusion(root, store, corpus, model,
                            occlusion_config({"how": "category", "n_cases": 1, "completion": {"steps": 2}}))
    assert run_cases(root, store, corpus, model, setup["todo"])["done"] == [0]
    create_feature_arrays(root, {1: (8, 4, 4), 2: (4, 8, 8)}, {"blocks": [1, 2]})   # after: parts did not use them
    return store


def test_every_stage_group_opens_with_one_length_per_dimension(full_store):
    root = open_store(full_store)
    k1 = int(root["parts"].attrs["n_categories"])
    k, rows, n_feat = k1 - 1, root["parts/descriptors/features"].shape[0], root["parts/mean"].shape[0]
    groups = open_every_group(full_store)
    assert set(groups) == {"", "images", "attention", "segments", "failures", "parts", "parts/descriptors",
                           "embeddings", "embeddings/noise", "occlusion", "features"}

    parts = groups["parts"]                                   # K clusters, K + 1 categories
    assert k == 2 and dict(parts.sizes) == {"image": 8, "xywh": 4, "part": k, "category": k1, "feature": n_feat,
                                            "y": 16, "x": 16}
    assert parts["centers"].dims == ("part", "feature") and parts["prevalence"].dims == ("category",)
    np.testing.assert_array_equal(parts["centers"].values, root["parts/centers"][:])
    np.testing.assert_array_equal(parts["prevalence"].values, root["parts/prevalence"][:])

    desc = groups["parts/descriptors"]                        # ragged rows; columns are not coordinates
    assert dict(desc.sizes) == {"segment": rows, "feature": n_feat, "image": 8}
    assert {"image_index", "segment_id", "category", "start", "count"} <= set(desc.data_vars)
    np.testing.assert_array_equal(desc["image_index"].values, np.repeat(np.arange(8), 5))
    np.testing.assert_array_equal(desc["start"].values, np.arange(8) * 5)

    emb = groups["embeddings/noise"]
    assert dict(emb.sizes) == {"category": k1, "vector": 1, "channel": 32}
    assert emb["done"].values.tolist() == [False, True, True]
    assert groups["embeddings"].sizes == {"image": 8}

    occ = groups["occlusion"]
    size, (ly, lx) = int(root["attention"].attrs["image_size"]), root["parts/labels"].shape[1:]
    assert dict(occ.sizes) == {"case": 1, "variant": len(root["occlusion"].attrs["variants"]), "y": size, "x": size,
                               "channel": 3, "ly": ly, "lx": lx, "category": k1,
                               "image": root["images/name"].shape[0]}   # occlusion/held_out: one flag per image
    assert occ["labels"].dims == ("case", "variant", "ly", "lx") and occ["scores"].dims == ("case", "category")
    assert bool(occ["done"].values[0])

    assert dict(groups["features"].sizes) == {"image": 8, "up_1_channel": 8, "up_1_y": 4, "up_1_x": 4,
                                              "up_2_channel": 4, "up_2_y": 8, "up_2_x": 8}

    tree = open_tree(full_store)
    assert tree["parts"].sizes["part"] == k and tree["parts"].sizes["category"] == k1
    assert tree["parts/descriptors"]["segment_id"].sizes == {"segment": rows}
    assert tree["embeddings/noise"]["vectors"].dims == ("category", "vector", "channel")


def test_features_of_an_older_store_grow_under_their_earlier_names(tmp_path):
    """Feature arrays named (image, channel, y, x) before issue 13 take new images as they are;
    other names are still refused."""
    store = str(tmp_path / "s.zarr")
    images = [{"image_id": i + 1, "name": f"b/{i}.png", "sha256": f"{i:064x}"} for i in range(3)]
    prepare_store(store, images[:2], build_manifest("m", "sha256:m", {}))
    group = open_store(store, "r+").require_group("features")
    create_stage_array(group, "up_1", (2, 3, 4, 4), "float16", ("image", "channel", "y", "x"))   # the old names
    create_stage_array(group, "done", (2,), bool, ("image",), fill_value=False)
    prepare_store(store, images, build_manifest("m", "sha256:m", {}))                         # a third image
    create_feature_arrays(open_store(store, "r+"), {1: (3, 4, 4)}, {})
    arr = open_store(store)["features/up_1"]
    assert arr.shape == (3, 3, 4, 4) and arr.metadata.dimension_names == ("image", "channel", "y", "x")
    with pytest.raises(ValueError, match="dimension_names"):
        create_stage_array(group, "up_1", (3, 3, 4, 4), "float16", ("image", "c", "y", "x"),
                           earlier_dimension_names=("image", "channels", "y", "x"))


def test_parts_of_an_older_store_are_read_then_rewritten_with_the_new_names(parts_store):
    from diffparts.inversion.saving import write_held_out
    from diffparts.parts.assign import corpus_distances
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.dataset import build_descriptors, cluster_parts, image_infos, paint_part_labels

    store, _ = parts_store
    root = open_store(store, "r+")
    write_held_out(root, np.arange(8) % 2 == 0, "even")          # corpus_distances reads the rows' images
    labels, prevalence, distances = root["parts/labels"][:], root["parts/prevalence"][:], corpus_distances(root)
    desc, group = root["parts/descriptors"], root["parts"]
    for new, old in (("image_index", "image"), ("segment_id", "segment")):   # as written before issue 13
        desc.create_array(old, data=desc[new][:], chunks=desc[new].chunks, dimension_names=("segment",))
        del desc[new]
    box = group["box"][:]
    del group["box"]
    create_stage_array(group, "box", box.shape, "float32", ("image", "box"))[:] = box
    paint_part_labels(root)                                       # reads the old columns
    np.testing.assert_array_equal(root["parts/labels"][:], labels)
    np.testing.assert_array_equal(root["parts/prevalence"][:], prevalence)
    np.testing.assert_array_equal(corpus_distances(root), distances)
    old_parts = xr.open_zarr(store, group="parts", consolidated=False)
    assert "box" in old_parts.coords                              # (image, box): taken for the box axis's labels
    build_descriptors(root, image_infos(root, None))              # a parts run rewrites the group
    cluster_parts(root, ClusterConfig(n_clusters=2, random_state=0))
    paint_part_labels(root)
    parts = xr.open_zarr(store, group="parts", consolidated=False)
    assert parts["box"].dims == ("image", "xywh") and not parts.coords and parts.sizes["category"] == 3
    np.testing.assert_array_equal(parts["box"].values, box)
    assert {"image_index", "segment_id"} <= set(xr.open_zarr(store, group="parts/descriptors", consolidated=False))
