"""The recursive two-way Normalised Cut and its tree of nested levels (docs/design.md §5.3, §5.4).

What this file holds: one cut (``best_threshold_cut``: thresholds on the Fiedler vector, the
lowest Shi-Malik NCut(A, B) = cut/assoc(A, V) + cut/assoc(B, V) wins), the breadth-first
recursion that cuts each segment while its best NCut is below ``tau`` (``ncut_partition``), the
tree nodes and the nested level maps read off the tree (``tree_levels``).

Thresholds (``n_thresholds``): DiffCut's, after scikit-image's ``cut_normalized``, are 100
values evenly spaced over [min y, max y) with A = {y > t}; ``n_thresholds=0`` tries every split
between consecutive distinct values of ``y`` instead (the exact minimum along ``y``). Either way
every candidate's NCut is exact, from cumulative sums in sorted order (O(n^2) for all of them).

Tree and levels. Node 0 is the whole image at depth 0; a split node has two children at depth
d + 1; nodes are numbered breadth first. With D the deepest leaf, level ``l`` holds the segments
at cut depth ``D - l``: every node of that depth, plus every leaf that stopped shallower. So
level 0 = all leaves (finest), the last level = depth 1 (coarsest), every level a coarsening of
the one below (nested). An image with no accepted cut has one level with one segment.

Guards: attention whose rows are all alike -> one segment; a disconnected graph (exact zeros)
is split along its connected components with NCut 0; ``min_size`` bounds both sides of every
cut, ``max_depth`` the tree; a faint background edge (1e-9 of the mean weight) keeps every
sub-graph connected for the eigen-solver.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.sparse import csgraph, csr_matrix

from diffparts.segment.ncut_spectrum import fiedler_vector, oriented, spectrum_tau

__all__ = [
    "NCutNode",
    "NCutPartition",
    "best_threshold_cut",
    "check_partition_params",
    "grow_tree",
    "ncut_partition",
    "tree_levels",
]


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


def best_threshold_cut(W: np.ndarray, y: np.ndarray, min_size: int = 1, c: float = 0.0,
                       n_thresholds: int = 0):
    """The threshold on ``y`` with the lowest NCut(A, B); returns (ncut, mask of A) or (inf, None).

    Candidates: with ``n_thresholds=0`` all splits between consecutive distinct sorted values of
    ``y``; else A = {y > t} for ``n_thresholds`` values t evenly spaced over [min y, max y)
    (DiffCut / scikit-image; the first of equal minima wins). Both sides need ``min_size`` nodes;
    each NCut is exact (cumulative sums in sorted order).
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
    if n_thresholds:
        # |{y <= t}| for each threshold t: the split "first m in sorted order | the rest"
        ts = np.linspace(ys[0], ys[-1], int(n_thresholds), endpoint=False)
        sizes = np.searchsorted(ys, ts, side="right")  # thresholds
        sizes = sizes[(sizes >= max(min_size, 1)) & (n - sizes >= max(min_size, 1))]
        values = ncut[sizes - 1] if sizes.size else np.empty(0)
        ok = np.isfinite(values)
        if not ok.any():
            return float("inf"), None
        best = int(sizes[ok][np.argmin(values[ok])]) - 1
    else:
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


def check_partition_params(tau, tau_mode, min_size, max_depth, tau_cap, n_eigs, eig_floor,
                           n_thresholds) -> None:
    """ValueError naming the first hyper-parameter of the recursion that is out of range."""
    if tau_mode not in ("constant", "auto"):
        raise ValueError(f"tau_mode must be 'constant' or 'auto', got {tau_mode!r}")
    if tau_mode == "constant" and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if tau_mode == "auto" and not (n_eigs >= 1 and eig_floor > 0 and tau_cap > 0):
        raise ValueError(f"auto tau needs n_eigs >= 1, eig_floor > 0, tau_cap > 0; got "
                         f"{n_eigs}, {eig_floor}, {tau_cap}")
    if n_thresholds < 0:
        raise ValueError(f"n_thresholds must be >= 0 (0: every split), got {n_thresholds}")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if max_depth < 0:
        raise ValueError(f"max_depth must be >= 0, got {max_depth}")


def ncut_partition(affinity: np.ndarray, tau: float = 0.3, tau_mode: str = "auto",
                   min_size: int = 8, max_depth: int = 6, tau_cap: float = 0.8, n_eigs: int = 24,
                   eig_floor: float = 0.35, dense_max: int = 768, random_state=None,
                   n_thresholds: int = 0, _trusted: bool = False) -> NCutPartition:
    """Recursive two-way Normalised Cuts of a symmetric non-negative affinity (q, k).

    The plain-function twin of ``RecursiveNCut`` (as ``spectral_clustering`` is to
    ``SpectralClustering``). Returns the tree, the nested level labels (level, q), the tau used
    and, in auto mode, the root spectrum.
    """
    # 1. check inputs (an affinity built by ncut_affinity from checked attention is trusted)
    W = np.asarray(affinity, dtype=np.float32)  # q k; float32 halves the memory traffic
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 1:
        raise ValueError(f"affinity must be square (q, k), got shape {W.shape}")
    if not _trusted:
        if not np.isfinite(W).all():
            raise ValueError("affinity contains NaN or inf")
        if (W < 0).any():
            raise ValueError(f"affinity must be non-negative, min value {float(W.min())}")
        if not _looks_symmetric(W):
            raise ValueError("affinity must be symmetric")
    check_partition_params(tau, tau_mode, min_size, max_depth, tau_cap, n_eigs, eig_floor, n_thresholds)
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
            tau, spectrum, root_fiedler = spectrum_tau(W, n_eigs, tau_cap, eig_floor, c, dense_max, rng)

    # 4. breadth-first recursion (docs/design.md §5.3 "Random-walk NCut"): cut each node while its best NCut < tau
    def cut_node(idx: np.ndarray, is_root: bool):
        sub = W if idx.size == n else W[np.ix_(idx, idx)]  # q k of this segment (one copy)
        found = _component_cut(sub, min_size)
        if found is not None:
            return 0.0, found[0], found[1]  # disconnected: cut along components
        if flat:
            return 1.0, 1.0, None
        lam, y = root_fiedler if is_root and root_fiedler else fiedler_vector(sub, c, dense_max, rng)
        if lam >= tau:  # every cut's NCut >= lambda_2 (Rayleigh quotient): none can pass
            return lam, float("inf"), None
        return (lam, *best_threshold_cut(sub, oriented(y), min_size, c, n_thresholds))

    nodes = grow_tree(n, cut_node, tau, min_size, max_depth, start)
    return NCutPartition(nodes, tree_levels(nodes, n), float(tau), spectrum)


def grow_tree(n: int, cut_node, tau: float, min_size: int, max_depth: int,
              start: float | None = None) -> list[NCutNode]:
    """The breadth-first recursion over ``n`` nodes; ``cut_node(idx, is_root)`` returns
    (lambda_2, best NCut, mask over idx of one side or None) for the segment ``idx``.

    A segment is split while its best NCut < tau, both sides hold ``min_size`` nodes and it is
    shallower than ``max_depth``. ``start``: when the root's timing began (its spectrum)."""
    tree: list[dict] = [dict(id=0, parent=-1, children=(), members=np.arange(n), depth=0,
                             ncut=float("nan"), eigenvalue=float("nan"), seconds=0.0)]
    queue = [0]
    while queue:
        node = tree[queue.pop(0)]
        idx = node["members"]
        if node["depth"] >= max_depth or idx.size < 2 * min_size:
            continue
        if node["id"] > 0 or start is None:
            start = time.perf_counter()
        lam, value, mask = cut_node(idx, node["id"] == 0)
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
    return [NCutNode(**node) for node in tree]


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
