"""The spectrum of the recursive NCut: Fiedler vectors and the automatic threshold (docs/design.md §5.3).

What this file holds. (1) The eigen-solves (Shi & Malik 2000): the second smallest generalised eigenpair of ``(D - W) y = lambda D y``
(the Fiedler vector a two-way cut thresholds), computed as the top eigenvectors of
``D^-1/2 W D^-1/2`` with the trivial one (``sqrt d``) deflated: dense ``eigh`` up to
``dense_max`` nodes, ARPACK ``eigsh`` (seeded start vector) above. ``deflated_top`` also gives
the automatic threshold its spectrum.

(2) ``auto_tau``, the eigengap rule for the stop threshold.
Compute the smallest generalised
eigenvalues ``0 = l_1 <= l_2 <= ... <= l_{m+1}`` (m = ``n_eigs``) of the whole image's graph,
take K at the largest ratio ``l_{K+1} / l_K`` (eigenvalues below ``eig_floor * l_{m+1}`` count
as that floor), and set ``tau = l_{K+1}`` (``l_2 / 2`` when K = 1), capped at ``tau_cap``.

Why: a two-way cut's NCut is the Rayleigh quotient of its indicator vector. With K groups,
cuts between groups lie (nearly) in the span of the first K eigenvectors and cost about ``l_K``
or less, while a cut through a group is D-orthogonal to that span and, by Courant-Fischer, costs
at least ``l_{K+1}``: the cheapest a "wrong" cut can be on this image. Ratios rather than
differences because between-group eigenvalues span orders of magnitude while within-group ones
crowd together; the floor keeps ratios among near-free cuts from winning. With one group the
largest ratio is at K = 1 and ``l_2 / 2`` rejects every cut. Where the spectrum has no gap
(DiffCut's sharpened affinities on small models) the rule can reject every cut too: the
constant tau of DiffCut is the alternative (``tau_mode="constant"``; docs/segment.md compares).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

__all__ = ["auto_tau", "deflated_top", "eigengap_tau", "fiedler_vector", "oriented", "spectrum_tau"]


def deflated_top(W: np.ndarray, d: np.ndarray, c: float, k: int, dense_max: int, rng):
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
                                               ncv=min(n, max(2 * k + 1, 64)))  # a wide basis: fewer restarts
    except scipy.sparse.linalg.ArpackNoConvergence:  # rare: fall back to the dense solver
        return deflated_top(W, d, c, k, n, rng)
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
    vals, vecs = deflated_top(W, d, c, 1, dense_max, rng)
    mu = float(vals[0])
    y = vecs[:, 0] / np.sqrt(d)  # q: generalised eigenvector
    return 1.0 - mu, y


def oriented(y: np.ndarray) -> np.ndarray:
    """``y`` with the sign that makes its largest-magnitude entry positive (eigenvectors are sign-free;
    a fixed sign makes threshold candidates, and so partitions, reproducible across solvers)."""
    return y if y[int(np.argmax(np.abs(y)))] >= 0 else -y


def auto_tau(W: np.ndarray, n_eigs: int = 24, tau_cap: float = 0.8, eig_floor: float = 0.35,
             c: float = 0.0, dense_max: int = 768, random_state=None) -> tuple[float, np.ndarray]:
    """The eigengap rule (module docstring): tau and the eigenvalues l_1 = 0 .. l_{m+1}."""
    rng = np.random.default_rng(random_state)
    tau, lam, _ = spectrum_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng)
    return tau, lam


def spectrum_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng):
    """The rule on ``W``: (tau, eigenvalues (m + 1,), (l_2, Fiedler vector y (q,))) for the eigengap rule."""
    n = W.shape[0]
    if n < 3:
        return 0.0, np.zeros(n), None
    d = W.sum(1, dtype=np.float64) + c * n  # q
    vals, vecs = deflated_top(W, d, c, min(n_eigs, n - 1), dense_max, rng)
    tau, lam = eigengap_tau(vals, tau_cap, eig_floor)
    return tau, lam, (float(lam[1]), vecs[:, 0] / np.sqrt(d))


def eigengap_tau(vals: np.ndarray, tau_cap: float, eig_floor: float) -> tuple[float, np.ndarray]:
    """The rule from the top eigenvalues ``mu`` of the deflated ``D^-1/2 W D^-1/2`` (descending):
    (tau, generalised eigenvalues l_1 = 0, l_2 = 1 - mu_1, ... ascending)."""
    lam = np.concatenate([[0.0], np.clip(1.0 - np.asarray(vals, dtype=np.float64), 0.0, 2.0)])
    floor = max(eig_floor * lam[-1], 1e-12)  # relative to the largest eigenvalue computed
    ratios = np.diff(np.log(np.maximum(lam, floor)))  # ratios[K - 1] = log(l_{K+1} / l_K)
    K = int(np.argmax(ratios)) + 1
    tau = lam[1] / 2 if K == 1 else lam[K]  # l_2 / 2 rejects every cut; else l_{K+1}
    return float(min(tau, tau_cap)), lam
