"""Evaluation of part maps at keypoints (docs/design.md §8 "Measures"): NMI/ARI at visible keypoints and
PCK@0.05/0.1 of keypoints transferred over same-class pairs, by either transfer method.

The transfer methods (``transfer.METHODS``) are the relative position through the parts
(``transfer.transfer_points``) and feature matching (``matching.transfer_by_features``); this
module sits above both (matching falls back on transfer; neither imports this one).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from diffparts.metrics import KeypointPartScores, PCKScores, same_class_pairs
from diffparts.parts.matching import transfer_by_features
from diffparts.parts.transfer import METHODS, transfer_points


def evaluate_parts(get_map: Callable[[int], np.ndarray], keypoints: Sequence[np.ndarray],
                   boxes: Sequence, sizes: Sequence[tuple[int, int]], class_ids: Sequence[int],
                   max_pairs: int | None = 2000, random_state: int = 0,
                   flips: Sequence[bool] | None = None, within: str = "part", method: str = "parts",
                   get_features: Callable[[int], np.ndarray] | None = None) -> dict:
    """NMI/ARI at visible keypoints and PCK@0.05/0.1 over same-class pairs.

    get_map(i) -> (y, x) part-category map of image i (0 = background); keypoints[i]
    (part, 3) x, y, visible; boxes[i] (x, y, w, h); sizes[i] (width, height) in image pixels;
    class_ids[i] the class (pairs are drawn among images of the same class, at most max_pairs,
    seeded). flips[i]: whether image i faces the other way (transfer mirrors between the two);
    None: decided per pair from the part maps (``relative_flip``). method: a key of ``METHODS``;
    the feature methods need get_features(i) -> (channel, fy, fx) UNet features of image i.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if METHODS[method] is not None and get_features is None:
        raise ValueError(f"method {method!r} matches UNet features: give get_features")
    n = len(keypoints)
    if not (len(boxes) == len(sizes) == len(class_ids) == n):
        raise ValueError(f"got {n} keypoint arrays, {len(boxes)} boxes, {len(sizes)} sizes, "
                         f"{len(class_ids)} class ids")
    # 1. NMI/ARI at visible keypoints, pooled over the images (metrics module).
    kp_scores = KeypointPartScores()
    cache: dict[int, np.ndarray] = {}

    def cached(i: int) -> np.ndarray:
        if i not in cache:
            if len(cache) > 256:
                cache.pop(next(iter(cache)))
            cache[i] = np.asarray(get_map(i))
        return cache[i]

    for i in range(n):
        w, h = sizes[i]
        kp_scores.update(cached(i), keypoints[i], image_shape=(h, w))
    agreement = kp_scores.result()

    # 2. PCK over same-class pairs (metrics module draws and scores the pairs).
    pairs = same_class_pairs(np.asarray(class_ids), max_pairs=max_pairs, random_state=random_state)
    pck = PCKScores()
    via_part = 0
    n_points = 0
    for s, t in pairs:
        kp_s = np.asarray(keypoints[s], np.float64)
        flip = bool(flips[s]) != bool(flips[t]) if flips is not None else None
        if METHODS[method] is None:
            pred, used = transfer_points(cached(int(s)), cached(int(t)), kp_s[:, :2], boxes[s], boxes[t],
                                         sizes[s], sizes[t], flip=flip, within=within)
        else:
            pred, used = transfer_by_features(get_features(int(s)), get_features(int(t)), kp_s[:, :2],
                                              cached(int(s)), cached(int(t)), boxes[s], boxes[t], sizes[s],
                                              sizes[t], within=METHODS[method], flip=flip)
        pred[kp_s[:, 2] <= 0.5] = np.nan
        vis = kp_s[:, 2] > 0.5
        via_part += int((used[vis] > 0).sum())
        n_points += int(vis.sum())
        pck.update(pred, kp_s, keypoints[t], boxes[t])
    res = pck.result()
    return {
        "nmi": agreement.nmi, "ari": agreement.ari, "n_keypoints": agreement.n_keypoints,
        "n_images": agreement.n_images,
        "pck@0.05": res.pck.get(0.05, float("nan")), "pck@0.1": res.pck.get(0.1, float("nan")),
        "n_pairs": res.n_pairs, "n_pair_keypoints": res.n_keypoints,
        "share_via_part": via_part / max(n_points, 1),
    }
