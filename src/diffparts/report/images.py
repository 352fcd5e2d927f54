"""Pictures as PNG ``data:`` URIs that fit a byte budget (issue 13 items 3 and 5).

A ``data:`` URI puts the picture inside the text that shows it: a Prefect markdown artifact
(the dashboard renders it with no access to this machine's files) or the HTML report (one file
that opens with no server). Both want it small, so the picture is downscaled to ``max_side``
and then, while its URI is longer than ``max_bytes``, re-encoded with a 256-colour palette
(which keeps the picture's flat colours exact, so no two part colours merge) and shrunk again.

Prefect's limits (read from the Prefect 3.9 source): the artifact table stores ``data`` in a
JSON column with no size check, but every keyed artifact also emits an ``artifact-collection``
lifecycle event carrying its data, and the server refuses (logs "Refusing to publish event of
size ...", drops) any event over ``PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES``, 1,500,000 bytes
by default (``prefect/server/events/messaging.py``, ``settings/models/server/events.py``). So
one artifact is kept under :data:`ARTIFACT_MAX_BYTES`, which leaves room for the event's JSON,
and one picture under :data:`PICTURE_MAX_BYTES`, so a few of them fit one artifact.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

#: One markdown artifact's text at most (Prefect drops lifecycle events over 1.5 MB).
ARTIFACT_MAX_BYTES = 1_000_000
#: One picture's ``data:`` URI at most, by default (three fit an artifact with room for text).
PICTURE_MAX_BYTES = 300_000
#: Longest side by default: wide enough for a 16-image overlay grid to stay legible.
PICTURE_MAX_SIDE = 1024
#: Smallest side the shrinking goes down to before giving up (a smaller picture shows nothing).
MIN_SIDE = 16

PREFIX = "data:image/png;base64,"


def _open(picture) -> Image.Image:
    """A PIL image from a path, an (y, x[, 3|4]) array or a PIL image."""
    if isinstance(picture, Image.Image):
        img = picture
    elif isinstance(picture, (str, Path)):
        with Image.open(picture) as opened:
            opened.load()
            img = opened.copy()
    else:
        array = np.asarray(picture)
        if array.dtype != np.uint8:
            raise ValueError(f"a picture array must be uint8, got {array.dtype}")
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
            raise ValueError(f"a picture array must be (y, x), (y, x, 3) or (y, x, 4), got {array.shape}")
        img = Image.fromarray(array)
    if img.mode not in ("RGB", "RGBA", "L"):
        img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    return img


def _scaled(img: Image.Image, side: int) -> Image.Image:
    if max(img.size) <= side:
        return img
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


#: Palette entries kept for the picture's most frequent exact colours (the flat fills: legend
#: swatches, category colours, backgrounds); the rest of the 256 come from median cut.
KEPT_COLOURS = 64
#: A colour is "flat" (kept) when at least this many pixels have it exactly.
KEPT_MIN_PIXELS = 24


def _palette_image(img: Image.Image) -> Image.Image:
    """``img`` (RGB) with 256 colours that keep its flat colours exact and distinct.

    Median cut alone merges colours of small areas: two parts' colours in an overlay's legend
    (a few hundred pixels each) came out as one (issue 21). So the palette holds, first, the
    up to :data:`KEPT_COLOURS` most frequent exact colours with at least :data:`KEPT_MIN_PIXELS`
    pixels each, then median cut's colours for the rest; each pixel takes its nearest entry,
    and a kept colour is its own nearest entry."""
    counts = img.getcolors(maxcolors=img.width * img.height) or []
    kept = [colour for n, colour in sorted(counts, reverse=True)[:KEPT_COLOURS] if n >= KEPT_MIN_PIXELS]
    rest = img.quantize(256 - len(kept), method=Image.Quantize.MEDIANCUT).getpalette()[: 3 * (256 - len(kept))]
    entries = [v for colour in kept for v in colour] + rest
    entries += entries[-3:] * ((768 - len(entries)) // 3)
    reference = Image.new("P", (1, 1))
    reference.putpalette(entries[:768])
    return img.quantize(palette=reference, dither=Image.Dither.NONE)


def _uri(img: Image.Image, palette: bool) -> str:
    if palette and img.mode == "RGB":
        img = _palette_image(img)
    elif palette and img.mode == "RGBA":
        img = img.quantize(256, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return PREFIX + base64.b64encode(buf.getvalue()).decode("ascii")


def png_data_uri(picture, max_side: int = PICTURE_MAX_SIDE, max_bytes: int = PICTURE_MAX_BYTES) -> str:
    """``data:image/png;base64,...`` of ``picture`` (a path, a uint8 array or a PIL image).

    Longest side at most ``max_side``; the whole URI (prefix included) at most ``max_bytes``
    characters: first full colour, then a 256-colour palette, then smaller by the square root of
    the excess each round. Raises ValueError if even a ``MIN_SIDE`` picture does not fit, or for
    a bad argument (OSError from PIL for an unreadable file).
    """
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if max_bytes < len(PREFIX) + 100:
        raise ValueError(f"max_bytes must leave room for a picture, got {max_bytes}")
    img = _scaled(_open(picture), int(max_side))
    uri = _uri(img, palette=False)
    if len(uri) <= max_bytes:
        return uri
    while True:
        uri = _uri(img, palette=True)
        if len(uri) <= max_bytes:
            return uri
        side = max(img.size)
        if side <= MIN_SIDE:
            raise ValueError(f"a {img.width}x{img.height} picture still needs {len(uri)} bytes > max_bytes {max_bytes}")
        # encoded size grows about with the area: shrink the side by the square root, a bit more
        target = int(side * 0.9 * (max_bytes / len(uri)) ** 0.5)
        img = _scaled(img, max(MIN_SIDE, min(target, side - 1)))


def decode_data_uri(uri: str) -> bytes:
    """The PNG bytes of a URI made by :func:`png_data_uri` (ValueError for anything else)."""
    if not uri.startswith(PREFIX):
        raise ValueError(f"not a PNG data URI: {uri[:40]!r}")
    return base64.b64decode(uri[len(PREFIX):], validate=True)
