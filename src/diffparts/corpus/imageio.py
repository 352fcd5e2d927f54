"""Loading images and masks safely: convert what is safe to RGB, report the rest.

Conversions (issue 2, bad input):
- greyscale (L, 1, I, I;16) -> RGB by repeating the channel; 16-bit and 32-bit integer images are
  scaled to 8 bit (value * 255 / 65535, rounded); 16-bit colour PNGs come to 8 bit from Pillow
  itself (high byte);
- CMYK, YCbCr, LAB, HSV -> RGB with Pillow's conversion;
- an alpha channel (RGBA, LA, PA, palette with transparency) is composited on WHITE;
- palette images -> RGB; multi-frame files (GIF, TIFF) -> the first frame;
- the EXIF orientation tag is applied.
Everything else (unreadable or truncated file, not an image, float images, an image smaller than
``min_size`` on a side, a file that is not regular or is over ``ReadLimits.max_file_bytes``, an
image whose header says more than ``ReadLimits.max_pixels`` pixels: refused before decoding) raises
:class:`ImageLoadError` with the file name and reason; :class:`ImageIterator` turns those errors
into a ``skipped`` list and goes on, as it does for records the corpus reader already refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffparts.corpus.safety import DEFAULT_LIMITS, CorpusFileError, ReadLimits, open_checked

DEFAULT_MIN_SIZE = 16  # smallest side (pixels) an image may have; the model's latent needs >= 8


class ImageLoadError(CorpusFileError):
    """An image that cannot be used: ``path`` and ``reason`` say which and why."""


def _check_pixels(path: Path, img: Image.Image, limits: ReadLimits) -> None:
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageLoadError(path, f"too many pixels: {w}x{h} = {w * h} > max_pixels {limits.max_pixels} "
                                   "(refused before decoding)")


def _header(path: Path, limits: ReadLimits, decode: bool) -> Image.Image:
    """Open through ``open_checked``, check the header's pixel count, then (``decode``) the
    first frame; every failure is an ImageLoadError naming the reason."""
    try:
        fh = open_checked(path, limits)
    except CorpusFileError as err:
        raise ImageLoadError(path, err.reason) from None
    with fh:
        try:
            img = Image.open(fh)
            _check_pixels(path, img, limits)
            if decode:
                img.seek(0)
                img.load()
        except ImageLoadError:
            raise
        except UnidentifiedImageError:
            raise ImageLoadError(path, "not an image (unrecognised format)") from None
        except Image.DecompressionBombError as err:
            raise ImageLoadError(path, f"too many pixels ({err})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise ImageLoadError(path, f"unreadable or truncated image ({err})") from None
    return img


def _open(path, limits: ReadLimits = DEFAULT_LIMITS) -> Image.Image:
    """Open, check the header against ``limits``, then decode the first frame."""
    img = _header(Path(path), limits, decode=True)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
    return img


def image_size(path, limits: ReadLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(width, height) from the header only; ImageLoadError as :func:`load_rgb` would raise."""
    img = _header(Path(path), limits, decode=False)
    width, height = img.size
    img.close()
    return int(width), int(height)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Integer image of 16 (or 32) bits -> 8 bits."""
    top = 65535.0 if arr.max(initial=0) <= 65535 else float(np.iinfo(np.int32).max)
    return np.clip(np.rint(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def _composite_on_white(img: Image.Image) -> np.ndarray:
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)        # y x 4
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image, path="<image>") -> np.ndarray:
    """A loaded Pillow image -> (y, x, 3) uint8, or ImageLoadError when no safe conversion exists."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img)
    if mode in ("L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode == "I":
        grey = _scale_to_uint8(np.asarray(img).astype(np.int64))
        return np.repeat(grey[..., None], 3, axis=2)
    raise ImageLoadError(path, f"unsupported pixel mode {mode!r}")


def load_rgb(path, min_size: int = DEFAULT_MIN_SIZE, limits: ReadLimits = DEFAULT_LIMITS,
             max_side: int | None = None) -> np.ndarray:
    """Read an image file as (y, x, 3) uint8 RGB; raises ImageLoadError(path, reason).

    ``max_side``: shrink an image whose longer side is larger to that side (aspect kept) while
    it is read (JPEG decodes at a reduced scale), before any conversion, so a picture of a huge
    image costs what a picture of a small one does.
    """
    img = _open(path, limits)
    if min(img.size) < min_size:
        raise ImageLoadError(path, f"too small: {img.size[0]}x{img.size[1]} < {min_size} px")
    if max_side is not None and max(img.size) > max_side:
        img.draft(img.mode, (max_side, max_side))
        img.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return to_rgb(img, path)


def load_mask(path, limits: ReadLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read a mask (foreground or part index) as (y, x) uint8; colour masks are made grey."""
    img = _open(path, limits)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if img.mode.startswith("I;16") or img.mode == "I":
        return _scale_to_uint8(np.asarray(img).astype(np.int64))
    if img.mode in ("RGB", "RGBA", "LA", "CMYK"):
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()
    raise ImageLoadError(path, f"unsupported mask mode {img.mode!r}")


class ImageIterator:
    """Iterate ``(record, rgb)`` over records, skipping bad images.

    ``skipped`` collects ``(record, reason)`` for every image that could not be used; it is
    complete once iteration has finished.
    """

    def __init__(self, records: Iterable, min_size: int = DEFAULT_MIN_SIZE, limits: ReadLimits = DEFAULT_LIMITS):
        self.records = records
        self.min_size = min_size
        self.limits = limits
        self.skipped: list[tuple[object, str]] = []

    def __iter__(self) -> Iterator[tuple[object, np.ndarray]]:
        self.skipped = []
        for record in self.records:
            if getattr(record, "refused", None):  # refused by the reader: never opened
                self.skipped.append((record, record.refused))
                continue
            try:
                rgb = load_rgb(record.path, self.min_size, self.limits)
            except ImageLoadError as err:
                self.skipped.append((record, err.reason))
                continue
            yield record, rgb


def iter_images(records: Iterable, min_size: int = DEFAULT_MIN_SIZE,
                limits: ReadLimits = DEFAULT_LIMITS) -> ImageIterator:
    """``for record, rgb in (it := iter_images(records)): ...``; then ``it.skipped``."""
    return ImageIterator(records, min_size, limits)
