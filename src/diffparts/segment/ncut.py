"""Recursive Normalised Cuts on diffusion self-attention: the estimator and its config (docs/design.md §5.3, §5.4).

What this file holds: ``NCutConfig`` and ``RecursiveNCut`` (scikit-learn style), which chain the
pieces that live beside it, and the names other code imports from ``diffparts.segment.ncut``:

- ``ncut_affinity``: the random walk ``P`` an attention tensor defines (Ivanova et al., WACV
  2026) and the affinities: the random-walk flow ``sym(Pi P^k)``, and the cosine of features
  (rows of ``P^k`` or given UNet features) min-max rescaled per image and raised to alpha
  (DiffCut, Couairon et al., NeurIPS 2024) or clipped at 0;
- ``ncut_spectrum``: the Fiedler vector and the automatic threshold (eigengap rule);
- ``ncut_cut``: one Shi-Malik cut by thresholds on the Fiedler vector, the recursion while the
  best NCut is below tau, the tree and its nested levels;
- ``ncut_assign``: labels at image resolution by DiffCut's concept assignment (nearest mean
  feature on bilinearly upsampled features) or nearest upsampling, optional PAMR refinement;
- ``ncut_torch``: the same matrix work in torch on any device (``device=``), same labels.

``fit(attn, features=None, image=None)``:
1. ``P`` from the attention; the features (given, else the rows of ``P^k``);
2. the affinity ``W`` (q, k);
3. the recursive cut: a node is split while its best NCut < tau (constant, or the eigengap
   rule); the tree's depths give nested levels at attention resolution;
4. with ``out_size``: the finest level at image resolution (``assign``), optionally refined by
   PAMR on ``image`` (``refine_iters``), and the coarser levels read off the tree (nested).

Defaults (``NCutConfig``) were chosen on validation birds (seed 999) and measured on held-out
ones (seed 1234); the table is in docs/segment.md ("Random-walk Normalised Cuts").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from diffparts.segment.ncut_affinity import (
    AFFINITIES,
    RESCALES,
    attention_affinity,
    attention_features,
    cosine_affinity,
    normalised_features,
    random_walk_affinity,
    stationary_distribution,
    transition_matrix,
    walk_power,
)
from diffparts.segment.ncut_assign import (
    ASSIGNMENTS,
    concept_assignment,
    levels_from_finest,
    nearest_upsample,
    pamr,
)
from diffparts.segment.ncut_cut import (
    NCutNode,
    NCutPartition,
    best_threshold_cut,
    ncut_partition,
    tree_levels,
)
from diffparts.segment.ncut_spectrum import auto_tau, fiedler_vector

__all__ = [
    "NCutConfig",
    "NCutNode",
    "NCutPartition",
    "RecursiveNCut",
    "attention_affinity",
    "attention_features",
    "auto_tau",
    "best_threshold_cut",
    "concept_assignment",
    "cosine_affinity",
    "fiedler_vector",
    "levels_from_finest",
    "ncut_partition",
    "normalised_features",
    "pamr",
    "random_walk_affinity",
    "stationary_distribution",
    "transition_matrix",
    "tree_levels",
    "walk_power",
]


@dataclass(frozen=True)
class NCutConfig:
    """Hyper-parameters of ``RecursiveNCut`` (same names as its keyword arguments)."""

    tau: float = 0.4  # constant stop: split a node while its best NCut < tau (ignored if auto)
    tau_mode: str = "constant"  # "constant" or "auto" (eigengap rule, auto_tau; lost on validation birds)
    walk_steps: int = 1  # k in P^k: multi-node paths of the random walk (paper's long range)
    affinity: str = "cosine"  # "cosine" (feature similarity, DiffCut) or "random_walk" (Pi P^k sym.)
    power: float = 10.0  # alpha: exponent on the (rescaled) cosine similarity (cosine only)
    rescale: str = "minmax"  # cosine: "minmax" per image to [0, 1] (DiffCut) or "clip" at 0
    max_keys: int | None = 1024  # attention rows as features: keys summed in 2x2 blocks down to this many (None: all)
    min_size: int = 1  # smallest segment (positions at attention resolution) a cut may create
    max_depth: int = 6  # deepest cut (at most 2**max_depth leaves)
    n_thresholds: int = 0  # thresholds tried on the Fiedler vector: 0 every split, 100 DiffCut's
    tau_cap: float = 0.8  # auto tau never exceeds this (NCut ~ 1 is a chance-level cut)
    n_eigs: int = 24  # eigenvalues the auto rule looks at (largest K it can find)
    eig_floor: float = 0.35  # auto rule: eigenvalues below eig_floor * l_{m+1} count as that
    teleport: float = 1e-6  # restart probability for the stationary distribution (uniqueness)
    dense_max: int = 768  # sub-problems up to this many nodes use dense eigh, larger ARPACK
    assign: str = "concept"  # labels at out_size: "concept" (DiffCut) or "nearest" upsampling
    refine_iters: int = 0  # PAMR iterations on the image at out_size (0: off; needs fit(image=))
    out_size: int | None = None  # side of the label maps (None: the attention side R)
    random_state: int | None = 0  # seed of the ARPACK start vectors: a resumed run equals an uninterrupted one
    device: str | None = None  # None: numpy; "cpu", "cuda", ...: the matrix work in torch there


class RecursiveNCut:
    """Hierarchical segmentation of one image by recursive NCut (docs/design.md §5.3, §5.4).

    Keyword hyper-parameters are those of ``NCutConfig`` (``RecursiveNCut(**asdict(config))``).
    ``fit(attn, features=None, image=None)`` with attn (qy, qx, ky, kx) or (q, k), features
    (q, d) or (qy, qx, d) (optional: replaces the attention rows as the cosine affinity's and the
    concept assignment's features), image (Y, X, 3) at ``out_size`` (PAMR only) sets:

    - ``tree_``: list[NCutNode] in id order (members are q indices at attention resolution)
    - ``level_labels_``: (level, y, x) int64, level 0 = finest (leaves), last = coarsest, nested
    - ``labels_``: (y, x) the finest level
    - ``tau_``: the tau used (the constant, or the auto rule's value)
    - ``spectrum_``: (m + 1,) root eigenvalues l_1 = 0 .. l_{m+1} in auto mode, else None
    - ``n_segments_``: tuple of segment counts per level
    """

    def __init__(self, *, tau=0.4, tau_mode="constant", walk_steps=1, affinity="cosine",
                 power=10.0, rescale="minmax", max_keys=1024, min_size=1, max_depth=6, n_thresholds=0,
                 tau_cap=0.8, n_eigs=24, eig_floor=0.35, teleport=1e-6, dense_max=768,
                 assign="concept", refine_iters=0, out_size=None, random_state=0, device=None):
        self.tau = tau
        self.tau_mode = tau_mode
        self.walk_steps = walk_steps
        self.affinity = affinity
        self.power = power
        self.rescale = rescale
        self.max_keys = max_keys
        self.min_size = min_size
        self.max_depth = max_depth
        self.n_thresholds = n_thresholds
        self.tau_cap = tau_cap
        self.n_eigs = n_eigs
        self.eig_floor = eig_floor
        self.teleport = teleport
        self.dense_max = dense_max
        self.assign = assign
        self.refine_iters = refine_iters
        self.out_size = out_size
        self.random_state = random_state
        self.device = device

    @classmethod
    def from_config(cls, config: NCutConfig) -> "RecursiveNCut":
        return cls(**asdict(config))

    def _check(self) -> None:
        if not isinstance(self.walk_steps, (int, np.integer)) or self.walk_steps < 1:
            raise ValueError(f"walk_steps must be an integer >= 1, got {self.walk_steps!r}")
        if self.out_size is not None and self.out_size < 1:
            raise ValueError(f"out_size must be >= 1 or None, got {self.out_size}")
        if self.affinity not in AFFINITIES:
            raise ValueError(f"affinity must be one of {AFFINITIES}, got {self.affinity!r}")
        if self.rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}, got {self.rescale!r}")
        if self.assign not in ASSIGNMENTS:
            raise ValueError(f"assign must be one of {ASSIGNMENTS}, got {self.assign!r}")
        if self.refine_iters < 0:
            raise ValueError(f"refine_iters must be >= 0, got {self.refine_iters}")

    def fit(self, attn, features=None, image=None) -> "RecursiveNCut":
        # 1. check hyper-parameters and inputs
        self._check()
        if self.refine_iters and (image is None or self.out_size is None):
            raise ValueError("refine_iters > 0 (PAMR) needs out_size and fit(..., image=) at that size")
        params = dict(tau=self.tau, tau_mode=self.tau_mode, min_size=self.min_size,
                      max_depth=self.max_depth, tau_cap=self.tau_cap, n_eigs=self.n_eigs,
                      eig_floor=self.eig_floor, dense_max=self.dense_max,
                      random_state=self.random_state, n_thresholds=self.n_thresholds)
        need_features = self.affinity == "cosine" or (self.out_size is not None and self.assign == "concept")
        if self.device is not None:
            # 2-3 in torch on the device (diffparts.segment.ncut_torch): same affinity, same cut
            from diffparts.segment.ncut_torch import torch_ncut

            part, (h, w), F = torch_ncut(attn, features, self.device, affinity=self.affinity,
                                         walk_steps=self.walk_steps, power=self.power,
                                         rescale=self.rescale, max_keys=self.max_keys,
                                         teleport=self.teleport,
                                         need_features=need_features, **params)
        else:
            # 2. transition matrix, features and affinity (docs/design.md §5.3 "Random-walk NCut")
            P, (h, w) = transition_matrix(attn)  # q k
            if self.affinity == "random_walk" and features is not None:
                raise ValueError("features are used only by affinity='cosine'")
            F = (attention_features(P, self.walk_steps, features, (h, w), self.max_keys)
                 if need_features else None)  # q d
            if self.affinity == "random_walk":
                W = random_walk_affinity(P, self.walk_steps, teleport=self.teleport,
                                         random_state=self.random_state)  # q k
            else:
                W = cosine_affinity(F, self.power, self.rescale)  # q k
            del P
            # 3. recursive cuts and levels (docs/design.md §5.3, §5.4)
            part = ncut_partition(W, **params, _trusted=True)  # W: finite, >= 0, symmetric by construction
        levels = part.level_labels.reshape(-1, h, w)  # level y x
        # 4. labels at out_size: the finest by concept assignment or nearest upsampling, PAMR,
        #    the coarser ones through the tree (nested)
        if self.out_size is not None:
            if self.assign == "concept" and levels[0].max() > 0 and self.device is not None:
                from diffparts.segment.ncut_torch import torch_concept_assignment

                finest = torch_concept_assignment(F, part.level_labels[0], (h, w), self.out_size)
            elif self.assign == "concept" and levels[0].max() > 0:
                finest = concept_assignment(F, part.level_labels[0], (h, w), self.out_size)
            else:
                finest = nearest_upsample(levels[0], self.out_size)
            if self.refine_iters:
                image = np.asarray(image)
                if image.shape[:2] != finest.shape:
                    raise ValueError(f"image is {image.shape[:2]}, PAMR needs it at out_size {finest.shape}")
                finest = pamr(image, finest, self.refine_iters)
            levels = levels_from_finest(finest, part.level_labels)  # level Y X
        self.tree_ = part.tree
        self.level_labels_ = levels
        self.labels_ = levels[0]
        self.tau_ = part.tau
        self.spectrum_ = part.spectrum
        self.n_segments_ = tuple(int(lv.max()) + 1 for lv in levels)
        return self

    def fit_predict(self, attn, features=None, image=None) -> np.ndarray:
        return self.fit(attn, features, image).labels_
