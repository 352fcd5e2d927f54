"""Random-walk Normalised Cuts on diffusion self-attention (docs/design.md §5.3 "Random-walk NCut", Ivanova et al.).

Each aggregated self-attention row ``attn[q, :]`` is a distribution over keys, so the attention
matrix is the transition matrix ``P`` of a random walk over the image's positions (Ivanova et
al., WACV 2026). The image is cut recursively in two by Shi-Malik Normalised Cuts on a symmetric
affinity built from ``P``; the cuts form a binary tree of segments whose depths give nested
levels (docs/design.md §5.4 "Hierarchy").

Affinities (``affinity=``):
- ``"random_walk"``: ``W = (Pi P^k + (P^k)^T Pi) / 2`` with ``pi`` the stationary distribution of
  ``P`` (``Pi = diag(pi)``) and ``P^k`` the k-step walk (``walk_steps``). ``W`` is the flow of
  probability between two positions at equilibrium, so a cut's weight is the chance that the walk
  crosses it and NCut(A, B) = P(A -> B | A) + P(B -> A | B) (Meila-Shi).
- ``"cosine"``: ``W = max(cos(f_q, f_k), 0) ** power`` with ``f`` the rows of ``P^k`` (or given
  features such as UNet activations): the feature-similarity variant.

Cut (one node of the tree): the second smallest generalised eigenvector ``y`` of
``(D - W) y = lambda D y`` (computed as the eigenvector of ``D^-1/2 W D^-1/2`` with the trivial
one deflated: ARPACK ``eigsh`` above ``dense_max`` nodes, dense ``eigh`` below), then every
threshold between consecutive distinct values of ``y`` is a candidate and the one with the lowest
NCut(A, B) = cut/assoc(A, V) + cut/assoc(B, V) wins (all candidates are evaluated exactly in
O(n^2) with cumulative sums). A node is split while its best NCut is below ``tau``.

Automatic tau (``tau_mode="auto"``; ``auto_tau``). What: compute the smallest generalised
eigenvalues ``0 = l_1 <= l_2 <= ... <= l_{m+1}`` (m = ``n_eigs``) of the whole image's graph,
take K at the largest ratio ``l_{K+1} / l_K`` (eigengap on a log scale; eigenvalues below
``f = eig_floor * l_{m+1}`` count as f, eig_floor = 0.35), and set ``tau = l_{K+1}``
(``l_2 / 2`` when K = 1), capped at ``tau_cap``. Why: a two-way cut's NCut is the Rayleigh quotient of its indicator vector.
With K groups, cuts between groups lie (nearly) in the span of the first K eigenvectors and so
cost about ``l_K`` or less, while a cut through a group is D-orthogonal to that span and, by
Courant-Fischer, costs at least ``l_{K+1}``. ``l_{K+1}`` is thus the cheapest a "wrong" cut can
be, measured on this image: cuts below it are accepted. The largest ratio finds the K where
this bound jumps; ratios rather than differences because between-group eigenvalues span orders
of magnitude (1e-3 .. 1e-1 on peaky attention) while within-group ones crowd together; the
floor keeps ratios among near-free cuts (0.004 vs 0.008) from winning, and it is relative to
the image's own spectrum so that the rule has no absolute NCut scale anywhere (tuned on
synthetic attention: any eig_floor in 0.25-0.5 scores the same). With one group the
largest ratio is at K = 1 and tau = l_2 / 2 rejects every cut (NCut >= l_2). A constant cannot
do this: diffuse attention (a small model) makes every NCut larger, peaky attention (SD at
64 x 64) smaller, and walk_steps > 1 moves them again (README: comparison on synthetic
attention over those regimes, ``benchmarks/bench_ncut.py compare``).

Tree and levels. Node 0 is the whole image at depth 0; a split node has two children at depth
d + 1; nodes are numbered breadth first. With D the deepest leaf, level ``l`` holds the segments
at cut depth ``D - l``: every node of that depth, plus every leaf that stopped shallower (kept
at its own depth). So level 0 = all leaves (finest), the last level = depth 1 (the root's
two-way cut, coarsest), and every level is a coarsening of the one below it (nested). An image
with no accepted cut has one level with one segment. Labels within a level are 0..K_l-1 in
node-id order.

Guards: NaN / inf / negative attention or an all-zero row -> ValueError; attention whose rows are
all equal -> one segment; a disconnected graph (exact zeros) is split along its connected
components with NCut 0; ``min_size`` bounds both sides of every cut, ``max_depth`` the tree;
the stationary distribution uses a tiny teleport so that it is unique even for reducible walks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from scipy.sparse import csgraph, csr_matrix

__all__ = [
    "NCutConfig",
    "NCutNode",
    "NCutPartition",
    "RecursiveNCut",
    "attention_affinity",
    "auto_tau",
    "best_threshold_cut",
    "cosine_affinity",
    "fiedler_vector",
    "ncut_partition",
    "random_walk_affinity",
    "stationary_distribution",
    "transition_matrix",
    "tree_levels",
]


@dataclass(frozen=True)
class NCutConfig:
    """Hyper-parameters of ``RecursiveNCut`` (same names as its keyword arguments)."""

    tau: float = 0.3  # constant stop: split a node while its best NCut < tau (ignored if auto)
    tau_mode: str = "auto"  # "auto" (eigengap rule, auto_tau; README comparison) or "constant"
    walk_steps: int = 1  # k in P^k: multi-node paths of the random walk (paper's long range)
    affinity: str = "random_walk"  # "random_walk" (Pi P^k sym.) or "cosine" (feature similarity)
    power: float = 10.0  # exponent on the cosine similarity (sharpens it; cosine variant only)
    min_size: int = 8  # smallest segment (positions at attention resolution) a cut may create
    max_depth: int = 6  # deepest cut (at most 2**max_depth leaves)
    tau_cap: float = 0.8  # auto tau never exceeds this (NCut ~ 1 is a chance-level cut)
    n_eigs: int = 24  # eigenvalues the auto rule looks at (largest K it can find)
    eig_floor: float = 0.35  # auto rule: eigenvalues below eig_floor * l_{m+1} count as that
    teleport: float = 1e-6  # restart probability for the stationary distribution (uniqueness)
    dense_max: int = 768  # sub-problems up to this many nodes use dense eigh, larger ARPACK
    out_size: int | None = None  # nearest upsampling of the label maps to this side (None: R)
    random_state: int | None = 0  # seed of the ARPACK start vectors: a resumed run equals an uninterrupted one


@dataclass(frozen=True, eq=False)  # eq=False: members is an array
class NCutNode:
    """One segment of the NCut tree; ``members`` are flattened q indices (y * width + x)."""

    id: int  # breadth-first index, 0 = the whole image
    parent: int  # parent id, -1 for the root
    children: tuple[int, ...]  # () for a leaf, else the two sides of the accepted cut
    members: np.ndarray = field(repr=False)  # (q,) int64 positions inside this segment, sorted
    depth: int  # number of cuts from the root
    ncut: float  # best NCut value found at this node (nan when it was not evaluated)
    eigenvalue: float  # second smallest generalised eigenvalue of the node's graph (nan if none)
    seconds: float = 0.0  # time spent cutting this node (the root's includes the auto-tau spectrum)

    @property
    def size(self) -> int:
        return int(self.members.size)

    def to_dict(self) -> dict:
        """A JSON-friendly dict (members as a list)."""
        out = asdict(self)
        out["members"] = self.members.tolist()
        out["children"] = list(self.children)
        return out


class NCutPartition(NamedTuple):
    """Result of ``ncut_partition``."""

    tree: list[NCutNode]  # nodes in id order
    level_labels: np.ndarray  # (level, q) int64, level 0 = finest
    tau: float  # the stop threshold that was used
    spectrum: np.ndarray | None  # (m + 1,) l_1 = 0 .. l_{m+1} of the root graph (auto mode)


# ----------------------------------------------------------------------------------------------
# Affinities (docs/design.md §5.3 "Random-walk NCut": transition matrix, stationary distribution, multi-step walks)
# ----------------------------------------------------------------------------------------------


def transition_matrix(attn: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Validate attention and return the row-stochastic ``P`` (q, k) float32 and (height, width).

    attn: (qy, qx, ky, kx) or (q, k) with q = R * R. Rows are renormalised to sum 1 (float16 or
    uint8 storage leaves them off by ~1e-3); NaN, inf, negative values and all-zero rows raise.
    """
    attn = np.asarray(attn)
    if attn.ndim == 4:
        qy, qx, ky, kx = attn.shape
        if (qy, qx) != (ky, kx):
            raise ValueError(f"attention must have query grid == key grid, got shape {attn.shape}")
        shape = (qy, qx)
    elif attn.ndim == 2:
        q, k = attn.shape
        side = int(round(np.sqrt(q)))
        if q != k or side * side != q:
            raise ValueError(f"(q, k) attention must be square with q = R*R, got shape {attn.shape}")
        shape = (side, side)
    else:
        raise ValueError(f"attention must be (qy, qx, ky, kx) or (q, k), got shape {attn.shape}")
    n = shape[0] * shape[1]
    if n < 1:
        raise ValueError(f"attention is empty, shape {attn.shape}")
    P = attn.reshape(n, n).astype(np.float32, copy=True)  # q k
    bad = ~np.isfinite(P)
    if bad.any():
        raise ValueError(f"attention contains {int(bad.sum())} NaN/inf values (first at q={int(np.argwhere(bad)[0, 0])})")
    if (P < 0).any():
        raise ValueError(f"attention must be non-negative, min value {float(P.min())}")
    rows = P.sum(1, dtype=np.float64)
    if (rows <= 0).any():
        raise ValueError(f"attention row q={int(np.argmin(rows))} sums to 0 (no outgoing transition)")
    P /= rows[:, None].astype(np.float32)
    return P, shape


def stationary_distribution(P: np.ndarray, teleport: float = 1e-6, random_state=None) -> np.ndarray:
    """Stationary distribution ``pi`` (q,) of the walk ``(1 - teleport) P + teleport / n``.

    The teleport makes ``pi`` unique and positive when ``P`` is reducible (exact zeros); at 1e-6
    it changes nothing measurable on softmax attention. ARPACK on ``P^T`` for large ``n``, with a
    dense solve of ``(I - (1 - a) P^T) pi = a / n`` as the fallback and for small ``n``.
    """
    n = P.shape[0]
    if not 0 < teleport < 1:
        raise ValueError(f"teleport must be in (0, 1), got {teleport}")
    if n == 1:
        return np.ones(1)
    a = teleport

    def step(v):  # one step of the teleporting walk, v a distribution over q
        return (1 - a) * (P.T @ v.astype(P.dtype)).astype(np.float64) + a / n * v.sum()

    if n > 512:
        rng = np.random.default_rng(random_state)
        op = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda v: step(np.ravel(v)),
                                                dtype=np.float64)
        try:
            _, vec = scipy.sparse.linalg.eigs(op, k=1, which="LM", v0=rng.random(n) + 0.5, tol=1e-9)
            pi = vec[:, 0].real
            pi = pi * np.sign(pi.sum())
            if pi.min() >= -1e-6 * np.abs(pi).max():
                pi = np.clip(pi, 0, None) / np.clip(pi, 0, None).sum()
                if np.abs(step(pi) - pi).sum() < 1e-6:
                    return pi
        except scipy.sparse.linalg.ArpackError:
            pass
    pi = np.linalg.solve(np.eye(n) - (1 - a) * P.T.astype(np.float64), np.full(n, a / n))
    pi = np.clip(pi, 0, None)
    return pi / pi.sum()


def _walk_power(P: np.ndarray, steps: int) -> np.ndarray:
    """``P^steps`` (q, k) float32 by repeated squaring."""
    if steps < 1:
        raise ValueError(f"walk_steps must be >= 1, got {steps}")
    if steps == 1:
        return P
    base = P
    result = None
    while steps:
        if steps & 1:
            result = base if result is None else result @ base
        steps >>= 1
        if steps:
            base = base @ base
    result = result / result.sum(1, keepdims=True)  # float32 rounding
    return result


def random_walk_affinity(P: np.ndarray, walk_steps: int = 1, pi: np.ndarray | None = None,
                         teleport: float = 1e-6, random_state=None) -> np.ndarray:
    """``W = (Pi P^k + (P^k)^T Pi) / 2`` (q, k) float32; its degrees are ``pi`` (docs/design.md §5.3 "Random-walk NCut")."""
    if pi is None:
        pi = stationary_distribution(P, teleport, random_state)
    W = _walk_power(P, walk_steps) * pi[:, None].astype(np.float32)  # q k: flow pi_q P^k_qk
    return _symmetrise(W)


def _symmetrise(W: np.ndarray, block: int = 256) -> np.ndarray:
    """``W <- (W + W^T) / 2`` in place, block by block (cache-friendly; 8x faster than W.T.copy)."""
    n = W.shape[0]
    for i in range(0, n, block):
        for j in range(i, n, block):
            mean = W[i:i + block, j:j + block] + W[j:j + block, i:i + block].T
            mean *= 0.5
            W[i:i + block, j:j + block] = mean
            W[j:j + block, i:i + block] = mean.T
    return W


def cosine_affinity(features: np.ndarray, power: float = 10.0) -> np.ndarray:
    """``W = max(cos(f_q, f_k), 0) ** power`` (q, k) float32 from features (q, d)."""
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    F = np.asarray(features, dtype=np.float32)
    if F.ndim != 2:
        raise ValueError(f"features must be (q, d), got shape {F.shape}")
    if not np.isfinite(F).all():
        raise ValueError("features contain NaN or inf")
    norms = np.linalg.norm(F, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"feature row q={int(np.argmin(norms[:, 0]))} is all zeros")
    F = F / norms
    # F F^T with syrk (half the flops of a matmul); only the upper triangle is filled
    G = scipy.linalg.blas.ssyrk(1.0, F)  # q k (upper triangle only)
    block = 256
    for i in range(0, G.shape[0], block):  # mirror the upper triangle, block by block
        diag = G[i:i + block, i:i + block]
        G[i:i + block, i:i + block] = np.triu(diag) + np.triu(diag, 1).T
        G[i + block:, i:i + block] = G[i:i + block, i + block:].T
    W = np.clip(G, 0.0, 1.0, out=G)
    if float(power).is_integer() and power <= 64:  # repeated products: float32 pow is ~50x slower
        base, W = W, None
        p = int(power)
        while p:
            if p & 1:
                W = base.copy() if W is None else np.multiply(W, base, out=W)
            p >>= 1
            if p:
                base = np.multiply(base, base, out=base)
    else:
        W **= np.float32(power)
    return W


def attention_affinity(attn: np.ndarray, affinity: str = "random_walk", walk_steps: int = 1,
                       power: float = 10.0, features: np.ndarray | None = None,
                       teleport: float = 1e-6, random_state=None) -> tuple[np.ndarray, tuple[int, int]]:
    """Affinity (q, k) float32 and the (height, width) grid from attention (docs/design.md §5.3 "Random-walk NCut")."""
    P, shape = transition_matrix(attn)  # q k
    if affinity == "random_walk":
        if features is not None:
            raise ValueError("features are used only by affinity='cosine'")
        return random_walk_affinity(P, walk_steps, teleport=teleport, random_state=random_state), shape
    if affinity == "cosine":
        if features is None:
            F = _walk_power(P, walk_steps)  # q k: k-step transition rows as features
        else:
            F = np.asarray(features)
            if F.ndim == 3:
                F = F.reshape(-1, F.shape[-1])  # (y x) d -> q d
            if F.shape[0] != P.shape[0]:
                raise ValueError(f"features have {F.shape[0]} rows, attention has {P.shape[0]} queries")
        return cosine_affinity(F, power), shape
    raise ValueError(f"affinity must be 'random_walk' or 'cosine', got {affinity!r}")


# ----------------------------------------------------------------------------------------------
# One cut (Shi & Malik 2000)
# ----------------------------------------------------------------------------------------------


def _deflated_top(W: np.ndarray, d: np.ndarray, c: float, k: int, dense_max: int, rng):
    """Top-k eigenpairs of ``D^-1/2 (W + c) D^-1/2`` after the trivial one (sqrt d) is removed."""
    n = W.shape[0]
    s = 1.0 / np.sqrt(d)
    u = np.sqrt(d)
    u /= np.linalg.norm(u)
    k = min(k, n - 1)
    if n <= dense_max or k >= n - 2:
        M = (W.astype(np.float64) + c) * s[:, None] * s[None, :]  # q k
        M -= np.outer(u, u)
        vals, vecs = scipy.linalg.eigh(M, subset_by_index=[n - k, n - 1])
        return vals[::-1], vecs[:, ::-1]

    def matvec(v):
        v = np.asarray(v).ravel()
        x = s * v
        y = s * ((W @ x.astype(W.dtype)).astype(np.float64) + c * x.sum())
        return y - u * (u @ v)

    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = rng.standard_normal(n)
    try:
        vals, vecs = scipy.sparse.linalg.eigsh(op, k=k, which="LA", v0=v0, tol=1e-5,
                                               ncv=min(n, max(2 * k + 1, 20)))
    except scipy.sparse.linalg.ArpackNoConvergence:  # rare: fall back to the dense solver
        return _deflated_top(W, d, c, k, n, rng)
    order = np.argsort(vals)[::-1]
    return vals[order], vecs[:, order]


def fiedler_vector(W: np.ndarray, c: float = 0.0, dense_max: int = 768, random_state=None):
    """Second smallest generalised eigenpair of ``(D - W) y = lambda D y``: (lambda, y (q,)).

    ``c`` is a constant added to every entry of ``W`` (a faint background edge that keeps the
    graph connected).
    """
    n = W.shape[0]
    if n < 2:
        return float("nan"), np.zeros(n)
    d = W.sum(1, dtype=np.float64) + c * n  # q
    rng = np.random.default_rng(random_state)
    vals, vecs = _deflated_top(W, d, c, 1, dense_max, rng)
    mu = float(vals[0])
    y = vecs[:, 0] / np.sqrt(d)  # q: generalised eigenvector
    return 1.0 - mu, y


def best_threshold_cut(W: np.ndarray, y: np.ndarray, min_size: int = 1, c: float = 0.0):
    """The threshold on ``y`` with the lowest NCut(A, B); returns (ncut, mask of A) or (inf, None).

    Candidates are all splits between consecutive distinct sorted values of ``y`` with at least
    ``min_size`` nodes on each side; each NCut is exact (cumulative sums in sorted order).
    """
    n = W.shape[0]
    if n < 2 * max(min_size, 1):
        return float("inf"), None
    order = np.argsort(y, kind="stable")  # q sorted by y
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    lower = np.empty(n)  # q: weight to the nodes sorted before (no (q, k) reordering needed)
    for start in range(0, n, 512):
        rows = slice(start, start + 512)
        before = rank[None, :] < rank[rows, None]  # q k
        lower[rows] = np.where(before, W[rows], 0).sum(1, dtype=np.float64)
    lower = lower[order]
    deg = (W.sum(1, dtype=np.float64) + c * n)[order]  # q, sorted
    diag = W.diagonal().astype(np.float64)[order]
    m = np.arange(1, n)  # |A| for A = first m nodes
    assoc_aa = np.cumsum(2.0 * lower + diag)[:-1] + c * m.astype(np.float64) ** 2
    vol_a = np.cumsum(deg)[:-1]
    vol_b = deg.sum() - vol_a
    cut = np.maximum(vol_a - assoc_aa, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncut = cut / vol_a + cut / vol_b
    ys = y[order]
    valid = (m >= min_size) & (n - m >= min_size) & (ys[1:] > ys[:-1]) & np.isfinite(ncut)
    if not valid.any():
        return float("inf"), None
    best = int(np.flatnonzero(valid)[np.argmin(ncut[valid])])
    mask = np.zeros(n, dtype=bool)
    mask[order[: best + 1]] = True
    return float(ncut[best]), mask


def _component_cut(W: np.ndarray, min_size: int):
    """If the graph (W > 0) is disconnected: (0.0, mask of its largest component); else None."""
    n = W.shape[0]
    if n < 2 * max(min_size, 1) or np.count_nonzero(W) == W.size:
        return None
    seen = np.zeros(n, dtype=bool)  # breadth-first search from node 0 with dense row blocks
    seen[0] = True
    frontier = np.array([0])
    while frontier.size:
        reached = np.zeros(n, dtype=bool)
        for start in range(0, frontier.size, 256):
            reached |= (W[frontier[start:start + 256]] > 0).any(0)
        frontier = np.flatnonzero(reached & ~seen)
        seen[frontier] = True
    if seen.all():
        return None  # connected (the common case: no sparse graph needed)
    n_comp, comp = csgraph.connected_components(csr_matrix(W > 0), directed=False)
    if n_comp < 2:
        return None
    sizes = np.bincount(comp)
    mask = comp == int(np.argmax(sizes))
    if mask.sum() < min_size or (~mask).sum() < min_size:
        return None
    return 0.0, mask


# ----------------------------------------------------------------------------------------------
# Automatic tau and the recursion
# ----------------------------------------------------------------------------------------------


def auto_tau(W: np.ndarray, n_eigs: int = 24, tau_cap: float = 0.8, eig_floor: float = 0.35,
             c: float = 0.0, dense_max: int = 768, random_state=None) -> tuple[float, np.ndarray]:
    """The eigengap rule (module docstring): tau and the eigenvalues l_1 = 0 .. l_{m+1}."""
    rng = np.random.default_rng(random_state)
    tau, lam, _ = _auto_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng)
    return tau, lam


def _auto_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng):
    """(tau, eigenvalues (m + 1,), (l_2, Fiedler vector y (q,))) for the eigengap rule."""
    n = W.shape[0]
    if n < 3:
        return 0.0, np.zeros(n), None
    d = W.sum(1, dtype=np.float64) + c * n  # q
    vals, vecs = _deflated_top(W, d, c, min(n_eigs, n - 1), dense_max, rng)
    lam = np.concatenate([[0.0], np.clip(1.0 - vals, 0.0, 2.0)])  # l_1 = 0, l_2, ..., ascending
    floor = max(eig_floor * lam[-1], 1e-12)  # relative to the largest eigenvalue computed
    ratios = np.diff(np.log(np.maximum(lam, floor)))  # ratios[K - 1] = log(l_{K+1} / l_K)
    K = int(np.argmax(ratios)) + 1
    tau = lam[1] / 2 if K == 1 else lam[K]  # l_2 / 2 rejects every cut; else l_{K+1}
    return float(min(tau, tau_cap)), lam, (float(lam[1]), vecs[:, 0] / np.sqrt(d))


def tree_levels(tree: list[NCutNode], n: int) -> np.ndarray:
    """Nested label maps (level, q) from the tree; level 0 = leaves, last = cut depth 1."""
    leaves = [node for node in tree if not node.children]
    deepest = max(node.depth for node in leaves)
    leaf_of = np.full(n, -1, dtype=np.int64)  # q -> leaf id
    for leaf in leaves:
        leaf_of[leaf.members] = leaf.id
    if deepest == 0:
        return np.zeros((1, n), dtype=np.int64)
    levels = []
    for depth in range(deepest, 0, -1):
        # segment id at this depth for every node: itself if shallow enough, else its ancestor
        seg = {}
        for node in tree:
            seg[node.id] = node.id if node.depth <= depth else seg[node.parent]
        ids = np.array([seg[i] for i in range(len(tree))])[leaf_of]  # q
        _, labels = np.unique(ids, return_inverse=True)  # 0..K-1 in node-id order
        levels.append(labels.astype(np.int64))
    return np.stack(levels)  # level q


def ncut_partition(affinity: np.ndarray, tau: float = 0.3, tau_mode: str = "auto",
                   min_size: int = 8, max_depth: int = 6, tau_cap: float = 0.8, n_eigs: int = 24,
                   eig_floor: float = 0.35, dense_max: int = 768, random_state=None) -> NCutPartition:
    """Recursive two-way Normalised Cuts of a symmetric non-negative affinity (q, k).

    The plain-function twin of ``RecursiveNCut`` (as ``spectral_clustering`` is to
    ``SpectralClustering``). Returns the tree, the nested level labels (level, q), the tau used
    and, in auto mode, the root spectrum.
    """
    # 1. check inputs
    W = np.asarray(affinity, dtype=np.float32)  # q k; float32 halves the memory traffic
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 1:
        raise ValueError(f"affinity must be square (q, k), got shape {W.shape}")
    if not np.isfinite(W).all():
        raise ValueError("affinity contains NaN or inf")
    if (W < 0).any():
        raise ValueError(f"affinity must be non-negative, min value {float(W.min())}")
    if not _looks_symmetric(W):
        raise ValueError("affinity must be symmetric")
    if tau_mode not in ("constant", "auto"):
        raise ValueError(f"tau_mode must be 'constant' or 'auto', got {tau_mode!r}")
    if tau_mode == "constant" and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if tau_mode == "auto" and not (n_eigs >= 1 and eig_floor > 0 and tau_cap > 0):
        raise ValueError(f"auto tau needs n_eigs >= 1, eig_floor > 0, tau_cap > 0; got "
                         f"{n_eigs}, {eig_floor}, {tau_cap}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")
    n = W.shape[0]
    total = float(W.sum(dtype=np.float64))
    if total <= 0:
        raise ValueError("affinity is all zeros")
    # a faint background edge (1e-9 of the mean weight) keeps every sub-graph connected
    c = 1e-9 * total / (n * n)
    rng = np.random.default_rng(random_state)

    # 2. no structure at all (every row alike, e.g. all-equal attention): every cut has NCut 1
    start = time.perf_counter()
    flat = _rows_alike(W)

    # 3. tau: constant, or from the root spectrum (eigengap rule); its Fiedler vector is kept
    spectrum, root_fiedler = None, None
    if tau_mode == "auto":
        if flat:
            tau, spectrum = 0.0, np.zeros(1)
        else:
            tau, spectrum, root_fiedler = _auto_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng)

    # 4. breadth-first recursion (docs/design.md §5.3 "Random-walk NCut"): cut each node while its best NCut < tau
    tree: list[dict] = [dict(id=0, parent=-1, children=(), members=np.arange(n), depth=0,
                             ncut=float("nan"), eigenvalue=float("nan"), seconds=0.0)]
    queue = [0]
    while queue:
        node = tree[queue.pop(0)]
        idx = node["members"]
        if node["depth"] >= max_depth or idx.size < 2 * min_size:
            continue
        if node["id"] > 0:
            start = time.perf_counter()
        sub = W if idx.size == n else np.take(np.take(W, idx, 0), idx, 1)  # q k of this segment
        found = _component_cut(sub, min_size)
        if found is not None:
            lam, (value, mask) = 0.0, found  # disconnected: cut along components
        elif flat:
            lam, value, mask = 1.0, 1.0, None
        else:
            lam, y = root_fiedler if node["id"] == 0 and root_fiedler else fiedler_vector(sub, c, dense_max, rng)
            value, mask = (float("inf"), None) if lam >= tau else best_threshold_cut(sub, y, min_size, c)
        node["eigenvalue"] = float(lam)
        node["ncut"] = float(value) if np.isfinite(value) else float("nan")
        node["seconds"] = time.perf_counter() - start
        if mask is None or not value < tau:
            continue
        if not mask[0]:
            mask = ~mask  # first child holds the node's first position (eigenvector sign free)
        kids = []
        for side in (idx[mask], idx[~mask]):
            kid = dict(id=len(tree), parent=node["id"], children=(), members=np.sort(side),
                       depth=node["depth"] + 1, ncut=float("nan"), eigenvalue=float("nan"),
                       seconds=0.0)
            tree.append(kid)
            kids.append(kid["id"])
            queue.append(kid["id"])
        node["children"] = tuple(kids)

    nodes = [NCutNode(**node) for node in tree]
    return NCutPartition(nodes, tree_levels(nodes, n), float(tau), spectrum)


def _rows_alike(W: np.ndarray, rtol: float = 1e-6) -> bool:
    """True when every row of W is proportional to the first (rank one: no structure to cut)."""
    first = W[0] / W[0].sum()
    for start in range(0, W.shape[0], 512):  # blocks: no (q, k) temporaries
        rows = W[start:start + 512]
        rows = rows / np.maximum(rows.sum(1, keepdims=True), 1e-300)
        if np.abs(rows - first).max() > rtol * first.max():
            return False
    return True


def _looks_symmetric(W: np.ndarray, n_rows: int = 64) -> bool:
    """W == W^T on a fixed sample of rows (a full check costs as much as a cut)."""
    rows = np.unique(np.linspace(0, W.shape[0] - 1, min(n_rows, W.shape[0])).astype(int))
    a, b = W[rows], W[:, rows].T
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-7 * max(float(np.abs(a).max()), 1e-30)))


# ----------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------


class RecursiveNCut:
    """Hierarchical segmentation of one image by recursive random-walk NCut (docs/design.md §5.3, §5.4).

    Keyword hyper-parameters are those of ``NCutConfig`` (``RecursiveNCut(**asdict(config))``).
    ``fit(attn, features=None)`` with attn (qy, qx, ky, kx) or (q, k) sets:

    - ``tree_``: list[NCutNode] in id order (members are q indices at attention resolution)
    - ``level_labels_``: (level, y, x) int64, level 0 = finest (leaves), last = coarsest, nested
    - ``labels_``: (y, x) the finest level
    - ``tau_``: the tau used (the constant, or the auto rule's value)
    - ``spectrum_``: (m + 1,) root eigenvalues l_1 = 0 .. l_{m+1} in auto mode, else None
    - ``n_segments_``: tuple of segment counts per level
    """

    def __init__(self, *, tau=0.3, tau_mode="auto", walk_steps=1, affinity="random_walk",
                 power=10.0, min_size=8, max_depth=6, tau_cap=0.8, n_eigs=24, eig_floor=0.35,
                 teleport=1e-6, dense_max=768, out_size=None, random_state=0):
        self.tau = tau
        self.tau_mode = tau_mode
        self.walk_steps = walk_steps
        self.affinity = affinity
        self.power = power
        self.min_size = min_size
        self.max_depth = max_depth
        self.tau_cap = tau_cap
        self.n_eigs = n_eigs
        self.eig_floor = eig_floor
        self.teleport = teleport
        self.dense_max = dense_max
        self.out_size = out_size
        self.random_state = random_state

    @classmethod
    def from_config(cls, config: NCutConfig) -> "RecursiveNCut":
        return cls(**asdict(config))

    def fit(self, attn: np.ndarray, features: np.ndarray | None = None) -> "RecursiveNCut":
        # 1. check hyper-parameters
        if not isinstance(self.walk_steps, (int, np.integer)) or self.walk_steps < 1:
            raise ValueError(f"walk_steps must be an integer >= 1, got {self.walk_steps!r}")
        if self.out_size is not None and self.out_size < 1:
            raise ValueError(f"out_size must be >= 1 or None, got {self.out_size}")
        # 2. transition matrix and affinity (docs/design.md §5.3 "Random-walk NCut")
        W, (h, w) = attention_affinity(attn, self.affinity, self.walk_steps, self.power, features,
                                       self.teleport, self.random_state)  # q k
        # 3. recursive cuts and levels (docs/design.md §5.3, §5.4)
        part = ncut_partition(W, tau=self.tau, tau_mode=self.tau_mode, min_size=self.min_size,
                              max_depth=self.max_depth, tau_cap=self.tau_cap, n_eigs=self.n_eigs,
                              eig_floor=self.eig_floor, dense_max=self.dense_max,
                              random_state=self.random_state)
        levels = part.level_labels.reshape(-1, h, w)  # level y x
        # 4. optional nearest upsampling to image size
        if self.out_size is not None:
            ys = (np.arange(self.out_size) * h) // self.out_size
            xs = (np.arange(self.out_size) * w) // self.out_size
            levels = levels[:, ys][:, :, xs]
        self.tree_ = part.tree
        self.level_labels_ = levels
        self.labels_ = levels[0]
        self.tau_ = part.tau
        self.spectrum_ = part.spectrum
        self.n_segments_ = tuple(int(lv.max()) + 1 for lv in levels)
        return self

    def fit_predict(self, attn: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        return self.fit(attn, features).labels_
