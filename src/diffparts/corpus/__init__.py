"""Image corpora: the CUB-200-2011 reader, a folder reader, safe image loading, synthetic birds."""

from __future__ import annotations

from pathlib import Path

from diffparts.corpus.cub import CubDataset
from diffparts.corpus.folder import IMAGE_EXTENSIONS, read_folder
from diffparts.corpus.imageio import ImageIterator, ImageLoadError, image_size, iter_images, load_mask, load_rgb
from diffparts.corpus.records import ImageRecord
from diffparts.corpus.safety import DEFAULT_LIMITS, CorpusFileError, ReadLimits
from diffparts.corpus.synth import CAPTION_WORDS, CUB_KEYPOINTS, PART_NAMES, SynthConfig, generate_birds


def open_corpus(path, split: str | None = None, classes=None,
                limits: ReadLimits = DEFAULT_LIMITS) -> CubDataset | list[ImageRecord]:
    """A CUB-layout dataset when ``path/images.txt`` exists, else the folder's images.

    ``limits``: file size and pixel limits (``corpus.safety``); refused images come back as
    records with ``refused`` set.
    """
    path = Path(path)
    if (path / "images.txt").is_file():
        return CubDataset(path, split=split, classes=classes, limits=limits)
    if split is not None or classes is not None:
        raise ValueError(f"{path} is a plain folder: split={split!r} / classes={classes!r} need "
                         f"the CUB layout")
    return read_folder(path, limits=limits)


__all__ = [
    "CAPTION_WORDS", "CUB_KEYPOINTS", "DEFAULT_LIMITS", "IMAGE_EXTENSIONS", "PART_NAMES", "CorpusFileError",
    "CubDataset", "ReadLimits",
    "ImageIterator", "ImageLoadError", "ImageRecord", "image_size", "SynthConfig", "generate_birds",
    "iter_images", "load_mask", "load_rgb", "open_corpus", "read_folder",
]
