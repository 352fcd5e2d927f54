"""Hostile and broken corpus files (issue 12, items 1-4): refused by name, never opened."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffparts.corpus import (CubDataset, ImageLoadError, ReadLimits, SynthConfig, generate_birds, image_size,
                              iter_images, load_rgb, open_corpus, read_folder)
from diffparts.corpus.zoo import add_entries, png_header
from diffparts.store import describe_images

# -- an audit hook that records every file opened while a test asks it to -------------------------
_OPENED: list[str] | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: it records only while _OPENED is a list


class opened_files:
    """``with opened_files() as seen: ...``: ``seen`` lists every path opened inside the block."""

    def __enter__(self):
        global _OPENED
        _OPENED = []
        return _OPENED

    def __exit__(self, *exc):
        global _OPENED
        _OPENED = None


@pytest.fixture
def hostile(tmp_path):
    """A CUB-layout corpus of 3 good birds plus hostile entries, and the outside files it names."""
    root = generate_birds(tmp_path / "birds", n=3, seed=0, config=SynthConfig(image_size=32))
    outside = tmp_path / "outside"
    outside.mkdir()
    good = sorted((root / "images").rglob("*.png"))[0]
    Image.open(good).save(outside / "secret.png")                       # a valid image, outside
    (root / "images" / "link.png").symlink_to(outside / "secret.png")   # a link leading out
    os.mkfifo(root / "images" / "fifo.png")                              # would block a reader
    (root / "images" / "big.png").write_bytes(b"\0" * 5000)              # over the test size limit
    (root / "images" / "bomb.png").write_bytes(png_header(9000, 9000))
    names = ["../../outside/secret.png", "../../outside/missing.png", str(outside / "secret.png"),
             "link.png", "fifo.png", "big.png", "bomb.png"]
    add_entries(root, names)
    return root, outside, names


@pytest.mark.timeout(60)
def test_hostile_entries_are_refused_by_name_and_nothing_outside_is_opened(hostile):
    root, outside, names = hostile
    limits = ReadLimits(max_file_bytes=4000)
    with opened_files() as seen:
        ds = open_corpus(root, limits=limits)
        rows = describe_images(ds.records, limits)
        it = iter_images(ds, limits=limits)
        usable = [rec.name for rec, _ in it]
    refused = {rec.name: rec.refused for rec in ds}
    assert refused["../../outside/secret.png"] == "outside the corpus"
    assert refused["../../outside/missing.png"] == "outside the corpus"  # same words: existence not told
    assert refused[str(outside / "secret.png")] == "outside the corpus"
    assert refused["link.png"] == "outside the corpus"
    assert refused["fifo.png"] == "not a regular file"
    assert refused["big.png"].startswith("file too large: 5000 bytes > max_file_bytes 4000")
    assert refused["bomb.png"] is None                            # small file: refused when its header is read
    skipped = dict((rec.name, reason) for rec, reason in it.skipped)
    assert "too many pixels: 9000x9000" in skipped["bomb.png"] and "before decoding" in skipped["bomb.png"]
    assert len(usable) == 3 and set(skipped) == set(names)
    assert {r["name"]: r["sha256"] for r in rows}["link.png"] == ""
    assert any(p.endswith("images.txt") for p in seen)            # the hook sees the reader's opens
    touched = {Path(p).resolve() for p in seen}
    assert not any(p.is_relative_to(outside.resolve()) for p in touched), touched
    assert (root / "images" / "fifo.png").resolve() not in touched


def test_refused_image_gets_no_mask_or_caption_and_a_mask_link_outside_refuses_the_image(hostile):
    root, outside, _ = hostile
    ds = CubDataset(root)
    rec = next(r for r in ds if r.name == "../../outside/secret.png")
    assert rec.mask_path is None and rec.part_mask_path is None and rec.caption is None
    first = ds[0]
    mask = root / "part_segmentations" / Path(first.name).with_suffix(".png")
    mask.unlink()
    mask.symlink_to(outside / "secret.png")
    again = CubDataset(root)[0]
    assert again.refused == f"part_segmentations/{Path(first.name).with_suffix('.png').as_posix()}: outside the corpus"


def test_metadata_file_leading_outside_refuses_the_corpus(hostile):
    root, outside, _ = hostile
    (outside / "boxes.txt").write_text((root / "bounding_boxes.txt").read_text())
    (root / "bounding_boxes.txt").unlink()
    (root / "bounding_boxes.txt").symlink_to(outside / "boxes.txt")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt: outside the corpus"):
        CubDataset(root)


@pytest.mark.parametrize("line, match", [
    ("2 1.5 8.0 -20.0 38.5", r"bounding_boxes.txt: line 2: image id 2: box width and height must be > 0, "
                             r"got x=1.5 y=8 width=-20 height=38.5"),
    ("2 1.5 8.0 20.0 0", r"line 2: .*height=0"),
    ("2 nan 8.0 20.0 10", r"bounding_boxes.txt: line 2: values must be finite"),
    ("2 1.5 8.0 20.0", r"bounding_boxes.txt: line 2: expected 5 fields"),
    ("1 1.5 8.0 20.0 10", r"bounding_boxes.txt: line 2: duplicate line for image id 1"),
])
def test_malformed_box_lines_name_file_and_line(tmp_path, line, match):
    root = generate_birds(tmp_path / "birds", n=3, seed=0, config=SynthConfig(image_size=32))
    rows = (root / "bounding_boxes.txt").read_text().splitlines()
    rows[1] = line
    (root / "bounding_boxes.txt").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=match):
        CubDataset(root)


def test_unknown_part_id_and_duplicate_image_id_name_file_and_line(tmp_path):
    root = generate_birds(tmp_path / "birds", n=3, seed=0, config=SynthConfig(image_size=32))
    locs = (root / "parts" / "part_locs.txt").read_text().splitlines()
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs[:-1] + ["3 99 1 1 1"]) + "\n")
    with pytest.raises(ValueError, match=rf"part_locs.txt: line {len(locs)}: part id 99 is not in parts/parts.txt"):
        CubDataset(root)
    images = (root / "images.txt").read_text().splitlines()
    (root / "images.txt").write_text("\n".join(images + [images[0]]) + "\n")
    with pytest.raises(ValueError, match=rf"images.txt: line {len(images) + 1}: duplicate image id 1"):
        CubDataset(root)


@pytest.mark.timeout(60)
def test_folder_reader_refuses_links_out_fifos_and_big_files(tmp_path):
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(outside)
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(folder / "a.png")
    (folder / "b.png").symlink_to(outside)
    os.mkfifo(folder / "c.png")
    (folder / "d.png").write_bytes(b"\0" * 100)
    records = read_folder(folder, limits=ReadLimits(max_file_bytes=99))
    assert [(r.name, r.refused) for r in records] == [
        ("a.png", None), ("b.png", "outside the corpus"), ("c.png", "not a regular file"),
        ("d.png", "file too large: 100 bytes > max_file_bytes 99")]


@pytest.mark.timeout(60)
def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    assert image_size(path) == (30, 20)
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1) or real_load(self))
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", lambda self: decoded.append(1) or real_load(self))
    with pytest.raises(ImageLoadError, match=r"too many pixels: 30x20 = 600 > max_pixels 599"):
        load_rgb(path, limits=ReadLimits(max_pixels=599))
    assert decoded == []
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(100_000, 100_000))              # over Pillow's own bomb error too
    with pytest.raises(ImageLoadError, match="too many pixels"):
        load_rgb(bomb)
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        ReadLimits(max_pixels=0)


@pytest.mark.timeout(60)
def test_device_and_fifo_never_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    for path in (tmp_path / "pipe.png", Path("/dev/zero")):
        with pytest.raises(ImageLoadError, match="not a regular file"):
            load_rgb(path)
