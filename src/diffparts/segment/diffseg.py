"""DiffSeg: iterative KL merging of aggregated self-attention (Tian et al., CVPR 2024; docs/design.md §5.2 "DiffSeg merge").

Follows the reference implementation (google/diffseg, ``diffseg/segmentor.py``) step by step:

1. anchors: a ``anchors_per_side`` x ``anchors_per_side`` grid over the query positions; for
   R = 64 and 16 anchors the coordinates are 1, 5, ..., 61 (the reference's formula
   ``step = (R - 1) // (n - 1)``, ``start = (R - 1 - step (n - 1)) // 2``, generalised from R);
2. distance: symmetric KL ``0.5 KL(p || q) + 0.5 KL(q || p)`` summed over the key map;
3. round 0: each anchor's proposal is the mean of all query maps within ``kl_thresholds[0]``
   of the anchor's map;
4. rounds 1..N-1 (greedy): walk the proposals in order, skip those already matched; the new
   proposal is the mean of all proposals within the round's threshold (already matched ones
   included, as in the reference); mark them matched;
5. optional k-means refinement of the query maps initialised with the proposals;
6. mask: bilinear upsampling (half-pixel centres, i.e. ``align_corners=False``) of the proposals
   to the output size, argmax over proposals, labels relabelled 0..K-1.

Deviations from the reference, on purpose:

- Precision: the reference computes round 0 in float16, so map values below ~6e-8 become 0,
  ``0 * log 0`` becomes NaN and the pair is silently dropped; an anchor whose own map has exact
  zeros matches nothing (not even itself), its proposal is 0/0 = NaN and is dropped in round 1.
  Here everything is float32 and logarithms are taken of ``max(p, eps)``, so ``0 log 0 = 0`` and
  a zero against a non-zero costs ``log(p / eps)``. On maps without tiny values the result is the
  same (tests/segment/test_diffseg.py compares with a float16 reference-style computation).
- Speed: KL is expanded into matrix products, ``KL(p || q) = sum p log p - p . log q``, so round 0
  is three (anchor x k) @ (k x q) products instead of a (anchor, q, k) tensor: a few hundred
  milliseconds instead of the reference's 9-15 s for a 64 x 64 x 64 x 64 tensor on 2 cores.
- An anchor's own map always counts as within threshold (float32 rounding can make its
  self-distance 1e-7 instead of 0); the reference relies on exact 0 < threshold.
- A single merge round works (the reference indexes a missing axis when N = 1); more anchors
  per side than query rows are clamped to the number of rows (one anchor per row).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DiffSeg",
    "DiffSegConfig",
    "anchor_grid",
    "anchor_kl_distances",
    "as_query_maps",
    "diffseg_segment",
    "merge_proposals",
    "proposals_to_labels",
    "resize_bilinear",
    "symmetric_kl",
]


@dataclass(frozen=True)
class DiffSegConfig:
    """Settings of one DiffSeg run (the flow's parameters; ``DiffSeg(**asdict(config))``)."""

    kl_thresholds: tuple[float, ...] = (1.1, 1.1, 1.1)  # one per merge round (COCO-Stuff setting; SD 64x64 maps)
    anchors_per_side: int = 16  # 16 x 16 anchor grid over the queries (reference)
    refine: bool = False  # k-means refinement initialised with the proposals (reference option, off there too)
    out_size: int | tuple[int, int] | None = None  # (y, x) of the mask; None keeps the key-map resolution
    eps: float = 1e-10  # floor inside log(); replaces float16's silent zeros (see module docstring)
    random_state: int | None = None  # k-means seed (only used with refine)


def as_query_maps(attn: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Validate attention and flatten it: returns (maps (q, k) float32, (qy, qx), (ky, kx)).

    attn: (qy, qx, ky, kx) or (q, k) with square q = R * R and k = R * R. Non-finite or negative
    values raise ValueError (never silently fixed).
    """
    attn = np.asarray(attn)
    if attn.ndim == 4:
        qy, qx, ky, kx = attn.shape
    elif attn.ndim == 2:
        side_q, side_k = int(round(np.sqrt(attn.shape[0]))), int(round(np.sqrt(attn.shape[1])))
        if side_q * side_q != attn.shape[0] or side_k * side_k != attn.shape[1]:
            raise ValueError(f"(q, k) attention needs square q and k, got shape {attn.shape}")
        qy = qx = side_q
        ky = kx = side_k
    else:
        raise ValueError(f"attention must be (qy, qx, ky, kx) or (q, k), got shape {attn.shape}")
    if min(qy, qx, ky, kx) < 1:
        raise ValueError(f"attention has an empty axis: shape {attn.shape}")
    maps = np.ascontiguousarray(attn.reshape(qy * qx, ky * kx), dtype=np.float32)  # q k
    if not np.isfinite(maps).all():
        bad = int((~np.isfinite(maps)).sum())
        raise ValueError(f"attention contains {bad} non-finite values (NaN or inf)")
    if (maps < 0).any():
        raise ValueError(f"attention must be non-negative, min value is {float(maps.min())}")
    return maps, (qy, qx), (ky, kx)


def anchor_grid(qy: int, qx: int, anchors_per_side: int = 16) -> np.ndarray:
    """Flat query indices (anchor,) of the anchor grid, row-major over (qy, qx).

    Per axis of length n with a anchors: ``step = (n - 1) // (a - 1)``, ``start = (n - 1 -
    step (a - 1)) // 2`` (the reference's ``generate_sampling_grid`` with 63 = n - 1); for n = 64,
    a = 16: 1, 5, ..., 61. a is clamped to n; a = 1 gives the centre.
    """
    if anchors_per_side < 1:
        raise ValueError(f"anchors_per_side must be >= 1, got {anchors_per_side}")

    def coords(n: int) -> np.ndarray:
        a = min(anchors_per_side, n)
        if a == 1:
            return np.array([(n - 1) // 2])
        step = (n - 1) // (a - 1)
        start = (n - 1 - step * (a - 1)) // 2
        return start + step * np.arange(a)

    ys, xs = coords(qy), coords(qx)
    return (ys[:, None] * qx + xs[None, :]).ravel()  # anchor


def _log_floor(p: np.ndarray, eps: float) -> np.ndarray:
    return np.log(np.maximum(p, np.float32(eps)))


def symmetric_kl(
    p: np.ndarray,
    q: np.ndarray,
    eps: float = 1e-10,
    log_q: np.ndarray | None = None,
    neg_entropy_q: np.ndarray | None = None,
) -> np.ndarray:
    """Pairwise ``0.5 KL(p_i || q_j) + 0.5 KL(q_j || p_i)``: p (m, k), q (n, k) -> (m, n) float32.

    Expanded into matrix products (docs/design.md §5.2 "DiffSeg merge"): ``KL(p || q) = sum p log p - p . log q``.
    ``log_q`` and ``neg_entropy_q`` (sum q log q per row) may be passed to reuse them.
    """
    log_p = _log_floor(p, eps)  # m k
    if log_q is None:
        log_q = _log_floor(q, eps)  # n k
    if neg_entropy_q is None:
        neg_entropy_q = np.einsum("nk,nk->n", q, log_q)  # n
    neg_entropy_p = np.einsum("mk,mk->m", p, log_p)  # m
    cross_pq = p @ log_q.T  # m n: sum_k p log q
    cross_qp = log_p @ q.T  # m n: sum_k q log p
    return 0.5 * (neg_entropy_p[:, None] - cross_pq) + 0.5 * (neg_entropy_q[None, :] - cross_qp)


def anchor_kl_distances(attn: np.ndarray, anchors_per_side: int = 16, eps: float = 1e-10) -> np.ndarray:
    """Symmetric KL from every anchor's map to every query map: (anchor, q) float32.

    The distribution that round 0 thresholds; ``diffparts.segment.thresholds`` picks thresholds
    from it.
    """
    maps, (qy, qx), _ = as_query_maps(attn)
    anchors = anchor_grid(qy, qx, anchors_per_side)
    return symmetric_kl(maps[anchors], maps, eps)


def _check_thresholds(kl_thresholds) -> tuple[float, ...]:
    thresholds = tuple(float(t) for t in np.atleast_1d(kl_thresholds))
    if len(thresholds) == 0:
        raise ValueError("kl_thresholds must hold at least one threshold (one per merge round)")
    if not all(np.isfinite(t) and t > 0 for t in thresholds):
        raise ValueError(f"kl_thresholds must be finite and > 0, got {thresholds}")
    return thresholds


def merge_proposals(
    proposals: np.ndarray, threshold: float, eps: float = 1e-10
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One greedy merge round (docs/design.md §5.2 "DiffSeg merge" rounds 1..N-1): proposals (segment, k) -> merged.

    Walk the proposals in order, skip the already matched; the new proposal is the mean of all
    proposals within ``threshold`` of the current one, matched ones included (reference); mark
    them matched. Returns (merged (segment', k) float32, members: list of index arrays into the
    input, one per merged proposal). A proposal may be a member of several merged ones.
    """
    distance = symmetric_kl(proposals, proposals, eps)  # segment segment
    np.fill_diagonal(distance, 0.0)
    within = distance < threshold  # segment segment
    matched = np.zeros(len(proposals), dtype=bool)
    merged, members = [], []
    for i in range(len(proposals)):
        if matched[i]:
            continue
        idx = np.flatnonzero(within[i])
        merged.append(proposals[idx].mean(0))
        members.append(idx)
        matched[idx] = True
    return np.stack(merged).astype(np.float32), members


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D bilinear resizing with half-pixel centres (align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = src - i0
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(weights, (np.arange(n_out), i0), 1.0 - w1)
    np.add.at(weights, (np.arange(n_out), i1), w1)
    return weights


def resize_bilinear(maps: np.ndarray, out_size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear resizing (half-pixel centres, align_corners=False) of maps (n, h, w) -> (n, y, x) float32."""
    maps = np.asarray(maps, dtype=np.float32)
    _, h, w = maps.shape
    out_h, out_w = _out_shape(out_size, (h, w))
    up_y, up_x = _bilinear_matrix(out_h, h), _bilinear_matrix(out_w, w)  # y h, x w
    return np.einsum("yi,nij,xj->nyx", up_y, maps, up_x, optimize=True)


def _out_shape(out_size, key_shape: tuple[int, int]) -> tuple[int, int]:
    if out_size is None:
        return key_shape
    shape = (int(out_size), int(out_size)) if np.isscalar(out_size) else tuple(int(s) for s in out_size)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"out_size must be a positive int or (y, x), got {out_size}")
    return shape


def proposals_to_labels(
    proposals: np.ndarray, out_size: int | tuple[int, int] | None = None
) -> np.ndarray:
    """Upsample proposals (segment, ky, kx) bilinearly to out_size and argmax: (y, x) int32.

    Labels index the input proposals (not relabelled); ties go to the lower index.
    """
    _, ky, kx = proposals.shape
    h, w = _out_shape(out_size, (ky, kx))
    if (h, w) == (ky, kx):
        return proposals.argmax(0).astype(np.int32)
    return resize_bilinear(proposals, (h, w)).argmax(0).astype(np.int32)  # y x


class DiffSeg:
    """DiffSeg merge of one image's aggregated self-attention (docs/design.md §5.2 "DiffSeg merge").

    Parameters are those of ``DiffSegConfig``. ``fit(attn)`` takes attention (qy, qx, ky, kx)
    (or (q, k)), each key map a distribution, and sets:

    - ``labels_``: (y, x) int32 segment labels 0..K-1 (y, x = out_size, default ky, kx);
    - ``proposals_``: (segment, ky, kx) float32, the merged map behind each label;
    - ``merge_history_``: list of dicts, one per round (``round``, ``threshold``, ``n_in``,
      ``n_out``, ``members``: for round 0 the query indices averaged into each anchor's proposal,
      later the indices of the previous round's proposals), plus a final ``refine`` entry when
      refinement ran; ``anchors_`` holds the anchors' flat query indices.
    """

    def __init__(
        self,
        kl_thresholds: tuple[float, ...] = (1.1, 1.1, 1.1),
        anchors_per_side: int = 16,
        refine: bool = False,
        out_size: int | tuple[int, int] | None = None,
        eps: float = 1e-10,
        random_state: int | None = None,
    ):
        self.kl_thresholds = kl_thresholds
        self.anchors_per_side = anchors_per_side
        self.refine = refine
        self.out_size = out_size
        self.eps = eps
        self.random_state = random_state

    def fit(self, attn: np.ndarray) -> "DiffSeg":
        # 1. Check inputs; flatten to query maps over the keys
        thresholds = _check_thresholds(self.kl_thresholds)
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")
        maps, (qy, qx), (ky, kx) = as_query_maps(attn)  # q k
        out_shape = _out_shape(self.out_size, (ky, kx))

        # 2. Anchor grid over the queries (reference: generate_sampling_grid)
        anchors = anchor_grid(qy, qx, self.anchors_per_side)  # anchor

        # 3. Round 0: anchor maps against all query maps (three matrix products)
        distance = symmetric_kl(maps[anchors], maps, self.eps)  # anchor q
        within = distance < thresholds[0]
        within[np.arange(len(anchors)), anchors] = True  # an anchor always matches its own map
        weights = within.astype(np.float32)
        proposals = (weights @ maps) / weights.sum(1, keepdims=True)  # anchor k
        history = [
            dict(round=0, threshold=thresholds[0], n_in=len(maps), n_out=len(proposals),
                 members=[np.flatnonzero(row) for row in within])
        ]

        # 4. Rounds 1..N-1: greedy merging of the proposals
        for r, threshold in enumerate(thresholds[1:], start=1):
            n_in = len(proposals)
            proposals, members = merge_proposals(proposals, threshold, self.eps)  # segment k
            history.append(dict(round=r, threshold=threshold, n_in=n_in, n_out=len(proposals), members=members))

        # 5. Optional k-means refinement initialised with the proposals (reference: refine)
        if self.refine and len(proposals) > 1:
            from sklearn.cluster import KMeans

            kmeans = KMeans(n_clusters=len(proposals), init=proposals, n_init=1,
                            random_state=self.random_state).fit(maps)
            clusters = kmeans.labels_  # q
            kept = np.unique(clusters)
            proposals = np.stack([maps[clusters == c].mean(0) for c in kept]).astype(np.float32)
            history.append(dict(round="refine", threshold=None, n_in=len(kept), n_out=len(proposals),
                                members=[np.flatnonzero(clusters == c) for c in kept]))

        # 6. Upsample bilinearly, argmax, relabel 0..K-1
        proposals = proposals.reshape(-1, ky, kx)  # segment ky kx
        raw = proposals_to_labels(proposals, out_shape)  # y x
        used, labels = np.unique(raw, return_inverse=True)
        self.anchors_ = anchors
        self.labels_ = labels.reshape(out_shape).astype(np.int32)
        self.proposals_ = proposals[used]
        self.merge_history_ = history
        return self


def diffseg_segment(
    attn: np.ndarray,
    kl_thresholds: tuple[float, ...] = (1.1, 1.1, 1.1),
    anchors_per_side: int = 16,
    refine: bool = False,
    out_size: int | tuple[int, int] | None = None,
    eps: float = 1e-10,
    random_state: int | None = None,
) -> np.ndarray:
    """DiffSeg labels (y, x) int32, 0..K-1, of attention (qy, qx, ky, kx); see ``DiffSeg``."""
    return DiffSeg(kl_thresholds, anchors_per_side, refine, out_size, eps, random_state).fit(attn).labels_
