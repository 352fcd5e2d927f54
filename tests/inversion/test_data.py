"""Split, subsets, masks and crops of the embeddings stage's data."""

import numpy as np
import pytest

from diffparts.inversion.data import held_out_split, random_crop_keep, resize_mask, subset


class _Rec:
    def __init__(self, name, is_train):
        self.name, self.is_train = name, is_train


def test_split_follows_the_corpus_else_a_seeded_half():
    held, rule = held_out_split(["a", "b", "c"], [_Rec("a", True), _Rec("b", False), _Rec("c", True)])
    assert held.tolist() == [False, True, False] and "train_test_split" in rule
    held, rule = held_out_split([f"{i}" for i in range(10)], [_Rec("0", None)], seed=3)
    again, _ = held_out_split([f"{i}" for i in range(10)], None, seed=3)
    assert held.sum() == 5 and held.tolist() == again.tolist() and rule.startswith("seeded")
    with pytest.raises(ValueError, match="fraction"):
        held_out_split(["a"], None, fraction=1.0)


def test_subset_is_seeded_sorted_and_bounded():
    idx = np.arange(100, 120)
    a, b = subset(idx, 5, seed=1), subset(idx, 5, seed=1)
    assert len(a) == 5 and a.tolist() == b.tolist() and a.tolist() == sorted(a.tolist())
    assert set(a) <= set(idx) and subset(idx, None).tolist() == idx.tolist() and len(subset(idx, 50)) == 20


def test_resize_mask_and_crops_keep_the_part():
    mask = np.zeros((16, 16), np.float32)
    mask[2:6, 10:14] = 1
    big = resize_mask(mask, 32)
    assert big.shape == (32, 32) and big.sum() == 4 * mask.sum()
    image = np.zeros((32, 32, 3), np.uint8)
    m = resize_mask(mask, 32)
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop, cm = random_crop_keep(image, m, rng, min_scale=0.5)
        assert crop.shape == image.shape and cm.shape == m.shape and cm.sum() > 0   # the part is still there


def test_category_pixels_come_from_the_stored_counts_and_equal_the_labels(parts_store):
    """The parts stage writes each labelled image's category pixels in one chunk; the
    embeddings stage reads those (not every label map), and they equal the label maps' counts,
    also for an image whose parts marker was cleared since and for a store painted before."""
    from diffparts.inversion.data import category_pixels
    from diffparts.store import mark_done, open_store

    store, _ = parts_store
    root = open_store(store, "r+")
    k1 = int(root["parts"].attrs["n_categories"])
    labels = root["parts/labels"][:]
    expected = np.stack([np.bincount(lab[lab >= 0].ravel(), minlength=k1)[:k1] for lab in labels])
    assert root["parts/category_pixels"].nchunks == 1
    np.testing.assert_array_equal(category_pixels(root), expected)
    mark_done(root, "parts", 2, False)                    # e.g. the image changed: counts nothing
    expected[2] = 0
    np.testing.assert_array_equal(category_pixels(root), expected)
    del root["parts/category_pixels"]                      # as painted before issue 20: from the labels
    np.testing.assert_array_equal(category_pixels(root), expected)


def test_held_out_flags_are_kept_appended_and_not_rewritten(parts_store, monkeypatch):
    """An existing split is kept for its images and extended for new ones; a set-up with nothing
    new writes no flag again (a no-op re-run wrote one chunk per image)."""
    import zarr

    from diffparts.inversion.saving import write_held_out
    from diffparts.store import open_store

    store, _ = parts_store
    root = open_store(store, "r+")
    write_held_out(root, np.arange(8) % 2 == 0, "even")
    writes = []
    real = zarr.Array.__setitem__
    monkeypatch.setattr(zarr.Array, "__setitem__", lambda self, k, v: writes.append(k) or real(self, k, v))
    write_held_out(root, np.ones(8, bool), "all")                      # the old flags win, nothing written
    assert writes == []
    np.testing.assert_array_equal(np.asarray(root["embeddings/held_out"][:], bool), np.arange(8) % 2 == 0)
