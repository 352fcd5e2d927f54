"""Reader for the CUB-200-2011 layout (real CUB and the synthetic birds of docs/design.md §4 "The embedded default").

Files read (relative to ``root``)::

    images.txt               <image_id> <path under images/>          (required)
    classes.txt              <class_id> <class_name>
    image_class_labels.txt   <image_id> <class_id>
    train_test_split.txt     <image_id> <is_training_image>
    bounding_boxes.txt       <image_id> <x> <y> <width> <height>
    parts/parts.txt          <part_id> <part name>
    parts/part_locs.txt      <image_id> <part_id> <x> <y> <visible>
    segmentations/<stem>.png              foreground masks (optional)
    part_segmentations/<stem>.png         part-index masks (synthetic set, optional)
    part_segmentations/parts.txt          <index> <name> legend, 0 = background (optional)
    captions.txt             <image_id> <caption>  (synthetic set), or text_c10/<stem>.txt (first line)

Only images.txt is required. A metadata file that exists must be well formed and must have a
line for every image; otherwise ValueError names the file and line number (also for a box whose
width or height is not positive, and for values that are not finite). The whole corpus is
checked when it is read, once, so no later stage meets a bad line.

Every path is checked before it is opened (``corpus.safety``): a metadata file that links outside
the corpus or is not a regular file refuses the corpus; an image (or its mask or caption file)
that resolves outside its folder, is not a regular file or is too large gives a record with
``refused`` set, which every stage reports as that image's failure.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from diffparts.corpus.cache import remembered
from diffparts.corpus.records import ImageRecord
from diffparts.corpus.safety import DEFAULT_LIMITS, CorpusFileError, ReadLimits, corpus_file, read_text_checked

SPLITS = (None, "train", "test")


def _read_table(path: Path, n_fields: int | None, types: tuple, rest: bool = False,
                limits: ReadLimits = DEFAULT_LIMITS):
    """Yield (line number, fields) of a whitespace table, ValueError on a malformed line.

    ``types`` converts the leading fields; with ``rest`` the last field takes the remainder of the
    line (names with spaces, captions). The file is opened as ``corpus.safety.open_checked`` does.
    """
    try:
        content = read_text_checked(path, limits)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    for lineno, line in enumerate(content.split("\n"), start=1):
        text = line.strip()
        if not text:
            continue
        if rest:
            parts = text.split(None, len(types))
            ok = len(parts) == len(types) + 1
        else:
            parts = text.split()
            ok = len(parts) == n_fields
        if not ok:
            raise ValueError(
                f"{path}: line {lineno}: expected {n_fields if not rest else len(types) + 1} "
                f"fields, got {text!r}")
        try:
            values = [t(p) for t, p in zip(types, parts)] + parts[len(types):]
        except ValueError:
            raise ValueError(f"{path}: line {lineno}: malformed value in {text!r}") from None
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"{path}: line {lineno}: values must be finite, got {text!r}")
        yield lineno, values


def _checked_boxes(path: Path, table):
    """bounding_boxes.txt rows, ValueError (file, line, values as written) unless width, height > 0."""
    for lineno, (image_id, x, y, w, h) in table:
        if not (w > 0 and h > 0):
            raise ValueError(f"{path}: line {lineno}: image id {image_id}: box width and height must be "
                             f"> 0, got x={x:g} y={y:g} width={w:g} height={h:g}")
        yield lineno, (image_id, x, y, w, h)


def _by_image(path: Path, table, image_lines: dict[int, int]) -> dict[int, list]:
    """Rows keyed by image id; every image needs exactly one line."""
    rows: dict[int, list] = {}
    for lineno, (image_id, *values) in table:
        if image_id not in image_lines:
            raise ValueError(f"{path}: line {lineno}: image id {image_id} is not in images.txt")
        if image_id in rows:
            raise ValueError(f"{path}: line {lineno}: duplicate line for image id {image_id}")
        rows[image_id] = values
    _check_complete(path, rows, image_lines)
    return rows


def _check_complete(path: Path, rows, image_lines: dict[int, int]) -> None:
    for image_id, lineno in image_lines.items():
        if image_id not in rows:
            raise ValueError(
                f"{path}: missing line for image id {image_id} (images.txt line {lineno})")


def _flag(value: int, path: Path, image_id: int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"{path}: image id {image_id}: flag must be 0 or 1, got {value}")
    return bool(value)


class CubDataset:
    """The images of a CUB-layout folder as :class:`ImageRecord` s.

    Parameters: ``root`` (the folder holding images.txt), ``split`` (None, "train" or "test"),
    ``classes`` (None, or class ids / class names to keep).
    Attributes: ``records``, ``part_names`` (the keypoint names of parts/parts.txt in order),
    ``part_legend`` (index -> name from part_segmentations/parts.txt, 0 = background; empty when
    absent), ``class_names`` (class id -> name).
    """

    def __init__(self, root, split: str | None = None, classes: Iterable | None = None,
                 limits: ReadLimits = DEFAULT_LIMITS):
        if split not in SPLITS:
            raise ValueError(f"split={split!r} must be one of {SPLITS}")
        self.root = Path(root).resolve()
        self.split = split
        self.limits = limits
        if not (self.root / "images.txt").is_file():
            raise FileNotFoundError(f"{self.root / 'images.txt'} not found (not a CUB-layout folder)")
        self.class_names: dict[int, str] = {}
        self.part_names: list[str] = []
        self.part_legend: dict[int, str] = {}
        all_records = self._read_remembered()
        self.records: list[ImageRecord] = self._filter(all_records, split, classes)

    def _read_remembered(self) -> list[ImageRecord]:
        """``_read_all``, or what it gave in this process while the folder is unchanged
        (``corpus.cache``: a run opens the corpus in every stage)."""
        def read():
            records = self._read_all()
            return records, dict(self.class_names), list(self.part_names), dict(self.part_legend)

        records, classes, parts, legend = remembered(("cub", str(self.root), self.limits), self.root, read)
        self.class_names, self.part_names, self.part_legend = dict(classes), list(parts), dict(legend)
        return [r if r.keypoints is None else dataclasses.replace(r, keypoints=r.keypoints.copy()) for r in records]

    def _table(self, path: Path, *args, **kwargs):
        """``_read_table`` of a metadata file, refused (ValueError) if it leads outside the corpus."""
        try:
            corpus_file(self.root, path.relative_to(self.root), self.limits)
        except CorpusFileError as err:
            raise ValueError(f"{path}: {err.reason}") from None
        return _read_table(path, *args, limits=self.limits, **kwargs)

    def _optional_file(self, folder: str, name: str | Path) -> Path | None:
        """A per-image file (mask, caption) if present; CorpusFileError if present but refused."""
        path = self.root / folder / name
        if not os.path.lexists(path):
            return None
        try:
            return corpus_file(self.root / folder, name, self.limits)
        except CorpusFileError as err:
            raise CorpusFileError(path, f"{folder}/{Path(name).as_posix()}: {err.reason}") from None

    # 1. Read every metadata file (CUB-200-2011 README).
    def _read_all(self) -> list[ImageRecord]:
        root = self.root
        path = root / "images.txt"
        names: dict[int, str] = {}
        image_lines: dict[int, int] = {}
        for lineno, (image_id, name) in self._table(path, 2, (int, str)):
            if image_id in names:
                raise ValueError(f"{path}: line {lineno}: duplicate image id {image_id}")
            names[image_id] = name
            image_lines[image_id] = lineno

        path = root / "classes.txt"
        if path.is_file():
            for lineno, (class_id, name) in self._table(path, 2, (int,), rest=True):
                if class_id in self.class_names:
                    raise ValueError(f"{path}: line {lineno}: duplicate class id {class_id}")
                self.class_names[class_id] = name

        labels = {}
        path = root / "image_class_labels.txt"
        if path.is_file():
            labels = _by_image(path, self._table(path, 2, (int, int)), image_lines)
            for image_id, (class_id,) in labels.items():
                if self.class_names and class_id not in self.class_names:
                    raise ValueError(f"{path}: image id {image_id}: class id {class_id} is not "
                                     f"in classes.txt")

        split = {}
        path = root / "train_test_split.txt"
        if path.is_file():
            split = _by_image(path, self._table(path, 2, (int, int)), image_lines)
            split = {i: _flag(v[0], path, i) for i, v in split.items()}

        boxes = {}
        path = root / "bounding_boxes.txt"
        if path.is_file():
            boxes = _by_image(path, _checked_boxes(path, self._table(path, 5, (int, float, float, float, float))),
                              image_lines)

        part_ids: dict[int, int] = {}
        path = root / "parts" / "parts.txt"
        if path.is_file():
            for lineno, (part_id, name) in self._table(path, 2, (int,), rest=True):
                if part_id in part_ids:
                    raise ValueError(f"{path}: line {lineno}: duplicate part id {part_id}")
                part_ids[part_id] = len(self.part_names)
                self.part_names.append(name)

        keypoints: dict[int, np.ndarray] = {}
        path = root / "parts" / "part_locs.txt"
        if path.is_file():
            if not part_ids:
                raise ValueError(f"{path} needs {root / 'parts' / 'parts.txt'}")
            table = self._table(path, 5, (int, int, float, float, float))
            for lineno, (image_id, part_id, x, y, vis) in table:
                if image_id not in names:
                    raise ValueError(f"{path}: line {lineno}: image id {image_id} is not in "
                                     f"images.txt")
                if part_id not in part_ids:
                    raise ValueError(f"{path}: line {lineno}: part id {part_id} is not in "
                                     f"parts/parts.txt")
                if vis not in (0.0, 1.0):
                    raise ValueError(f"{path}: line {lineno}: visible must be 0 or 1, got {vis}")
                kp = keypoints.setdefault(image_id, np.zeros((len(part_ids), 3), np.float32))
                kp[part_ids[part_id]] = (x, y, vis)
            _check_complete(path, keypoints, image_lines)

        path = root / "part_segmentations" / "parts.txt"
        if path.is_file():
            for lineno, (index, name) in self._table(path, 2, (int,), rest=True):
                self.part_legend[index] = name
            self.part_legend.setdefault(0, "background")

        captions = {}
        path = root / "captions.txt"
        if path.is_file():
            captions = {i: v[0] for i, v in
                        _by_image(path, self._table(path, 2, (int,), rest=True), image_lines).items()}

        # 2. One record per image, in images.txt order.
        records = []
        for image_id, name in names.items():
            path, mask, part_mask, caption, refused = root / "images" / name, None, None, None, None
            try:  # an image outside the corpus is refused before any of its files is looked at
                path = corpus_file(root / "images", name, self.limits)
                stem = Path(name).with_suffix(".png").as_posix()
                mask = self._optional_file("segmentations", stem)
                part_mask = self._optional_file("part_segmentations", stem)
                caption = captions.get(image_id)
                text = None if caption is not None else self._optional_file(
                    "text_c10", Path(name).with_suffix(".txt"))
                if text is not None:
                    caption = (read_text_checked(text, self.limits).splitlines() or [None])[0]
            except CorpusFileError as err:
                mask = part_mask = caption = None
                refused = err.reason
            except UnicodeDecodeError:
                caption, refused = None, f"text_c10/{Path(name).with_suffix('.txt').as_posix()}: not UTF-8 text"
            class_id = labels[image_id][0] if labels else None
            records.append(ImageRecord(
                image_id=image_id,
                name=name,
                path=path,
                refused=refused,
                class_id=class_id,
                class_name=self.class_names.get(class_id) if class_id is not None else None,
                is_train=split.get(image_id),
                bbox=tuple(boxes[image_id]) if boxes else None,
                keypoints=keypoints.get(image_id),
                mask_path=mask,
                part_mask_path=part_mask,
                caption=caption,
            ))
        return records

    # 3. Filters.
    def _filter(self, records, split, classes) -> list[ImageRecord]:
        if split is not None:
            if any(r.is_train is None for r in records):
                raise ValueError(f"split={split!r} needs {self.root / 'train_test_split.txt'}")
            want = split == "train"
            records = [r for r in records if r.is_train == want]
        if classes is not None:
            keep_ids = set()
            by_name = {name: cid for cid, name in self.class_names.items()}
            for c in classes:
                if isinstance(c, str) and not c.isdigit():
                    if c not in by_name:
                        raise ValueError(f"class {c!r} is not in {self.root / 'classes.txt'}")
                    keep_ids.add(by_name[c])
                else:
                    keep_ids.add(int(c))
            records = [r for r in records if r.class_id in keep_ids]
        return records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> ImageRecord:
        return self.records[index]

    def __repr__(self) -> str:
        return f"CubDataset({str(self.root)!r}, split={self.split!r}, n={len(self)})"
