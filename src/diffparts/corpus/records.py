"""The typed record every corpus reader yields (BRIEF: corpus interface)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageRecord:
    """One image of a corpus and whatever annotation the corpus has for it."""

    image_id: int                # CUB image id (1-based); folder reader: 1..N in sorted path order
    name: str                    # posix path relative to images/ (or the folder root)
    path: Path                   # absolute path of the image file
    class_id: int | None = None  # CUB class id (1-based), None when unknown
    class_name: str | None = None  # e.g. "001.Black_footed_Albatross"
    is_train: bool | None = None   # train_test_split.txt: 1 = train
    bbox: tuple[float, float, float, float] | None = None  # x, y, width, height (pixels)
    # (part, 3) float32: x, y, visible; rows follow parts/parts.txt order
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)
    mask_path: Path | None = None       # segmentations/<name stem>.png, foreground mask
    part_mask_path: Path | None = None  # part_segmentations/<name stem>.png, 0 = background
    caption: str | None = None          # captions.txt (synthetic set) or text_c10 first line
    # Why the reader refused the image (outside the corpus, not a regular file, too large; see
    # corpus.safety), None if usable. A refused image is a named failure; none of it is opened.
    refused: str | None = None
