"""Scores and keypoint transfer on a store whose parts stage is done (docs/design.md §8 "Measures").

``evaluate_store``: NMI/ARI of the categories at the keypoints and PCK of transferred keypoints
over same-class pairs (at most ``max_pairs``, drawn with a fixed seed in time linear in the
images: ``sample_same_class_pairs``; the output says how many pairs existed and how many were
scored); ``transfer_between``: one pair, by image id (``diffparts transfer``);
``require_features``: which transfer method a store supports; ``object_box``: an image's box.
The transfer itself is in ``transfer.py`` (relative position) and ``matching.py`` (features).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import zarr

from diffparts.parts.dataset import STAGE, ImageInfo, labelled_images, read_part_labels
from diffparts.store import has_features, read_features


def require_features(root: zarr.Group, method: str) -> str:
    """The transfer method to use (``auto``: ``features`` when the store has them, else
    ``parts``); ValueError, saying what to do, when ``method`` matches features the store lacks."""
    from diffparts.parts.transfer import METHODS

    if method == "auto":
        return "features" if has_features(root) else "parts"
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if METHODS[method] is not None and not has_features(root):
        raise ValueError(f"--method {method} matches UNet features, but the store has no features/ group: "
                         "re-extract with `diffparts extract --features` (into a new store or with "
                         "--new-version), or use --method parts")
    return method


logger = logging.getLogger(__name__)


def sample_same_class_pairs(class_ids: Sequence[int], max_pairs: int | None = 2000,
                            random_state: int = 0) -> tuple[np.ndarray, int]:
    """Ordered (source, target) pairs of different images of one class: ((pair, 2) int64, pairs in all).

    The same pairs as ``metrics.same_class_pairs`` (all of them in lexicographic order, or a
    sorted subset of ``max_pairs`` drawn with ``random_state`` by rank among them), without
    its (image, image) matrix: the ranks are drawn first and mapped to pairs through the class
    sizes, so time and memory grow with the images and ``max_pairs``, not with their square.
    """
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 1:
        raise ValueError(f"class_ids must be 1-d, got shape {class_ids.shape}")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
    _, inverse, counts = np.unique(class_ids, return_inverse=True, return_counts=True)
    per_source = (counts[inverse] - 1).astype(np.int64)  # image: its targets
    total = int(per_source.sum())
    start = np.concatenate([[0], np.cumsum(per_source)])  # image: rank of its first pair
    if max_pairs is None or max_pairs >= total:
        ranks = np.arange(total, dtype=np.int64)
    else:
        rng = np.random.default_rng(random_state)
        ranks = np.sort(rng.choice(total, size=max_pairs, replace=False)).astype(np.int64)
    source = np.searchsorted(start, ranks, side="right") - 1  # pair
    nth = ranks - start[source]  # pair: which of the source's targets, in image order
    members = np.argsort(inverse, kind="stable")  # images grouped by class, in image order
    first = np.concatenate([[0], np.cumsum(counts)])[inverse]  # image: where its class starts in members
    position = np.empty_like(members)
    position[members] = np.arange(len(members)) - first[members]  # image: its place within its class
    skip = nth >= position[source]  # targets after the source itself skip it
    target = members[first[source] + nth + skip]
    return np.stack([source, target], 1).astype(np.int64).reshape(-1, 2), total


def evaluate_store(root: zarr.Group, infos: Sequence[ImageInfo], max_pairs: int | None = 2000,
                   random_state: int = 0, method: str = "auto", log=None) -> dict:
    """NMI/ARI at visible keypoints and PCK over same-class pairs for the labelled images that
    have keypoints, a box and a class (docs/design.md §8 "Measures"); ``method`` as in ``transfer.METHODS``.

    Cost linear in the images: every image's labels are read once for NMI/ARI (the done
    markers once, not per read), at most ``max_pairs`` pairs are drawn (``sample_same_class_pairs``,
    seed ``random_state``) and scored. Logs progress every 250 images or pairs through ``log``
    (a ``str -> None`` callable, e.g. a Prefect run logger's ``info``; default this module's
    logger). The output
    adds ``pairs_available``, ``pairs_scored`` and ``pair_sampling`` (how they were chosen).
    """
    from diffparts.parts.evaluate import evaluate_parts

    method = require_features(root, method)
    usable = [i for i in labelled_images(root, infos)
              if i.keypoints is not None and i.bbox is not None and i.class_id is not None]
    if not usable:
        raise ValueError("no labelled image has keypoints, a box and a class: nothing to evaluate")
    labels = root[f"{STAGE}/labels"]  # image y x, done markers checked once by labelled_images
    pairs, total = sample_same_class_pairs([i.class_id for i in usable], max_pairs, random_state)
    log = log or logger.info
    log(f"evaluate: {len(usable)} images, {len(pairs)} of {total} same-class pairs (seed {random_state})")
    start = time.perf_counter()

    def progress(step: str, done: int, count: int) -> None:
        log(f"evaluate: {step} {done}/{count} ({time.perf_counter() - start:.1f} s)")

    out = evaluate_parts(lambda j: np.asarray(labels[usable[j].index]), [i.keypoints for i in usable],
                         [i.bbox for i in usable], [i.size for i in usable], [i.class_id for i in usable],
                         max_pairs=max_pairs, random_state=random_state, method=method,
                         get_features=lambda j: read_features(root, usable[j].index),
                         pairs=pairs, progress=progress)
    out.update(pairs_available=total, pairs_scored=int(len(pairs)),
               pair_sampling=(f"all {total} same-class pairs" if len(pairs) == total else
                              f"{len(pairs)} of {total} same-class pairs drawn uniformly, seed {random_state}"))
    return out


def object_box(root: zarr.Group, info: ImageInfo) -> tuple[float, float, float, float]:
    """The object box in image pixels: the corpus box, else the stored foreground estimate."""
    if info.bbox is not None:
        return info.bbox
    box = np.asarray(root[f"{STAGE}/box"][info.index], np.float64)     # segment-map pixels
    h, w = root[f"{STAGE}/labels"].shape[1:]
    sx, sy = info.size[0] / w, info.size[1] / h
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def transfer_between(root: zarr.Group, infos: Sequence[ImageInfo], source_id: int, target_id: int,
                     method: str = "auto") -> dict:
    """Transfer the source image's visible keypoints to the target (by corpus image id).

    method: ``auto`` (``features`` when the store has them, else ``parts``), ``parts`` (relative position through the part categories), ``features`` (cosine
    nearest neighbour of UNet features over the target image), ``features-box`` (inside the
    target's object box) or ``features-part`` (inside the corresponding part, relative
    position as the fallback); the feature methods need the store's ``features/`` group.

    Returns the predicted (x, y) per keypoint (None where not visible in the source), the part
    category each went through (0 = object box), and, when the target has keypoints, each
    transferred point's distance to the truth over max(w, h) of the target box.
    """
    from diffparts.parts.matching import transfer_by_features
    from diffparts.parts.transfer import METHODS, transfer_points

    method = require_features(root, method)
    by_id = {i.image_id: i for i in infos}
    for name, value in (("source", source_id), ("target", target_id)):
        if value not in by_id:
            raise ValueError(f"{name} image id {value} is not in the store")
    src, tgt = by_id[source_id], by_id[target_id]
    if src.keypoints is None:
        raise ValueError(f"source image {source_id} has no keypoints to transfer")
    kp = np.asarray(src.keypoints, np.float64)
    maps = read_part_labels(root, src.index), read_part_labels(root, tgt.index)
    boxes = object_box(root, src), object_box(root, tgt)
    if METHODS[method] is None:
        pred, used = transfer_points(*maps, kp[:, :2], *boxes, src.size, tgt.size)
    else:
        pred, used = transfer_by_features(read_features(root, src.index), read_features(root, tgt.index), kp[:, :2],
                                          *maps, *boxes, src.size, tgt.size, within=METHODS[method])
    visible = kp[:, 2] > 0.5
    out = {"source": source_id, "target": target_id, "method": method,
           "predicted": [[round(float(x), 2), round(float(y), 2)] if v else None
                         for (x, y), v in zip(pred, visible)],
           "category": [int(c) if v else None for c, v in zip(used, visible)]}
    if tgt.keypoints is not None:
        t = np.asarray(tgt.keypoints, np.float64)
        size = max(object_box(root, tgt)[2:])
        both = visible & (t[:, 2] > 0.5)
        dist = np.hypot(*(pred - t[:, :2]).T) / size
        out["distance"] = [round(float(d), 4) if b else None for d, b in zip(dist, both)]
        out["pck@0.1"] = float((dist[both] <= 0.1).mean()) if both.any() else None
    return out
