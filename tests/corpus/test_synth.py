"""Synthetic birds: layout, determinism, content of masks, keypoints and captions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from diffparts.corpus import CAPTION_WORDS, CUB_KEYPOINTS, PART_NAMES, CubDataset, SynthConfig
from diffparts.corpus.synth import class_names, generate_birds

SMALL = SynthConfig(image_size=64, n_classes=4)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return generate_birds(tmp_path_factory.mktemp("birds"), 8, 0, SMALL)


def test_layout_files(birds):
    for name in ("images.txt", "image_class_labels.txt", "classes.txt", "train_test_split.txt",
                 "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt",
                 "part_segmentations/parts.txt", "captions.txt"):
        assert (birds / name).is_file(), name
    lines = (birds / "images.txt").read_text().splitlines()
    assert len(lines) == 8
    assert lines[0] == "1 001.Crimson_finch/Crimson_finch_0001.png"
    assert (birds / "classes.txt").read_text().splitlines()[:2] == [
        "1 001.Crimson_finch", "2 002.Azure_warbler"]
    assert (birds / "parts/parts.txt").read_text().splitlines()[6] == "7 left eye"
    legend = (birds / "part_segmentations/parts.txt").read_text().splitlines()
    assert legend[0] == "0 background" and len(legend) == len(PART_NAMES) + 1 >= 8


def test_same_seed_same_bytes_and_prefix_stable(tmp_path):
    a = generate_birds(tmp_path / "a", 3, 5, SMALL)
    b = generate_birds(tmp_path / "b", 3, 5, SMALL)
    c = generate_birds(tmp_path / "c", 3, 6, SMALL)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    # image i depends only on (seed, i): a larger set starts with the same birds
    d = generate_birds(tmp_path / "d", 6, 5, SMALL)
    for rel in ("images/001.Crimson_finch/Crimson_finch_0001.png",
                "part_segmentations/003.Golden_tanager/Golden_tanager_0001.png"):
        assert (a / rel).read_bytes() == (d / rel).read_bytes()


def test_images_masks_and_records(birds):
    ds = CubDataset(birds)
    assert len(ds) == 8
    assert ds.part_names == list(CUB_KEYPOINTS)
    assert ds.part_legend[0] == "background" and ds.part_legend[3] == "eye"
    assert len(CubDataset(birds, split="train")) == 4 == len(CubDataset(birds, split="test"))
    seen = set()
    for r in ds:
        img = np.asarray(Image.open(r.path))
        parts = np.asarray(Image.open(r.part_mask_path))
        fg = np.asarray(Image.open(r.mask_path))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert parts.shape == (64, 64) and parts.max() <= len(PART_NAMES)
        np.testing.assert_array_equal(fg > 0, parts > 0)
        seen |= set(np.unique(parts).tolist())
        # the bbox encloses the foreground exactly
        ys, xs = np.nonzero(parts)
        x, y, w, h = r.bbox
        assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())
        # visible keypoints lie inside the image, invisible ones are zero (CUB convention)
        kp = r.keypoints
        assert kp.shape == (15, 3)
        vis = kp[:, 2] == 1
        assert ((kp[vis, :2] >= 0) & (kp[vis, :2] < 64)).all()
        assert (kp[~vis] == 0).all()
        # a side view never shows both eyes
        assert not (kp[CUB_KEYPOINTS.index("left eye"), 2] and kp[CUB_KEYPOINTS.index("right eye"), 2])
        assert set(r.caption.split()) <= set(CAPTION_WORDS)
        assert r.caption.startswith("a photo of a ")
    assert seen == set(range(len(PART_NAMES) + 1))  # every part appears somewhere


def test_default_size_and_part_areas(tmp_path):
    root = generate_birds(tmp_path, 4, 1, SynthConfig(n_classes=4))
    areas = np.zeros(len(PART_NAMES) + 1)
    for r in CubDataset(root):
        parts = np.asarray(Image.open(r.part_mask_path))
        assert parts.shape == (128, 128)
        areas += np.bincount(parts.ravel(), minlength=len(areas))
    frac = areas / areas[1:].sum()
    # small parts are not absurdly tiny: beak, eye and legs each >= 1.5% of the bird
    for name in ("beak", "eye", "legs"):
        assert frac[PART_NAMES.index(name) + 1] > 0.015, name


def test_class_names_and_bad_arguments(tmp_path):
    assert class_names(2) == ["001.Crimson_finch", "002.Azure_warbler"]
    with pytest.raises(ValueError, match="n_classes"):
        class_names(99)
    with pytest.raises(ValueError, match="n=0"):
        generate_birds(tmp_path, 0, 0)
    with pytest.raises(ValueError, match="image_size"):
        generate_birds(tmp_path, 1, 0, SynthConfig(image_size=8))
