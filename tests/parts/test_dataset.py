"""The parts stage over a tiny synthetic store (diffparts.parts.dataset)."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from diffparts.parts.cluster import ClusterConfig
from diffparts.parts.dataset import (build_descriptors, cluster_parts, paint_part_labels, read_part_labels,
                                     require_segments)
from diffparts.parts.synthetic import make_part_store
from diffparts.parts.evaluate import evaluate_parts
from diffparts.store import mark_done, open_store, record_failure


@pytest.fixture(scope="module")
def parts_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("parts") / "store.zarr"
    truth = make_part_store(path, n_images=8, seed=0)
    root = open_store(path, "r+")
    summary = build_descriptors(root, truth.infos, block=16)
    clusters = cluster_parts(root, ClusterConfig(n_clusters=3, block_size=16))
    paint_part_labels(root)
    return path, truth, summary, clusters


def test_descriptor_layout(parts_store):
    path, truth, summary, _ = parts_store
    root = open_store(path)
    desc = root["parts/descriptors"]
    assert summary == {"images": 8, "segments": 40, "foreground_segments": 24, "features": summary["features"]}
    assert desc["features"].shape == (40, summary["features"])
    assert desc["features"].metadata.dimension_names == ("segment", "feature")
    np.testing.assert_array_equal(desc["start"][:], np.arange(8) * 5)
    np.testing.assert_array_equal(desc["count"][:], 5)
    np.testing.assert_array_equal(desc["image_index"][:], np.repeat(np.arange(8), 5))
    # units 0..4: the background segments 0, 1 (outside the box) then the parts 2, 3, 4 (inside);
    # background is category 0, parts 1..3
    np.testing.assert_array_equal(desc["segment_id"][:].reshape(8, 5), [[0, 1, 2, 3, 4]] * 8)
    cat = desc["category"][:].reshape(8, 5)
    assert (cat[:, :2] == 0).all() and (cat[:, 2:] > 0).all()


def test_labels_consistent_across_images(parts_store):
    path, truth, _, clusters = parts_store
    root = open_store(path)
    assert clusters["k"] == 3
    pred = np.stack([read_part_labels(root, i) for i in range(8)])
    # one mapping from true part to category for ALL images: pooled ARI over every pixel is 1
    assert adjusted_rand_score(truth.part_maps.ravel(), pred.ravel()) == 1.0
    assert (pred[truth.part_maps == 0] == 0).all()
    np.testing.assert_allclose(root["parts/prevalence"][:], 1.0)
    assert root["parts/labels"].metadata.dimension_names == ("image", "y", "x")
    assert root["parts"].attrs["n_categories"] == 4


def test_scores_on_the_synthetic_store(parts_store):
    path, truth, _, _ = parts_store
    root = open_store(path)
    infos = truth.infos
    out = evaluate_parts(lambda i: read_part_labels(root, i), [x.keypoints for x in infos],
                         [x.bbox for x in infos], [x.size for x in infos], [x.class_id for x in infos])
    assert out["nmi"] == pytest.approx(1.0) and out["ari"] == pytest.approx(1.0)
    assert out["pck@0.05"] == 1.0 and out["pck@0.1"] == 1.0
    assert out["n_pairs"] == 24 and out["share_via_part"] == 1.0


def test_refuses_unfinished_segmentation(tmp_path):
    path = tmp_path / "s.zarr"
    make_part_store(path, n_images=3)
    root = open_store(path, "r+")
    mark_done(root, "segments", 1, False)
    with pytest.raises(ValueError, match="segmentation has not finished for 1 of 3 images"):
        require_segments(root)
    assert require_segments(root, [0, 2]) == [0, 2]
    # an image whose segmentation failed (recorded) is left out instead
    record_failure(root, "segments", 2, "obj/0001.png", "segment: no attention", index=1)
    assert require_segments(root) == [0, 2]


def test_transfer_between_two_images(parts_store):
    from diffparts.parts.scoring import transfer_between

    path, truth, _, _ = parts_store
    root = open_store(path)
    out = transfer_between(root, truth.infos, 1, 4)
    assert out["pck@0.1"] == 1.0 and out["category"][3] is None and out["predicted"][3] is None
    assert all(c > 0 for c in out["category"][:3])
    np.testing.assert_allclose(out["predicted"][:3], truth.infos[3].keypoints[:3, :2], atol=0.01)
    with pytest.raises(ValueError, match="target image id 99"):
        transfer_between(root, truth.infos, 1, 99)


def test_manifest_corpus_is_used_by_parts_and_evaluation_when_not_given(tmp_path):
    """A store whose manifest names its corpus: boxes, keypoints and classes come from it."""
    from diffparts.corpus import SynthConfig, generate_birds, open_corpus
    from diffparts.parts.dataset import load_infos
    from diffparts.parts.scoring import evaluate_store
    from diffparts.store import (build_manifest, create_stage_array, describe_corpus, describe_images,
                                 ensure_stage, prepare_store)
    from tasks.parts import evaluate_store as evaluate_task

    corpus = generate_birds(tmp_path / "birds", n=4, seed=3, config=SynthConfig(image_size=32, n_classes=2))
    records = list(open_corpus(corpus))
    path = tmp_path / "s.zarr"
    prepare_store(path, describe_images(records), build_manifest("m", "sha256:0", {"c": 1}),
                  stages=("attention", "segments"), corpus=describe_corpus(corpus))
    root = open_store(path, "r+")
    infos = load_infos(root)                                       # no corpus argument
    assert [i.bbox for i in infos] == [tuple(float(v) for v in r.bbox) for r in records]
    assert all(i.keypoints is not None and i.class_id is not None for i in infos)
    # part maps: a 2 x 2 grid over each true box, so the scores exist and are not trivial
    labels = create_stage_array(ensure_stage(root, "parts"), "labels", (4, 16, 16), "int16", ("image", "y", "x"))
    ys, xs = np.mgrid[0:16, 0:16] + 0.5
    for i, r in enumerate(records):
        bx, by, bw, bh = (v / 2 for v in r.bbox)                  # 32 px image -> 16 px map
        u, v = (xs - bx) / bw, (ys - by) / bh
        inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
        labels[i] = np.where(inside, 1 + (v >= 0.5) * 2 + (u >= 0.5), 0)
        mark_done(root, "parts", i)
    scores = evaluate_store(root, load_infos(root))
    assert scores["n_images"] == 4 and scores["n_keypoints"] > 0 and 0 < scores["nmi"] <= 1
    assert scores["n_pairs"] > 0 and 0 <= scores["pck@0.1"] <= 1     # pairs need the manifest's classes
    assert evaluate_task.fn(str(path), None) == scores            # the task: corpus None -> the manifest's


def test_descriptors_use_the_store_features_by_default_and_refuse_missing_ones(tmp_path):
    from diffparts.parts.descriptors import UNET_WEIGHT, DescriptorConfig
    from diffparts.store import create_feature_arrays, write_features

    path = tmp_path / "s.zarr"
    truth = make_part_store(path, n_images=4, seed=2)
    root = open_store(path, "r+")
    with pytest.raises(ValueError, match="store has no features/ group"):
        build_descriptors(root, truth.infos, DescriptorConfig(weight_unet=1.0))
    plain = build_descriptors(root, truth.infos)                   # default: no features, none used
    create_feature_arrays(root, {0: (3, 8, 8)}, {})
    rng = np.random.default_rng(0)
    for i in range(4):
        write_features(root, i, {0: rng.normal(size=(3, 8, 8)).astype(np.float32)})
    with_features = build_descriptors(root, truth.infos)           # default: the store's features, UNET_WEIGHT
    assert with_features["features"] == plain["features"] + 3
    attrs = open_store(path)["parts/descriptors/features"].attrs
    assert attrs["config"]["weight_unet"] == UNET_WEIGHT and "unet_2" in attrs["feature_names"]
