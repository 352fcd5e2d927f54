"""Streaming clustering of segment descriptors (diffparts.parts.cluster)."""

import numpy as np
import pytest
import zarr
from sklearn.metrics import adjusted_rand_score

from diffparts.parts.cluster import ClusterConfig, StreamingPartClusterer, cluster_segments
from diffparts.parts.synthetic import make_descriptors


def test_recovers_known_categories():
    x, truth = make_descriptors(n_per_category=150, n_categories=4, seed=1)
    est = StreamingPartClusterer(4, block_size=128, sample_size=300).fit(x)
    assert adjusted_rand_score(truth, est.labels_) == 1.0
    # categories are numbered by decreasing size and the counts add up
    assert est.counts_.sum() == len(x)
    assert np.all(np.diff(est.counts_) <= 0)


def test_chooses_k_by_silhouette_when_not_given():
    x, truth = make_descriptors(n_per_category=100, n_categories=5, seed=2)
    est = StreamingPartClusterer(None, k_range=(3, 7), block_size=100, sample_size=400, n_init=2).fit(x)
    assert est.n_clusters_ == 5
    assert set(est.k_selection_.scores) == {3, 4, 5, 6, 7}
    assert max(est.k_selection_.scores, key=est.k_selection_.scores.get) == 5
    assert adjusted_rand_score(truth, est.labels_) == 1.0


def test_streaming_from_zarr_equals_in_memory(tmp_path):
    x, _ = make_descriptors(n_per_category=120, n_categories=3, n_features=5, spread=1.5, seed=3)
    arr = zarr.create_array(str(tmp_path / "d.zarr"), shape=x.shape, dtype="float32", chunks=(50, 5))
    arr[:] = x
    include = np.arange(len(x)) % 7 != 0
    cfg = ClusterConfig(n_clusters=3, block_size=64, sample_size=200, random_state=5)
    mem_labels, mem = cluster_segments(x, include=include, config=cfg)
    out = zarr.create_array(str(tmp_path / "l.zarr"), shape=(len(x),), dtype="int32", chunks=(50,))
    zarr_labels, streamed = cluster_segments(arr, include=include, config=cfg, labels_out=out)
    np.testing.assert_array_equal(mem_labels, out[:])
    np.testing.assert_array_equal(mem.cluster_centers_, streamed.cluster_centers_)
    assert (mem_labels[~include] == -1).all() and (mem_labels[include] >= 0).all()


def test_feature_weights_change_what_counts():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 400)          # carried by feature 0
    b = rng.integers(0, 2, 400)          # carried by feature 1
    x = np.stack([a * 4.0, b * 4.0], 1) + rng.normal(scale=0.1, size=(400, 2))
    est = StreamingPartClusterer(2, block_size=100, feature_weights=[1.0, 0.01]).fit(x.astype(np.float32))
    assert adjusted_rand_score(a, est.labels_) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"n_clusters": 0}, "n_clusters"),
    ({"n_clusters": None, "k_range": (1, 3)}, "k_range"),
    ({"block_size": 0}, "block_size"),
])
def test_bad_parameters_raise(kwargs, match):
    x, _ = make_descriptors(n_per_category=10)
    with pytest.raises(ValueError, match=match):
        StreamingPartClusterer(**kwargs).fit(x)


def test_nan_and_empty_raise():
    x, _ = make_descriptors(n_per_category=10)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        StreamingPartClusterer(2).fit(x)
    with pytest.raises(ValueError, match="no descriptors"):
        StreamingPartClusterer(2).fit(x[:0])
