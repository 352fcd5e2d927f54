"""DiffSeg in torch, on any device (docs/design.md §5.2 "DiffSeg merge"; issue 20, item 4).

The same arithmetic as :mod:`diffparts.segment.diffseg` and ``hierarchy.diffseg_levels``, step
for step and in float32, on torch tensors: a GPU worker segments the attention it has just
computed without shipping the (qy, qx, ky, kx) tensor back to the CPU.

- ``symmetric_kl_torch``: the KL-as-matmul distances (``KL(p || q) = sum p log p - p . log q``);
- ``diffseg_torch``: anchors, round 0 (three matrix products and a thresholded mean), greedy
  merge rounds, bilinear upsampling (half-pixel centres) and argmax, labels relabelled 0..K-1;
- ``diffseg_levels_torch``: the nested threshold sweep of ``hierarchy.diffseg_levels``.

Only the greedy walk of a merge round runs on the CPU, over a (segment, segment) boolean matrix
of at most anchors^2 = 256 rows; everything of size q or k stays on the tensor's device. Matrix
products on a GPU are computed in full float32 (TF32 is switched off around them): the labels
equal numpy's on the tests' inputs (tests/segment/test_diffseg_torch.py), up to a distance that
lands within float32 rounding of a threshold, where the two libraries' summation orders can
decide differently (neither is more right than the other). No refinement (k-means) here: with
``refine`` use the numpy class.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch

from diffparts.segment.diffseg import _bilinear_matrix, _check_thresholds, _out_shape, anchor_grid

__all__ = ["as_query_maps_torch", "diffseg_levels_torch", "diffseg_torch", "merge_proposals_torch",
           "proposals_to_labels_torch", "symmetric_kl_torch"]


@contextmanager
def _full_float32():
    """No TF32 in matrix products (CUDA would otherwise round their inputs to 10 bits)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def as_query_maps_torch(attn: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """Validate and flatten (qy, qx, ky, kx) attention: ((q, k) float32 on its device, (qy, qx), (ky, kx))."""
    if not isinstance(attn, torch.Tensor):
        raise ValueError(f"attention must be a torch tensor here, got {type(attn).__name__}")
    if attn.ndim != 4:
        raise ValueError(f"attention must be (qy, qx, ky, kx), got shape {tuple(attn.shape)}")
    qy, qx, ky, kx = attn.shape
    if min(qy, qx, ky, kx) < 1:
        raise ValueError(f"attention has an empty axis: shape {tuple(attn.shape)}")
    maps = attn.reshape(qy * qx, ky * kx).to(torch.float32).contiguous()  # q k
    if not bool(torch.isfinite(maps).all()):
        bad = int((~torch.isfinite(maps)).sum())
        raise ValueError(f"attention contains {bad} non-finite values (NaN or inf)")
    if bool((maps < 0).any()):
        raise ValueError(f"attention must be non-negative, min value is {float(maps.min())}")
    return maps, (int(qy), int(qx)), (int(ky), int(kx))


def _log_floor(p: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.log(torch.clamp_min(p, float(np.float32(eps))))


def symmetric_kl_torch(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Pairwise ``0.5 KL(p_i || q_j) + 0.5 KL(q_j || p_i)``: p (m, k), q (n, k) -> (m, n) float32."""
    log_p, log_q = _log_floor(p, eps), _log_floor(q, eps)  # m k ; n k
    neg_entropy_p = (p * log_p).sum(1)  # m
    neg_entropy_q = (q * log_q).sum(1)  # n
    with _full_float32():
        cross_pq = p @ log_q.T  # m n: sum_k p log q
        cross_qp = log_p @ q.T  # m n: sum_k q log p
    return 0.5 * (neg_entropy_p[:, None] - cross_pq) + 0.5 * (neg_entropy_q[None, :] - cross_qp)


def merge_proposals_torch(proposals: torch.Tensor, threshold: float, eps: float = 1e-10) -> torch.Tensor:
    """One greedy merge round (``diffseg.merge_proposals``): proposals (segment, k) -> merged (segment', k)."""
    distance = symmetric_kl_torch(proposals, proposals, eps)  # segment segment
    distance.fill_diagonal_(0.0)
    within = (distance < threshold).cpu().numpy()  # segment segment: the walk is tiny, on the CPU
    matched = np.zeros(len(within), dtype=bool)
    merged = []
    for i in range(len(within)):
        if matched[i]:
            continue
        idx = np.flatnonzero(within[i])
        merged.append(proposals[torch.as_tensor(idx, device=proposals.device)].mean(0))
        matched[idx] = True
    return torch.stack(merged)


def _resize_bilinear_torch(maps: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """``diffseg.resize_bilinear`` on (n, h, w) tensors (the same weight matrices)."""
    _, h, w = maps.shape
    up_y = torch.from_numpy(_bilinear_matrix(out_shape[0], h)).to(maps.device)  # y h
    up_x = torch.from_numpy(_bilinear_matrix(out_shape[1], w)).to(maps.device)  # x w
    with _full_float32():
        return torch.einsum("yi,nij,xj->nyx", up_y, maps, up_x)


def proposals_to_labels_torch(proposals: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor:
    """Proposals (segment, ky, kx) upsampled to out_shape and argmaxed: (y, x) int64, indices
    into the proposals (ties to the lower index, as numpy's argmax)."""
    _, ky, kx = proposals.shape
    if tuple(out_shape) == (ky, kx):
        return proposals.argmax(0)
    return _resize_bilinear_torch(proposals, out_shape).argmax(0)


def _relabel(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    used, labels = torch.unique(raw, sorted=True, return_inverse=True)
    return used, labels


def diffseg_torch(attn: torch.Tensor, kl_thresholds: Sequence[float] = (1.1, 1.1, 1.1), anchors_per_side: int = 16,
                  out_size: int | tuple[int, int] | None = None,
                  eps: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffSeg (``diffseg.DiffSeg`` without refinement) of attention (qy, qx, ky, kx) on its device.

    Returns (labels (y, x) int64 0..K-1, proposals (segment, ky, kx) float32), both on the device.
    """
    thresholds = _check_thresholds(kl_thresholds)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    maps, (qy, qx), (ky, kx) = as_query_maps_torch(attn)  # q k
    out_shape = _out_shape(out_size, (ky, kx))
    anchors = torch.as_tensor(anchor_grid(qy, qx, anchors_per_side), device=maps.device)  # anchor

    # Round 0: anchor maps against all query maps
    distance = symmetric_kl_torch(maps[anchors], maps, eps)  # anchor q
    within = distance < thresholds[0]
    within[torch.arange(len(anchors), device=maps.device), anchors] = True  # an anchor matches its own map
    weights = within.to(torch.float32)
    with _full_float32():
        proposals = (weights @ maps) / weights.sum(1, keepdim=True)  # anchor k

    # Rounds 1..N-1: greedy merging
    for threshold in thresholds[1:]:
        proposals = merge_proposals_torch(proposals, threshold, eps)  # segment k

    # Mask: upsample, argmax, relabel
    proposals = proposals.reshape(-1, ky, kx)  # segment ky kx
    used, labels = _relabel(proposals_to_labels_torch(proposals, out_shape))
    return labels.reshape(out_shape), proposals[used]


def diffseg_levels_torch(attn: torch.Tensor, level_thresholds: Sequence[float], rounds: int = 3,
                         anchors_per_side: int = 16, out_size: int | tuple[int, int] | None = None,
                         eps: float = 1e-10) -> np.ndarray:
    """``hierarchy.diffseg_levels``' nested levels, computed on the attention's device: (level, y, x) int32 numpy."""
    thresholds = [float(t) for t in level_thresholds]
    if len(thresholds) == 0:
        raise ValueError("level_thresholds must hold at least one threshold")
    if any(b < a for a, b in zip(thresholds, thresholds[1:])):
        raise ValueError(f"level_thresholds must be non-decreasing (finest first), got {thresholds}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")

    labels, proposals = diffseg_torch(attn, (thresholds[0],) * rounds, anchors_per_side, out_size, eps)
    _, ky, kx = proposals.shape
    levels = [labels]
    for threshold in thresholds[1:]:
        merged = merge_proposals_torch(proposals.reshape(len(proposals), -1), threshold, eps).reshape(-1, ky, kx)
        raw = proposals_to_labels_torch(merged, tuple(labels.shape))  # y x, indices into merged
        n_fine, n_merged = int(labels.max()) + 1, len(merged)
        votes = torch.bincount((labels * n_merged + raw).ravel(), minlength=n_fine * n_merged)
        coarse_of_fine = votes.reshape(n_fine, n_merged).argmax(1)  # segment_fine
        used, coarse_of_fine = _relabel(coarse_of_fine)
        labels = coarse_of_fine[labels]
        proposals = merged[used]
        levels.append(labels)
    return torch.stack(levels).to(torch.int32).cpu().numpy()  # level y x
