"""assign_image's distances and the "unknown" outcome (a unit far from every fitted centre)."""

import dataclasses

import numpy as np
import pytest

from diffparts.parts.assign import (assign_image, corpus_distances, fitted_parts, mark_unknown,
                                    unknown_threshold)


def test_mark_unknown_only_far_foreground():
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.int16)
    dist = np.array([[9.0, 0.5, 5.0], [1.0, 7.0, 0.0]], np.float32)
    out = mark_unknown(labels, dist, 4.0)
    assert out.tolist() == [[0, 1, -1], [2, -1, 0]]           # background is never unknown
    with pytest.raises(ValueError, match="shape"):
        mark_unknown(labels, dist[:1], 4.0)


def test_corpus_distances_and_threshold(parts_store):
    from diffparts.parts.cluster import _nearest
    from diffparts.store import open_store

    store, _ = parts_store
    root = open_store(store, "r")
    d = corpus_distances(root)
    f = fitted_parts(root)
    desc = root["parts/descriptors"]
    keep = np.asarray(desc["foreground"][:], bool) & ~np.asarray(desc["small"][:], bool)
    z = ((np.asarray(desc["features"][:], np.float32)[keep] - f.mean) / f.scale) * f.weights
    assert d.shape == (int(keep.sum()),) and np.allclose(d, _nearest(z, f.centers)[1], atol=1e-4)
    assert unknown_threshold(root, 1.0) == pytest.approx(float(d.max()))
    assert unknown_threshold(root, 0.5) <= unknown_threshold(root, 0.99)
    with pytest.raises(ValueError, match="quantile"):
        unknown_threshold(root, 0.0)


def test_assign_returns_distances_and_far_units_are_unknown(parts_store, tiny_pipeline, monkeypatch):
    import diffparts.segment.hierarchy as hierarchy
    from diffparts.store import open_store

    # Segments fixed (the tiny random model's attention makes one segment touching the border):
    # a square inside the box, the rest around it.
    seg = np.zeros((16, 16), np.int32)
    seg[4:12, 4:12] = 1
    monkeypatch.setattr(hierarchy, "segment_levels", lambda *a, **k: seg[None])

    store, _ = parts_store
    _, pipe = tiny_pipeline
    fitted = fitted_parts(open_store(store, "r"))
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    box = np.array([2, 2, 12, 12], np.float32)                   # a corpus box: its inside is foreground
    plain = assign_image(fitted, pipe, image, box=box)
    labels, dist = assign_image(fitted, pipe, image, box=box, return_distance=True)
    assert np.array_equal(labels, plain) and dist.shape == labels.shape and dist.dtype == np.float32
    assert (dist >= 0).all() and (dist[labels == 0] == 0).all()
    assert (labels > 0).any()

    # The same image with every centre moved far away: each foreground unit is far from all of
    # them, so every foreground pixel is unknown at a threshold learned from the near centres.
    far = dataclasses.replace(fitted, centers=fitted.centers + 100.0)
    labels_far, dist_far = assign_image(far, pipe, image, box=box, return_distance=True)
    fg = labels_far > 0
    threshold = float(dist[labels > 0].max())
    assert (dist_far[fg] > 100.0 * threshold).all()
    unknown = mark_unknown(labels_far, dist_far, threshold)
    assert (unknown[fg] == -1).all() and (unknown[~fg] == labels_far[~fg]).all()
    assert (mark_unknown(labels, dist, threshold) == labels).all()   # near units keep their category
