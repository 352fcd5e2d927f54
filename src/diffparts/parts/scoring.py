"""Scores and keypoint transfer on a store whose parts stage is done (docs/design.md §8 "Measures").

``evaluate_store``: NMI/ARI of the categories at the keypoints and PCK of transferred keypoints
over same-class pairs; ``transfer_between``: one pair, by image id (``diffparts transfer``);
``require_features``: which transfer method a store supports; ``object_box``: an image's box.
The transfer itself is in ``transfer.py`` (relative position) and ``matching.py`` (features).
"""

from __future__ import annotations

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


def evaluate_store(root: zarr.Group, infos: Sequence[ImageInfo], max_pairs: int | None = 2000,
                   random_state: int = 0, method: str = "auto") -> dict:
    """NMI/ARI at visible keypoints and PCK over same-class pairs for the labelled images that
    have keypoints, a box and a class (docs/design.md §8 "Measures"); ``method`` as in ``transfer.METHODS``."""
    from diffparts.parts.evaluate import evaluate_parts

    method = require_features(root, method)
    usable = [i for i in labelled_images(root, infos)
              if i.keypoints is not None and i.bbox is not None and i.class_id is not None]
    if not usable:
        raise ValueError("no labelled image has keypoints, a box and a class: nothing to evaluate")
    out = evaluate_parts(lambda j: read_part_labels(root, usable[j].index), [i.keypoints for i in usable],
                         [i.bbox for i in usable], [i.size for i in usable], [i.class_id for i in usable],
                         max_pairs=max_pairs, random_state=random_state, method=method,
                         get_features=lambda j: read_features(root, usable[j].index))
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
