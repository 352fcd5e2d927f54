"""Plain folder reader: recursive, common formats, sorted, deterministic ids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffparts.corpus import iter_images, read_folder


def test_recursive_sorted_formats(tmp_path):
    arr = np.full((16, 16, 3), 100, np.uint8)
    for rel, fmt in [("b.png", "PNG"), ("a.JPG", "JPEG"), ("sub/c.bmp", "BMP"),
                     ("sub/deeper/d.gif", "GIF"), ("e.tiff", "TIFF"), ("f.webp", "WEBP"),
                     ("g.jpeg", "JPEG"), ("h.tif", "TIFF")]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, format=fmt)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(arr).save(tmp_path / ".hidden" / "x.png")
    records = read_folder(tmp_path)
    names = [r.name for r in records]
    assert names == ["a.JPG", "b.png", "e.tiff", "f.webp", "g.jpeg", "h.tif", "sub/c.bmp",
                     "sub/deeper/d.gif"]
    assert [r.image_id for r in records] == list(range(1, 9))
    assert records[1].path == tmp_path.resolve() / "b.png" and records[1].class_id is None
    assert read_folder(tmp_path) == records          # deterministic
    it = iter_images(records)
    assert len(list(it)) == 8 and it.skipped == []


def test_bad_files_are_skipped_with_reason(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "fake.jpg").write_text("hello")
    it = iter_images(read_folder(tmp_path))
    assert [r.name for r, _ in it] == ["ok.png"]
    assert [(r.name, reason[:12]) for r, reason in it.skipped] == [("fake.jpg", "not an image")]


def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        read_folder(tmp_path / "missing")
