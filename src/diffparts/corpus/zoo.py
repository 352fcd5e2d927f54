"""A bad-input zoo: a CUB-layout corpus with every kind of file the pipeline must survive (issue 12).

``add_entries(root, names)`` appends images.txt lines (and copies of the last image's metadata
lines, so the corpus stays complete) for names that may be anything: ``../`` paths, absolute
paths, links, FIFOs. ``make_zoo(root, outside)`` writes the files themselves next to the good
birds of a synthetic corpus and returns ``{name: what the pipeline must say about it}``: a reason
fragment for the images it must refuse, "" for the odd ones it must convert and keep.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: Metadata tables with one line per image (copied from the last image for a new entry).
PER_IMAGE_TABLES = ("image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "captions.txt")


def png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims width x height pixels with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def add_entries(root: Path, names: list[str]) -> None:
    """Append ``names`` to images.txt with the last image's class, split, box, caption and keypoints."""
    root = Path(root)
    lines = (root / "images.txt").read_text().splitlines()
    n, last_id = len(lines), lines[-1].split()[0]
    ids = [n + 1 + k for k in range(len(names))]
    (root / "images.txt").write_text("\n".join(lines + [f"{i} {name}" for i, name in zip(ids, names)]) + "\n")
    for table in PER_IMAGE_TABLES:
        if (root / table).is_file():
            rows = (root / table).read_text().splitlines()
            rest = next(r.split(None, 1)[1] for r in rows if r.split()[0] == last_id)
            (root / table).write_text("\n".join(rows + [f"{i} {rest}" for i in ids]) + "\n")
    locs = root / "parts" / "part_locs.txt"
    if locs.is_file():
        rows = locs.read_text().splitlines()
        first = [r.split(None, 1)[1] for r in rows if r.split()[0] == last_id]
        locs.write_text("\n".join(rows + [f"{i} {rest}" for i in ids for rest in first]) + "\n")


def make_zoo(root: Path, outside: Path, size: int = 32) -> dict[str, str]:
    """Write the zoo's files into ``root/images/zoo`` (and one valid image in ``outside``).

    Returns ``{name: expected}``: for a refused image a fragment of its failure reason, for a
    kept one "" (CMYK, 16-bit, palette, transparent and very large images are converted).
    """
    root, outside = Path(root), Path(outside)
    folder = root / "images" / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(outside / "valid.png")
    Image.fromarray(rgb).save(folder / "full.png")
    (folder / "truncated.png").write_bytes((folder / "full.png").read_bytes()[:60])
    (folder / "full.png").unlink()
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(folder / "grey16.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    rgba = np.dstack([rgb, np.where(np.arange(size)[None] < size // 2, 0, 255).repeat(size, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    Image.fromarray(rgb[:1, :1]).save(folder / "one_pixel.png")
    Image.fromarray(np.kron(rgb, np.ones((40, 60, 1), np.uint8))).save(folder / "large.png")  # 1920 x 1280
    (folder / "bomb.png").write_bytes(png_header(9000, 9000))
    (folder / "link_out.png").symlink_to(outside / "valid.png")
    os.mkfifo(folder / "fifo.png")
    expected = {
        "zoo/truncated.png": "unreadable or truncated",
        "zoo/empty.png": "not an image",
        "zoo/cmyk.jpg": "",
        "zoo/grey16.png": "",
        "zoo/palette.png": "",
        "zoo/transparent.png": "",
        "zoo/one_pixel.png": "too small",
        "zoo/large.png": "",
        "zoo/bomb.png": "too many pixels",
        "zoo/link_out.png": "outside the corpus",
        "zoo/fifo.png": "not a regular file",
        f"../../{outside.name}/valid.png": "outside the corpus",
        "../../../../../../../../etc/hostname": "outside the corpus",
        "/etc/hostname": "outside the corpus",
        "../../../../../../../../dev/zero": "outside the corpus",
        "zoo/missing.png": "file not found",
    }
    add_entries(root, list(expected))
    return expected
