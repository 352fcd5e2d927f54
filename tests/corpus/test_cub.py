"""CUB-200-2011 reader on generated CUB-layout data, filters, and malformed metadata."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from diffparts.corpus import CubDataset, SynthConfig, generate_birds, open_corpus, read_folder


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    return generate_birds(tmp_path_factory.mktemp("cub"), 6, 2, SynthConfig(image_size=32, n_classes=3))


@pytest.fixture
def copy(cub, tmp_path):
    dst = tmp_path / "cub"
    shutil.copytree(cub, dst)
    return dst


def test_records(cub):
    ds = CubDataset(cub)
    assert len(ds) == 6 and [r.image_id for r in ds] == [1, 2, 3, 4, 5, 6]
    r = ds[2]
    assert r.name == "002.Azure_warbler/Azure_warbler_0001.png"
    assert r.path == cub.resolve() / "images" / r.name and r.path.is_file()
    assert (r.class_id, r.class_name, r.is_train) == (2, "002.Azure_warbler", True)
    assert ds[3].is_train is False
    assert len(r.bbox) == 4 and r.keypoints.shape == (15, 3) and r.keypoints.dtype == np.float32
    assert r.mask_path.name == "Azure_warbler_0001.png" and r.part_mask_path.is_file()
    assert r.caption.startswith("a photo of a")
    assert ds.class_names == {1: "001.Crimson_finch", 2: "002.Azure_warbler", 3: "003.Golden_tanager"}
    assert ds.part_names[1] == "beak" and ds.part_names[14] == "throat"
    # keypoints follow part_locs.txt
    line = next(l for l in (cub / "parts/part_locs.txt").read_text().splitlines()
                if l.startswith("3 2 "))
    x, y, vis = map(float, line.split()[2:])
    np.testing.assert_allclose(r.keypoints[1], (x, y, vis))


def test_filters(cub):
    train = CubDataset(cub, split="train")
    test = CubDataset(cub, split="test")
    assert len(train) == 3 and len(test) == 3 and all(r.is_train for r in train)
    assert {r.image_id for r in train} | {r.image_id for r in test} == set(range(1, 7))
    only = CubDataset(cub, classes=[2, "003.Golden_tanager"])
    assert sorted({r.class_id for r in only}) == [2, 3] and len(only) == 4
    assert len(CubDataset(cub, split="test", classes=[1])) == 1
    with pytest.raises(ValueError, match="split='val'"):
        CubDataset(cub, split="val")
    with pytest.raises(ValueError, match="'Dodo'"):
        CubDataset(cub, classes=["Dodo"])


def test_open_corpus_dispatches(cub):
    assert isinstance(open_corpus(cub), CubDataset)
    recs = open_corpus(cub / "images")
    assert isinstance(recs, list) and len(recs) == 6


def test_optional_files_may_be_absent(copy):
    for name in ("captions.txt", "bounding_boxes.txt", "parts/part_locs.txt"):
        (copy / name).unlink()
    shutil.rmtree(copy / "part_segmentations")
    ds = CubDataset(copy)
    assert ds[0].caption is None and ds[0].bbox is None and ds[0].keypoints is None
    assert ds[0].part_mask_path is None and ds.part_legend == {}


def test_text_c10_caption_fallback(copy):
    (copy / "captions.txt").unlink()
    txt = copy / "text_c10" / "001.Crimson_finch" / "Crimson_finch_0001.txt"
    txt.parent.mkdir(parents=True)
    txt.write_text("this bird is red\nsecond caption\n")
    assert CubDataset(copy)[0].caption == "this bird is red"


def test_missing_images_txt(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.txt"):
        CubDataset(tmp_path)


def _edit(path, lineno, new):
    lines = path.read_text().splitlines()
    if new is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, lineno, new, message", [
    ("images.txt", 3, "3", r"images.txt: line 3: expected 2 fields"),
    ("images.txt", 2, "x 001.A/b.png", r"images.txt: line 2: malformed value"),
    ("images.txt", 4, "1 001.A/dup.png", r"images.txt: line 4: duplicate image id 1"),
    ("image_class_labels.txt", 5, None, r"image_class_labels.txt: missing line for image id 5 "
                                        r"\(images.txt line 5\)"),
    ("image_class_labels.txt", 2, "2 9", r"image_class_labels.txt: image id 2: class id 9"),
    ("image_class_labels.txt", 2, "2 two", r"image_class_labels.txt: line 2: malformed"),
    ("train_test_split.txt", 6, "6 1 0", r"train_test_split.txt: line 6: expected 2 fields"),
    ("train_test_split.txt", 6, "6 2", r"train_test_split.txt: image id 6: flag must be 0 or 1"),
    ("train_test_split.txt", 6, "7 1", r"train_test_split.txt: line 6: image id 7 is not in"),
    ("bounding_boxes.txt", 1, "1 0 0 10", r"bounding_boxes.txt: line 1: expected 5 fields"),
    ("parts/part_locs.txt", 16, "2 1 3.0 4.0 5", r"part_locs.txt: line 16: visible must be 0 or 1"),
    ("parts/part_locs.txt", 16, "2 99 3.0 4.0 1", r"part_locs.txt: line 16: part id 99"),
    ("parts/parts.txt", 2, "two beak", r"parts.txt: line 2: malformed"),
    ("classes.txt", 1, "1", r"classes.txt: line 1: expected 2 fields"),
    ("captions.txt", 3, None, r"captions.txt: missing line for image id 3"),
])
def test_malformed_metadata_names_file_and_line(copy, name, lineno, new, message):
    _edit(copy / name, lineno, new)
    with pytest.raises(ValueError, match=message):
        CubDataset(copy)


def test_missing_keypoints_for_an_image(copy):
    path = copy / "parts/part_locs.txt"
    lines = [l for l in path.read_text().splitlines() if not l.startswith("4 ")]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"part_locs.txt: missing line for image id 4 "
                                         r"\(images.txt line 4\)"):
        CubDataset(copy)


def test_blank_lines_are_ignored(copy):
    path = copy / "images.txt"
    path.write_text(path.read_text() + "\n\n")
    assert len(CubDataset(copy)) == 6
