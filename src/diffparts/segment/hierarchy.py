"""Nested segment levels and HSG's transition matrices (Ke et al., CVPR 2022; docs/design.md §5.4 "Hierarchy").

A hierarchy is ``level_labels`` (level, y, x) int, level 0 the FINEST, labels 0..K_l-1 at every
level. Levels are nested when every fine segment lies inside one coarse segment. HSG writes the
assignment of pixels to level l+1 as that to level l times a transition matrix:

    P_{l+1} = P_l C_l^{l+1},   C_l^{l+1}(a, b) = P(G_{l+1} = b | G_l = a)

with P_l (pixel, segment_l) the (one-hot) assignment. For nested levels every row of C holds a
single 1; for levels that are not nested, C is the fraction of fine segment a's pixels in coarse
segment b (soft, as HSG's), and ``reproduce_levels`` takes the argmax.

Two sources of nested levels:

- ``diffseg_levels``: a DiffSeg threshold sweep, nested by construction: level 0 is DiffSeg at
  the first threshold; each coarser level merges the previous level's proposals with one greedy
  round at a larger threshold (docs/design.md §5.2 "DiffSeg merge" step 4), takes the argmax of the merged proposals, and
  gives every previous-level segment the coarse label that covers most of its pixels (a majority
  vote, so coarse segments are unions of fine ones);
- the random-walk NCut tree (``diffparts.segment.ncut.RecursiveNCut.level_labels_``), nested
  because every cut splits one segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffparts.segment.diffseg import DiffSeg, merge_proposals, proposals_to_labels

__all__ = [
    "check_nested",
    "diffseg_levels",
    "parents_from_levels",
    "relabel",
    "reproduce_levels",
    "segment_levels",
    "transition_matrices",
]


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..K-1 in order of their values, same shape, int32."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


def _check_levels(level_labels) -> np.ndarray:
    level_labels = np.asarray(level_labels)
    if level_labels.ndim != 3 or level_labels.shape[0] < 1 or level_labels[0].size == 0:
        raise ValueError(f"level_labels must be (level, y, x) with at least one level, got shape {level_labels.shape}")
    if not np.issubdtype(level_labels.dtype, np.integer):
        raise ValueError(f"level_labels must be integers, got dtype {level_labels.dtype}")
    for level, labels in enumerate(level_labels):
        present = np.unique(labels)
        if present[0] != 0 or present[-1] != len(present) - 1:
            raise ValueError(
                f"labels at level {level} must be 0..K-1 with every label present, got {present[:10].tolist()}"
            )
    return level_labels


def _joint_counts(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """(segment_fine, segment_coarse) pixel counts of two label maps 0..K-1."""
    n_fine, n_coarse = int(fine.max()) + 1, int(coarse.max()) + 1
    joint = np.bincount(fine.ravel().astype(np.int64) * n_coarse + coarse.ravel(), minlength=n_fine * n_coarse)
    return joint.reshape(n_fine, n_coarse)


def transition_matrices(level_labels: np.ndarray) -> list[np.ndarray]:
    """HSG transition matrices [C_0^1, ..., C_{L-2}^{L-1}], each (segment_l, segment_{l+1}) float64.

    C_l^{l+1}(a, b) = fraction of level-l segment a's pixels that lie in level-(l+1) segment b,
    i.e. P(G_{l+1} = b | G_l = a); rows sum to 1. One-hot rows when the levels are nested.
    """
    level_labels = _check_levels(level_labels)
    matrices = []
    for fine, coarse in zip(level_labels[:-1], level_labels[1:]):
        counts = _joint_counts(fine, coarse).astype(np.float64)  # segment_l segment_l+1
        matrices.append(counts / counts.sum(1, keepdims=True))
    return matrices


def reproduce_levels(finest: np.ndarray, transitions: Sequence[np.ndarray]) -> np.ndarray:
    """Every level from the finest labels (y, x) by P_{l+1} = P_l C_l^{l+1}: (level, y, x) int32.

    P_0 is the one-hot assignment of pixels to the finest segments; each level's label is the
    argmax of its P_l (exact for nested levels).
    """
    finest = np.asarray(finest)
    if finest.ndim != 2 or not np.issubdtype(finest.dtype, np.integer) or finest.min() < 0:
        raise ValueError(f"finest must be (y, x) non-negative integer labels, got {finest.dtype} {finest.shape}")
    n_segments = int(finest.max()) + 1
    # P_l restricted to one row per level-0 segment: every pixel of a fine segment has the same row
    assignment = np.eye(n_segments)  # segment_0 segment_l
    levels = [finest.astype(np.int32)]
    for level, matrix in enumerate(transitions):
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] != assignment.shape[1]:
            raise ValueError(
                f"transition {level} has shape {matrix.shape}; expected ({assignment.shape[1]}, segments)"
            )
        assignment = assignment @ matrix  # segment_0 segment_l+1
        levels.append(assignment.argmax(1)[finest].astype(np.int32))
    return np.stack(levels)  # level y x


def check_nested(level_labels: np.ndarray) -> None:
    """Raise ValueError naming the first fine segment that straddles two coarse segments."""
    level_labels = _check_levels(level_labels)
    for level, (fine, coarse) in enumerate(zip(level_labels[:-1], level_labels[1:])):
        counts = _joint_counts(fine, coarse)  # segment_l segment_l+1
        straddling = np.flatnonzero((counts > 0).sum(1) > 1)
        if len(straddling):
            a = int(straddling[0])
            parts = np.flatnonzero(counts[a]).tolist()
            raise ValueError(
                f"levels are not nested: segment {a} of level {level} straddles segments {parts} of "
                f"level {level + 1} ({len(straddling)} straddling segments at that level)"
            )


def parents_from_levels(level_labels: np.ndarray) -> list[np.ndarray]:
    """For nested levels, the parent of every segment: list over l of (segment_l,) int32 labels at l+1.

    The storable form of the tree: C_l^{l+1}(a, b) = 1 where parents[l][a] == b.
    """
    check_nested(level_labels)
    return [m.argmax(1).astype(np.int32) for m in transition_matrices(level_labels)]


def diffseg_levels(
    attn: np.ndarray,
    level_thresholds: Sequence[float],
    rounds: int = 3,
    anchors_per_side: int = 16,
    out_size: int | tuple[int, int] | None = None,
    eps: float = 1e-10,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Nested levels from a DiffSeg threshold sweep: ((level, y, x) int32, transitions).

    level_thresholds: non-decreasing KL thresholds, one per level, finest first. Level 0 is
    ``DiffSeg(kl_thresholds=(t_0,) * rounds)``; level l > 0 merges level l-1's proposals with one
    greedy round at t_l, takes the argmax of the merged proposals and gives each level-(l-1)
    segment the merged label covering most of its pixels (so the levels nest by construction).
    """
    thresholds = [float(t) for t in level_thresholds]
    if len(thresholds) == 0:
        raise ValueError("level_thresholds must hold at least one threshold")
    if any(b < a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"level_thresholds must be non-decreasing (finest first), got {thresholds}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    # 1. Finest level: the DiffSeg merge itself (docs/design.md §5.2 "DiffSeg merge")
    model = DiffSeg((thresholds[0],) * rounds, anchors_per_side, False, out_size, eps).fit(attn)
    labels, proposals = model.labels_, model.proposals_  # y x ; segment ky kx
    _, ky, kx = proposals.shape
    levels = [labels]

    # 2. Coarser levels: merge the surviving proposals, then vote per fine segment (nesting)
    for threshold in thresholds[1:]:
        merged, _ = merge_proposals(proposals.reshape(len(proposals), -1), threshold, eps)
        merged = merged.reshape(-1, ky, kx)  # segment ky kx
        raw = proposals_to_labels(merged, labels.shape)  # y x, indices into merged
        votes = _joint_counts(labels, raw)  # segment_fine segment_merged
        coarse_of_fine = votes.argmax(1)  # segment_fine
        used, coarse_of_fine = np.unique(coarse_of_fine, return_inverse=True)
        labels = coarse_of_fine[labels].astype(np.int32)
        proposals = merged[used]  # segment ky kx, in the new label order
        levels.append(labels)

    level_labels = np.stack(levels)  # level y x
    return level_labels, transition_matrices(level_labels)


METHODS = ("diffseg", "ncut")


def segment_levels(
    attn: np.ndarray,
    method: str = "diffseg",
    level_thresholds: Sequence[float] = (1.1,),
    rounds: int = 3,
    anchors_per_side: int = 16,
    out_size: int | tuple[int, int] | None = None,
    eps: float = 1e-10,
    ncut_params: dict | None = None,
) -> np.ndarray:
    """Nested levels (level, y, x) int32 of one image by ``method`` (what the segment flow stores).

    ``"diffseg"``: ``diffseg_levels(attn, level_thresholds, rounds, ...)``; ``"ncut"``:
    ``RecursiveNCut(**ncut_params, out_size=out_size).fit(attn).level_labels_``. Both nested.
    """
    if method == "diffseg":
        levels, _ = diffseg_levels(attn, level_thresholds, rounds, anchors_per_side, out_size, eps)
        return levels
    if method == "ncut":
        from diffparts.segment.ncut import RecursiveNCut

        params = dict(ncut_params or {})
        if out_size is not None:
            if not np.isscalar(out_size):
                if len(set(out_size)) != 1:
                    raise ValueError(f"ncut needs a square out_size, got {out_size}")
                out_size = out_size[0]
            params["out_size"] = int(out_size)
        return np.asarray(RecursiveNCut(**params).fit(attn).level_labels_, dtype=np.int32)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
