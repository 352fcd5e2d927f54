"""The recursive NCut's matrix work in torch, on any device (docs/design.md §5.3, §7 "Performance").

What this file holds: torch twins of the numpy steps of ``RecursiveNCut.fit`` (same formulas,
same order): the transition matrix and its checks, the features (rows of ``P^k`` with pooled
keys, or given ones), the cosine (min-max or clipped) and random-walk affinities, the Fiedler
vector and the eigengap rule's spectrum, the threshold sweep, and the concept assignment. The
tree's bookkeeping (``ncut_cut.grow_tree``, ``tree_levels``) is shared with the numpy path, so
a GPU worker segments the attention where it was computed and only the labels come back.

Differences from the numpy path, on purpose: every eigen-solve is a dense ``eigh`` in float64
(on a GPU, faster than a Krylov solver's many small products; numpy uses ARPACK above
``dense_max`` nodes), and the stationary distribution is a dense float64 solve. Labels equal the
numpy path's where both solve densely (up to ``dense_max`` nodes); tests/segment/test_ncut_torch.py.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from diffparts.segment.ncut_affinity import key_pool_factor
from diffparts.segment.ncut_cut import (
    NCutPartition,
    _component_cut,
    check_partition_params,
    grow_tree,
    tree_levels,
)
from diffparts.segment.ncut_spectrum import eigengap_tau

__all__ = [
    "torch_best_threshold_cut",
    "torch_concept_assignment",
    "torch_cosine_affinity",
    "torch_features",
    "torch_fiedler",
    "torch_ncut",
    "torch_random_walk_affinity",
    "torch_transition_matrix",
]


def torch_transition_matrix(attn, device) -> tuple[torch.Tensor, tuple[int, int]]:
    """Row-stochastic ``P`` (q, k) float32 on ``device`` and (height, width); the numpy path's checks."""
    A = torch.as_tensor(attn).to(device=device, dtype=torch.float32)
    if A.ndim == 4:
        qy, qx, ky, kx = A.shape
        if (qy, qx) != (ky, kx):
            raise ValueError(f"attention must have query grid == key grid, got shape {tuple(A.shape)}")
        shape = (qy, qx)
    elif A.ndim == 2:
        q, k = A.shape
        side = int(round(q ** 0.5))
        if q != k or side * side != q:
            raise ValueError(f"(q, k) attention must be square with q = R*R, got shape {tuple(A.shape)}")
        shape = (side, side)
    else:
        raise ValueError(f"attention must be (qy, qx, ky, kx) or (q, k), got shape {tuple(A.shape)}")
    n = shape[0] * shape[1]
    P = A.reshape(n, n).clone()  # q k
    bad = ~torch.isfinite(P)
    if bool(bad.any()):
        raise ValueError(f"attention contains {int(bad.sum())} NaN/inf values")
    if bool((P < 0).any()):
        raise ValueError(f"attention must be non-negative, min value {float(P.min())}")
    rows = P.sum(1, dtype=torch.float64)
    if bool((rows <= 0).any()):
        raise ValueError(f"attention row q={int(torch.argmin(rows))} sums to 0 (no outgoing transition)")
    P /= rows[:, None].float()
    return P, shape


def _walk_power(P: torch.Tensor, steps: int) -> torch.Tensor:
    if steps == 1:
        return P
    result = torch.linalg.matrix_power(P, steps)
    return result / result.sum(1, keepdim=True)


def torch_features(P: torch.Tensor, walk_steps: int, features, shape, max_keys) -> torch.Tensor:
    """Unit-length features (q, d): given ones, else rows of ``P^k`` with keys pooled (``pool_keys``)."""
    if features is None:
        rows = _walk_power(P, walk_steps)
        f = key_pool_factor(shape, max_keys)
        if f > 1:
            ky, kx = shape
            rows = rows.reshape(-1, ky // f, f, kx // f, f).sum((2, 4)).reshape(rows.shape[0], -1)
        F = rows
    else:
        F = torch.as_tensor(features).to(device=P.device, dtype=torch.float32)
        if F.ndim == 3:
            F = F.reshape(-1, F.shape[-1])
        if F.ndim != 2 or F.shape[0] != P.shape[0]:
            raise ValueError(f"features must be (q, d) with q = {P.shape[0]}, got shape {tuple(F.shape)}")
        if not bool(torch.isfinite(F).all()):
            raise ValueError("features contain NaN or inf")
    norms = torch.linalg.vector_norm(F, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError(f"feature row q={int(torch.argmin(norms[:, 0]))} is all zeros")
    return F / norms


def torch_cosine_affinity(F: torch.Tensor, power: float, rescale: str) -> torch.Tensor:
    """``cosine_affinity`` of unit-length features (q, d): (q, k) float32."""
    G = F @ F.T  # q k
    G = (G + G.T) / 2  # exactly symmetric (the numpy path mirrors one triangle)
    if rescale == "minmax":
        lo, hi = float(G.min()), float(G.max())
        if hi - lo <= 1e-12 * max(abs(hi), 1.0):
            return torch.ones_like(G)
        G = (G - lo) * (1.0 / (hi - lo))
    G = G.clamp_(0.0, 1.0)
    if power >= 1:  # as the numpy path: entries whose power would be subnormal become 0
        G[G < 2.0 * torch.finfo(torch.float32).tiny ** (1.0 / power)] = 0.0
    return G.pow_(power)


def torch_random_walk_affinity(P: torch.Tensor, walk_steps: int, teleport: float) -> torch.Tensor:
    """``random_walk_affinity`` with ``pi`` from a dense float64 solve: (q, k) float32."""
    n = P.shape[0]
    if n == 1:
        return P.clone()
    a = teleport
    eye = torch.eye(n, dtype=torch.float64, device=P.device)
    pi = torch.linalg.solve(eye - (1 - a) * P.T.double(), torch.full((n,), a / n, dtype=torch.float64, device=P.device))
    pi = pi.clamp(min=0)
    pi = pi / pi.sum()
    W = _walk_power(P, walk_steps) * pi[:, None].float()  # q k
    return (W + W.T) / 2


def _deflated_top(W: torch.Tensor, d: torch.Tensor, c: float, k: int):
    """Top-k eigenpairs of the deflated ``D^-1/2 (W + c) D^-1/2``, dense float64 (descending)."""
    n = W.shape[0]
    s = 1.0 / torch.sqrt(d)
    u = torch.sqrt(d)
    u = u / torch.linalg.vector_norm(u)
    M = (W.double() + c) * s[:, None] * s[None, :]
    M -= torch.outer(u, u)
    vals, vecs = torch.linalg.eigh(M)  # ascending
    k = min(k, n - 1)
    return vals[-k:].flip(0), vecs[:, -k:].flip(1)


def torch_fiedler(W: torch.Tensor, c: float) -> tuple[float, torch.Tensor]:
    """(lambda_2, generalised Fiedler vector y (q,) float64) of a segment's affinity."""
    d = W.sum(1, dtype=torch.float64) + c * W.shape[0]
    vals, vecs = _deflated_top(W, d, c, 1)
    return 1.0 - float(vals[0]), vecs[:, 0] / torch.sqrt(d)


def torch_best_threshold_cut(W: torch.Tensor, y: torch.Tensor, min_size: int, c: float, n_thresholds: int):
    """``best_threshold_cut`` in torch: (ncut, mask over the segment as numpy bool) or (inf, None)."""
    n = W.shape[0]
    if n < 2 * max(min_size, 1):
        return float("inf"), None
    y = y if float(y[torch.argmax(y.abs())]) >= 0 else -y  # ``oriented``
    order = torch.argsort(y, stable=True)
    Ws = W[order][:, order].double()  # sorted q k
    lower = torch.tril(Ws, diagonal=-1).sum(1)  # weight to the nodes sorted before
    deg = Ws.sum(1) + c * n
    diag = torch.diagonal(Ws)
    m = torch.arange(1, n, device=W.device, dtype=torch.float64)
    assoc_aa = torch.cumsum(2.0 * lower + diag, 0)[:-1] + c * m ** 2
    vol_a = torch.cumsum(deg, 0)[:-1]
    vol_b = deg.sum() - vol_a
    cut = torch.clamp(vol_a - assoc_aa, min=0.0)
    ncut = cut / vol_a + cut / vol_b
    ys = y[order]
    size = max(min_size, 1)
    if n_thresholds:
        ts = torch.linspace(0, 1, int(n_thresholds) + 1, dtype=torch.float64, device=W.device)[:-1]
        ts = ys[0] + ts * (ys[-1] - ys[0])
        sizes = torch.searchsorted(ys.contiguous(), ts.contiguous(), right=True)
        sizes = sizes[(sizes >= size) & (n - sizes >= size)]
        if sizes.numel() == 0:
            return float("inf"), None
        values = ncut[sizes - 1]
        ok = torch.isfinite(values)
        if not bool(ok.any()):
            return float("inf"), None
        best = int(sizes[ok][torch.argmin(values[ok])]) - 1
    else:
        mm = torch.arange(1, n, device=W.device)
        valid = (mm >= size) & (n - mm >= size) & (ys[1:] > ys[:-1]) & torch.isfinite(ncut)
        if not bool(valid.any()):
            return float("inf"), None
        idx = torch.nonzero(valid).ravel()
        best = int(idx[torch.argmin(ncut[valid])])
    mask = np.zeros(n, dtype=bool)
    mask[order[: best + 1].cpu().numpy()] = True
    return float(ncut[best]), mask


def _rows_alike(W: torch.Tensor, rtol: float = 1e-6) -> bool:
    first = W[0] / W[0].sum()
    rows = W / W.sum(1, keepdim=True).clamp(min=1e-300)
    return bool((rows - first).abs().max() <= rtol * first.max())


def torch_ncut(attn, features, device, *, affinity, walk_steps, power, rescale, max_keys, teleport,
               need_features, tau, tau_mode, min_size, max_depth, tau_cap, n_eigs, eig_floor,
               dense_max, random_state, n_thresholds):
    """Steps 2-3 of ``RecursiveNCut.fit`` in torch: (NCutPartition, (h, w), features (q, d) or None).

    ``dense_max`` and ``random_state`` are accepted for the config's sake: every solve is dense.
    """
    del dense_max, random_state
    check_partition_params(tau, tau_mode, min_size, max_depth, tau_cap, n_eigs, eig_floor, n_thresholds)
    with torch.no_grad():
        # 2. transition matrix, features, affinity
        P, shape = torch_transition_matrix(attn, device)  # q k
        if affinity == "random_walk" and features is not None:
            raise ValueError("features are used only by affinity='cosine'")
        F = torch_features(P, walk_steps, features, shape, max_keys) if need_features else None
        if affinity == "random_walk":
            W = torch_random_walk_affinity(P, walk_steps, teleport)
        else:
            W = torch_cosine_affinity(F, power, rescale)
        del P
        n = W.shape[0]
        total = float(W.sum(dtype=torch.float64))
        if total <= 0:
            raise ValueError("affinity is all zeros")
        c = 1e-9 * total / (n * n)
        start = time.perf_counter()
        flat = _rows_alike(W)
        # 3. tau, then the recursion (shared bookkeeping: ncut_cut.grow_tree)
        spectrum, root_fiedler = None, None
        if tau_mode == "auto":
            if flat or n < 3:
                tau, spectrum = 0.0, np.zeros(1 if flat else n)
            else:
                d = W.sum(1, dtype=torch.float64) + c * n
                vals, vecs = _deflated_top(W, d, c, min(n_eigs, n - 1))
                tau, spectrum = eigengap_tau(vals.cpu().numpy(), tau_cap, eig_floor)
                root_fiedler = (float(spectrum[1]), vecs[:, 0] / torch.sqrt(d))

        def cut_node(idx: np.ndarray, is_root: bool):
            index = torch.as_tensor(idx, device=W.device)
            sub = W if idx.size == n else W[index][:, index]
            if not bool((sub > 0).all()):
                found = _component_cut(sub.cpu().numpy(), min_size)  # rare: exact zeros
                if found is not None:
                    return 0.0, found[0], found[1]
            if flat:
                return 1.0, 1.0, None
            lam, y = root_fiedler if is_root and root_fiedler else torch_fiedler(sub, c)
            if lam >= tau:
                return lam, float("inf"), None
            return (lam, *torch_best_threshold_cut(sub, y, min_size, c, n_thresholds))

        nodes = grow_tree(n, cut_node, tau, min_size, max_depth, start)
    part = NCutPartition(nodes, tree_levels(nodes, n), float(tau), spectrum)
    return part, shape, F


def torch_concept_assignment(features: torch.Tensor, labels: np.ndarray, shape: tuple[int, int],
                             out_size) -> np.ndarray:
    """``concept_assignment`` in torch (bilinear upsampling of the scores, ``align_corners=False``)."""
    h, w = shape
    Y, X = (out_size, out_size) if np.isscalar(out_size) else tuple(out_size)
    F = features
    lab = torch.as_tensor(np.asarray(labels).ravel(), device=F.device)
    K = int(lab.max()) + 1
    sums = torch.zeros((K, F.shape[1]), dtype=torch.float64, device=F.device)
    sums.index_add_(0, lab, F.double())
    means = (sums / torch.linalg.vector_norm(sums, dim=1, keepdim=True).clamp(min=1e-30)).float()
    scores = (F @ means.T).T.reshape(1, K, h, w)  # 1 segment y x
    up = torch.nn.functional.interpolate(scores, size=(Y, X), mode="bilinear", align_corners=False)
    return up[0].argmax(0).cpu().numpy().astype(np.int64)
