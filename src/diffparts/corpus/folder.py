"""Reader for a plain folder of images (recursive, common formats)."""

from __future__ import annotations

from pathlib import Path

from diffparts.corpus.records import ImageRecord
from diffparts.corpus.safety import DEFAULT_LIMITS, CorpusFileError, ReadLimits, corpus_file

# Suffixes (lower case) taken as images; other files are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_folder(root, extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
                limits: ReadLimits = DEFAULT_LIMITS) -> list[ImageRecord]:
    """Every image file under ``root`` (recursive, hidden files and folders skipped), as records.

    Records are sorted by their posix path relative to ``root``; ``image_id`` is 1..N in that
    order, so ids are deterministic for a given folder. Files are not decoded here: bad files are
    reported when read (see :func:`diffparts.corpus.imageio.iter_images`). An entry with an image
    suffix that links outside ``root``, is not a regular file (a FIFO) or is over
    ``limits.max_file_bytes`` gets a record with ``refused`` set (``corpus.safety``).
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    exts = {e.lower() for e in extensions}
    names = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in exts and not p.is_dir()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    records = []
    for i, name in enumerate(names, start=1):
        try:
            records.append(ImageRecord(image_id=i, name=name, path=corpus_file(root, name, limits)))
        except CorpusFileError as err:
            records.append(ImageRecord(image_id=i, name=name, path=root / name, refused=err.reason))
    return records
