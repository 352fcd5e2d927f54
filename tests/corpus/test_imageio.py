"""Safe image loading: every bad-input case of issue 2, with files made in tmp_path."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from diffparts.corpus import ImageLoadError, ImageRecord, iter_images, load_mask, load_rgb


def _rgb(h=20, w=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_and_jpeg_roundtrip(tmp_path):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), arr)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = load_rgb(tmp_path / "a.jpg")
    assert out.shape == (20, 24, 3) and out.dtype == np.uint8


def test_greyscale_becomes_rgb(tmp_path):
    grey = np.arange(20 * 24, dtype=np.uint8).reshape(20, 24)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (20, 24, 3)
    np.testing.assert_array_equal(out[..., 0], grey)
    np.testing.assert_array_equal(out[..., 2], grey)


def test_sixteen_bit_is_scaled_to_eight_bit(tmp_path):
    grey16 = np.array([[0, 257, 65535, 32896]] * 16, dtype=np.uint16)
    grey16 = np.tile(grey16, (1, 4))                                  # 16 x 16
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    out = load_rgb(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    assert out[0, :4, 0].tolist() == [0, 1, 255, 128]


def _write_png16(path, arr):
    """A 16-bit-per-channel RGB (3) or RGBA (4) PNG, written by hand (Pillow cannot)."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_sixteen_bit_colour_is_eight_bit(tmp_path):
    rgb16 = np.zeros((16, 16, 3), np.uint16)
    rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32896, 257
    _write_png16(tmp_path / "c16.png", rgb16)
    assert load_rgb(tmp_path / "c16.png")[0, 0].tolist() == [255, 128, 1]
    rgba16 = np.zeros((16, 16, 4), np.uint16)
    rgba16[..., 0] = 65535                   # red, fully transparent -> white
    _write_png16(tmp_path / "a16.png", rgba16)
    assert load_rgb(tmp_path / "a16.png")[0, 0].tolist() == [255, 255, 255]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., 0] = 200                      # red
    rgba[:, :8, 3] = 255                    # left half opaque, right half transparent
    rgba[:, 8:12, 3] = 0
    rgba[:, 12:, 3] = 128                   # half transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[0, 9].tolist() == [255, 255, 255]
    assert out[0, 13].tolist() == [227, 127, 127]      # 200*a + 255*(1-a) = 227.4, a = 128/255
    la = Image.fromarray(rgba[..., [0, 3]], mode="LA")
    la.save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png")[0, 9].tolist() == [255, 255, 255]


def test_cmyk_becomes_rgb(tmp_path):
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[..., 0] = 255                      # full cyan -> (0, 255, 255)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=100)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    for name in ("c.jpg", "c.tif"):
        out = load_rgb(tmp_path / name)
        assert out.shape == (16, 16, 3)
        assert abs(int(out[8, 8, 0]) - 0) < 10 and out[8, 8, 1] > 245 and out[8, 8, 2] > 245, name


def test_palette_and_gif(tmp_path):
    img = Image.fromarray(_rgb(16, 16)).convert("P")
    img.save(tmp_path / "p.gif")
    assert load_rgb(tmp_path / "p.gif").shape == (16, 16, 3)


def test_truncated_file_is_reported(tmp_path):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="t.png: unreadable or truncated") as err:
        load_rgb(tmp_path / "t.png")
    assert isinstance(err.value, ValueError) and err.value.path.name == "t.png"


def test_non_image_and_missing_and_empty(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    with pytest.raises(ImageLoadError, match="notes.png: not an image"):
        load_rgb(tmp_path / "notes.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.jpg"):
        load_rgb(tmp_path / "empty.jpg")
    with pytest.raises(ImageLoadError, match="file not found"):
        load_rgb(tmp_path / "nope.png")


def test_too_small_is_reported(tmp_path):
    Image.fromarray(_rgb(8, 40)).save(tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match=r"small.png: too small: 40x8 < 16 px"):
        load_rgb(tmp_path / "small.png")
    assert load_rgb(tmp_path / "small.png", min_size=8).shape == (8, 40, 3)


def test_float_image_is_reported(tmp_path):
    Image.fromarray(np.ones((16, 16), np.float32), mode="F").save(tmp_path / "f.tif")
    with pytest.raises(ImageLoadError, match="unsupported pixel mode 'F'"):
        load_rgb(tmp_path / "f.tif")


def test_iter_images_skips_and_collects_reasons(tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.fromarray(_rgb(4, 4)).save(tmp_path / "tiny.png")
    records = [ImageRecord(i, p, tmp_path / p) for i, p in
               enumerate(["good.png", "bad.png", "tiny.png"], start=1)]
    it = iter_images(records)
    got = [(r.name, rgb.shape) for r, rgb in it]
    assert got == [("good.png", (20, 24, 3))]
    assert [r.name for r, _ in it.skipped] == ["bad.png", "tiny.png"]
    assert it.skipped[0][1].startswith("unreadable or truncated image")
    assert it.skipped[1][1] == "too small: 4x4 < 16 px"


def test_load_mask(tmp_path):
    m = (np.arange(256, dtype=np.uint8).reshape(16, 16) % 10)
    Image.fromarray(m, mode="L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), m)
    Image.fromarray(m > 4).save(tmp_path / "b.png")           # mode "1"
    np.testing.assert_array_equal(load_mask(tmp_path / "b.png"), (m > 4) * 255)


def test_load_rgb_max_side_shrinks_while_reading(tmp_path):
    from PIL import Image

    from diffparts.corpus import load_rgb

    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1000), (200, 10, 10)).save(path)
    small = load_rgb(path, max_side=256)
    assert small.shape == (128, 256, 3) and abs(int(small[64, 128, 0]) - 200) < 8
    assert load_rgb(path).shape == (1000, 2000, 3)                      # default: unchanged
    assert load_rgb(path, max_side=4000).shape == (1000, 2000, 3)
