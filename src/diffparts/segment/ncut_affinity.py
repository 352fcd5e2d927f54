"""Affinities for the recursive NCut (docs/design.md §5.3 "Random-walk NCut").

What this file holds: the transition matrix ``P`` of the random walk that a self-attention
tensor defines, its stationary distribution, k-step walks ``P^k``, and the three affinity
builders the cut can run on:

- ``"random_walk"``: ``W = (Pi P^k + (P^k)^T Pi) / 2`` (Ivanova et al., WACV 2026), ``pi`` the
  stationary distribution of ``P``. ``W`` is the flow of probability between two positions at
  equilibrium, so a cut's NCut = P(A -> B | A) + P(B -> A | B) (Meila-Shi).
- ``"cosine"`` with ``rescale="minmax"`` (DiffCut, Couairon et al., NeurIPS 2024): the cosine
  similarity of features ``f_q`` is rescaled per image to [0, 1] by its minimum and maximum,
  then raised to the power alpha (``power``, DiffCut's alpha = 10). On diffuse attention the raw
  cosines all lie close to 1; rescaling spreads them before the power sharpens them.
- ``"cosine"`` with ``rescale="clip"``: ``max(cos, 0) ** power`` (the variant before DiffCut's).

The features of the cosine affinity are the rows of ``P^k`` (``attention_features``) unless the
caller gives others (UNet up-block outputs, attention-block outputs; (q, d) or (y, x, d)).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

__all__ = [
    "AFFINITIES",
    "RESCALES",
    "attention_affinity",
    "attention_features",
    "cosine_affinity",
    "key_pool_factor",
    "normalised_features",
    "pool_keys",
    "random_walk_affinity",
    "stationary_distribution",
    "transition_matrix",
    "walk_power",
]

AFFINITIES = ("random_walk", "cosine")
RESCALES = ("minmax", "clip")


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


def walk_power(P: np.ndarray, steps: int) -> np.ndarray:
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
    W = walk_power(P, walk_steps) * pi[:, None].astype(np.float32)  # q k: flow pi_q P^k_qk
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




def normalised_features(features: np.ndarray, n: int | None = None) -> np.ndarray:
    """Features (q, d) or (y, x, d) as float32 rows of unit length; checks finiteness and zero rows."""
    F = np.asarray(features, dtype=np.float32)
    if F.ndim == 3:
        F = F.reshape(-1, F.shape[-1])  # (y x) d -> q d
    if F.ndim != 2:
        raise ValueError(f"features must be (q, d) or (y, x, d), got shape {F.shape}")
    if n is not None and F.shape[0] != n:
        raise ValueError(f"features have {F.shape[0]} rows, attention has {n} queries")
    if not np.isfinite(F).all():
        raise ValueError("features contain NaN or inf")
    norms = np.linalg.norm(F, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"feature row q={int(np.argmin(norms[:, 0]))} is all zeros")
    return F / norms


def _gram(F: np.ndarray, block: int = 256) -> np.ndarray:
    """``F F^T`` (q, k) float32 with syrk (half the flops of a matmul), mirrored block by block."""
    G = scipy.linalg.blas.ssyrk(1.0, F)  # q k (upper triangle only)
    for i in range(0, G.shape[0], block):
        diag = G[i:i + block, i:i + block]
        G[i:i + block, i:i + block] = np.triu(diag) + np.triu(diag, 1).T
        G[i + block:, i:i + block] = G[i:i + block, i + block:].T
    return G.T  # syrk's output is Fortran-ordered; G is symmetric, so G.T is G in C order (row blocks contiguous)


def _power_inplace(W: np.ndarray, power: float, scratch: np.ndarray | None = None) -> np.ndarray:
    """``W ** power`` for W in [0, 1], overwriting W; integer powers by repeated squaring (float32
    pow is ~50x slower), with one extra array at most (``scratch`` when given: no allocation)."""
    if float(power).is_integer() and 1 <= power <= 64:
        p = int(power)
        result = None  # product of the squares W^(2^i) for the set bits of p
        base = W
        while True:
            if p & 1:
                if result is None:
                    if p == 1:
                        result = base
                    elif scratch is not None and scratch.shape == base.shape:
                        result = scratch
                        np.copyto(result, base)
                    else:
                        result = base.copy()
                else:
                    np.multiply(result, base, out=result)
            p >>= 1
            if not p:
                return result
            np.multiply(base, base, out=base)
    W **= np.float32(power)
    return W


def cosine_affinity(features: np.ndarray, power: float = 10.0, rescale: str = "minmax",
                    block: int = 128) -> np.ndarray:
    """Cosine affinity (q, k) float32 of features (q, d) or (y, x, d) (module docstring).

    ``rescale="minmax"``: ``((cos - min) / (max - min)) ** power`` over the whole image (DiffCut);
    all-equal features (max == min) give all ones. ``rescale="clip"``: ``max(cos, 0) ** power``.
    """
    if power <= 0:
        raise ValueError(f"power must be > 0, got {power}")
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
    G = _gram(normalised_features(features))  # q k
    lo, scale = None, None
    # x ** power < the smallest normal float32 (1.2e-38) below this x; every square on the way stays above it
    tiny = np.float32(2.0 * float(np.finfo(np.float32).tiny) ** (1.0 / power)) if power >= 1 else np.float32(0)
    if rescale == "minmax":
        lo, hi = float(G.min()), float(G.max())
        if hi - lo <= 1e-12 * max(abs(hi), 1.0):
            return np.ones_like(G)
        lo, scale = np.float32(lo), np.float32(1.0 / (hi - lo))
    scratch = np.empty((block, G.shape[1]), dtype=G.dtype)
    for i in range(0, G.shape[0], block):  # row blocks: each stays in cache through every step
        rows = G[i:i + block]
        if lo is not None:
            rows -= lo  # >= 0 exactly: lo is the minimum
            rows *= scale  # <= 1 up to one rounding: no clip needed
        else:
            np.clip(rows, 0.0, 1.0, out=rows)
        rows[rows < tiny] = 0.0  # their power would be subnormal: 0 instead (subnormals are ~50x slower)
        powered = _power_inplace(rows, power, scratch)
        if powered is not rows:
            rows[...] = powered
    return G


def key_pool_factor(shape: tuple[int, int], max_dim: int | None) -> int:
    """The smallest power of two f such that f x f key blocks leave at most ``max_dim`` keys
    (1 when ``max_dim`` is None or already met; stops where the grid no longer divides)."""
    ky, kx = shape
    f = 1
    while max_dim is not None and (ky // f) * (kx // f) > max_dim and ky % (2 * f) == 0 and kx % (2 * f) == 0:
        f *= 2
    return f


def pool_keys(P: np.ndarray, shape: tuple[int, int], max_dim: int | None) -> np.ndarray:
    """Rows of ``P`` (q, ky * kx) summed over f x f key blocks (``key_pool_factor``). A row stays
    a distribution; with f = 1, ``P`` itself."""
    ky, kx = shape
    f = key_pool_factor(shape, max_dim)
    if f == 1:
        return P
    grid = P.reshape(-1, ky, kx)  # q ky kx
    out = np.zeros((grid.shape[0], ky // f, kx // f), dtype=np.float32)  # q ky/f kx/f
    for a in range(f):  # f * f strided adds: one pass over P, no strided reduction
        for b in range(f):
            out += grid[:, a::f, b::f]
    return out.reshape(P.shape[0], -1)


def attention_features(P: np.ndarray, walk_steps: int = 1, features: np.ndarray | None = None,
                       shape: tuple[int, int] | None = None, max_dim: int | None = None) -> np.ndarray:
    """The features the cosine affinity and concept assignment use: given ones, else rows of
    ``P^k`` (q, keys), their keys pooled to at most ``max_dim`` (``pool_keys``; needs ``shape``)."""
    if features is None:
        rows = walk_power(P, walk_steps)  # q k: k-step transition rows
        if max_dim is not None and shape is not None:
            rows = pool_keys(rows, shape, max_dim)
        return normalised_features(rows)
    return normalised_features(features, P.shape[0])


def attention_affinity(attn: np.ndarray, affinity: str = "random_walk", walk_steps: int = 1,
                       power: float = 10.0, features: np.ndarray | None = None,
                       teleport: float = 1e-6, random_state=None,
                       rescale: str = "minmax") -> tuple[np.ndarray, tuple[int, int]]:
    """Affinity (q, k) float32 and the (height, width) grid from attention (module docstring)."""
    P, shape = transition_matrix(attn)  # q k
    if affinity == "random_walk":
        if features is not None:
            raise ValueError("features are used only by affinity='cosine'")
        return random_walk_affinity(P, walk_steps, teleport=teleport, random_state=random_state), shape
    if affinity == "cosine":
        return cosine_affinity(attention_features(P, walk_steps, features), power, rescale), shape
    raise ValueError(f"affinity must be one of {AFFINITIES}, got {affinity!r}")
