"""Dataset-wide clustering of segment descriptors into part categories (docs/design.md §5.5 "Parts").

The clusterer streams: it reads the descriptor matrix ``(segment, feature)`` block by block
(a NumPy array or a Zarr array; both are sliced the same way), so its memory is a few blocks
plus a fixed-size sample, whatever the number of segments.

Passes over the data (each one block at a time):

1. Statistics and sample: per-feature mean and standard deviation (float64 sums) and a uniform
   fixed-size sample of rows (bottom-k of seeded random keys, exact without knowing n).
2. K, when not given: k-means on the standardised sample for every candidate K; keep the K with
   the highest silhouette score on that sample (criterion stated in ``KSelection``).
3. Initial centres: k-means++ (``KMeans``, several restarts) on the sample.
4. ``MiniBatchKMeans.partial_fit`` over the blocks (``minibatch_epochs`` passes).
5. Exact Lloyd refinement: each pass assigns every row to its nearest centre and recomputes the
   centres from streamed sums, so the result is a full-data k-means fixed point, not only a
   mini-batch estimate.
6. Categories are renumbered by decreasing size; labels are predicted block by block.

The in-memory path is the same code fed a NumPy array: with the same ``random_state`` and
``block_size`` it gives exactly the clusters of the streaming path (tests/parts/test_cluster.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score


#: The default K, fixed (silhouette picks the smallest K it may, 3-5, on bird parts). Chosen on
#: validation birds (seed 999, never the evaluation corpus; ``benchmarks/eval_parts.py
#: --corpus-seed 999 --n-images 64 --k-sweep ...``): with the default descriptors of a store
#: with features (attention + pooled UNet features) NMI at keypoints is 0.43 at K=4, a plateau
#: 0.58-0.60 for K=6..14 with its best, 0.595, at K=8, and 0.55 at 16. (Attention descriptors
#: alone rise slowly with K: 0.17 at 3, 0.33 at 8, 0.35 at 10, 0.37 at 16.)
DEFAULT_K = 8


@dataclass(frozen=True)
class ClusterConfig:
    n_clusters: int | None = DEFAULT_K   # foreground part categories K; None = choose K by silhouette (step 2)
    k_range: tuple[int, int] = (3, 12)   # inclusive candidate K range when n_clusters is None
    block_size: int = 8192               # rows per streamed block: bounds memory, not the result much
    sample_size: int = 4000              # fixed sample for K choice and k-means++ init (silhouette is O(n^2))
    n_init: int = 4                      # k-means++ restarts on the sample; best inertia wins
    minibatch_epochs: int = 1            # MiniBatchKMeans.partial_fit passes over all blocks
    lloyd_passes: int = 5                # exact streamed Lloyd passes after the mini-batch pass
    tol: float = 1e-5                    # stop Lloyd when the mean centre shift (std units) is below
    random_state: int = 0                # seeds the sample, the init and the mini-batches


@dataclass(frozen=True)
class KSelection:
    """How K was chosen: silhouette of k-means on a fixed standardised sample, highest wins."""

    criterion: str = "silhouette on a fixed-size sample of standardised descriptors (max)"
    scores: dict[int, float] = field(default_factory=dict)   # K -> silhouette score
    chosen: int = 0


def iter_blocks(X: Any, block_size: int):
    """Yield ``(start, block)`` with ``block`` a float32 ``(segment, feature)`` NumPy array.

    ``X`` is anything sliceable along its first axis (NumPy, Zarr); only one block is read at a time.
    """
    n = int(X.shape[0])
    for start in range(0, n, block_size):
        yield start, np.asarray(X[start:start + block_size], dtype=np.float32)


def _include_block(include: Any, start: int, stop: int) -> np.ndarray | None:
    if include is None:
        return None
    return np.asarray(include[start:stop], dtype=bool)


class StreamingPartClusterer:
    """Streaming k-means over segment descriptors (scikit-learn conventions).

    Parameters mirror ``ClusterConfig``; ``feature_weights`` (feature,) multiplies the
    standardised features (so a 17-value attention map does not outvote a 2-value position).

    Learned state: ``mean_``, ``scale_`` (feature,), ``cluster_centers_`` (part, feature) in the
    weighted standardised space, ``n_clusters_``, ``k_selection_``, ``counts_`` (part,),
    ``inertia_``, ``n_seen_``, ``n_iter_`` (Lloyd passes run), ``labels_`` (segment,) int32
    with -1 for excluded rows (a NumPy array, or the ``labels_out`` array passed to ``fit``).
    """

    def __init__(self, n_clusters=None, *, k_range=(3, 12), block_size=8192, sample_size=4000,
                 n_init=4, minibatch_epochs=1, lloyd_passes=5, tol=1e-5, feature_weights=None,
                 random_state=0):
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.block_size = block_size
        self.sample_size = sample_size
        self.n_init = n_init
        self.minibatch_epochs = minibatch_epochs
        self.lloyd_passes = lloyd_passes
        self.tol = tol
        self.feature_weights = feature_weights
        self.random_state = random_state

    @classmethod
    def from_config(cls, config: ClusterConfig, feature_weights=None) -> "StreamingPartClusterer":
        return cls(config.n_clusters, k_range=config.k_range, block_size=config.block_size,
                   sample_size=config.sample_size, n_init=config.n_init,
                   minibatch_epochs=config.minibatch_epochs, lloyd_passes=config.lloyd_passes,
                   tol=config.tol, feature_weights=feature_weights,
                   random_state=config.random_state)

    # -- helpers -------------------------------------------------------------------------
    def _transform(self, block: np.ndarray) -> np.ndarray:
        return ((block - self.mean_) / self.scale_) * self._weights

    def _validate(self, X: Any, include: Any) -> None:
        if len(X.shape) != 2:
            raise ValueError(f"descriptors must be 2-D (segment, feature), got shape {tuple(X.shape)}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1 or None, got {self.n_clusters}")
        lo, hi = self.k_range
        if self.n_clusters is None and not (2 <= lo <= hi):
            raise ValueError(f"k_range must satisfy 2 <= lo <= hi, got {self.k_range}")
        if include is not None and int(include.shape[0]) != int(X.shape[0]):
            raise ValueError(f"include has {include.shape[0]} rows, descriptors have {X.shape[0]}")
        n_feat = int(X.shape[1])
        if self.feature_weights is not None and len(self.feature_weights) != n_feat:
            raise ValueError(f"feature_weights has {len(self.feature_weights)} values for {n_feat} features")

    # -- fit -----------------------------------------------------------------------------
    def fit(self, X: Any, include: Any = None, labels_out: Any = None) -> "StreamingPartClusterer":
        """Cluster the rows of ``X`` (segment, feature) where ``include`` (segment,) is true.

        ``labels_out``: optional (segment,) int array (e.g. Zarr) that receives the labels block
        by block; otherwise ``labels_`` is a new NumPy array.
        """
        self._validate(X, include)
        n, n_feat = int(X.shape[0]), int(X.shape[1])
        rng = np.random.default_rng(self.random_state)
        self._weights = (np.ones(n_feat, np.float32) if self.feature_weights is None
                         else np.asarray(self.feature_weights, np.float32))

        # 1. Streaming statistics and a uniform fixed-size sample (bottom-k random keys).
        total = np.zeros(n_feat, np.float64)
        total_sq = np.zeros(n_feat, np.float64)
        count = 0
        sample = np.empty((0, n_feat), np.float32)
        keys = np.empty(0, np.float64)
        for start, block in iter_blocks(X, self.block_size):
            keep = _include_block(include, start, start + len(block))
            if keep is not None:
                block = block[keep]
            if not len(block):
                continue
            if not np.isfinite(block).all():
                raise ValueError(f"descriptors contain NaN or inf in rows {start}..{start + len(block)}")
            total += block.sum(0, dtype=np.float64)
            total_sq += np.square(block, dtype=np.float64).sum(0)
            count += len(block)
            keys = np.concatenate([keys, rng.random(len(block))])
            sample = np.concatenate([sample, block])
            if len(keys) > self.sample_size:
                best = np.argsort(keys, kind="stable")[: self.sample_size]
                keys, sample = keys[best], sample[best]
        if count == 0:
            raise ValueError("no descriptors to cluster (all rows excluded or empty input)")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        scale = np.sqrt(var)
        self.mean_ = mean.astype(np.float32)
        self.scale_ = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
        self.n_seen_ = count
        sample_std = self._transform(sample)

        # 2. K: silhouette on the fixed sample when not given.
        if self.n_clusters is None:
            scores = {}
            lo, hi = self.k_range
            for k in range(lo, min(hi, len(sample_std) - 1) + 1):
                km = KMeans(k, n_init=self.n_init, random_state=self.random_state).fit(sample_std)
                if len(np.unique(km.labels_)) < 2:
                    continue
                scores[k] = float(silhouette_score(sample_std, km.labels_, random_state=self.random_state))
            if not scores:
                raise ValueError(f"cannot choose K: only {len(sample_std)} descriptors for k_range {self.k_range}")
            k = max(scores, key=lambda kk: (scores[kk], -kk))
            self.k_selection_ = KSelection(scores=scores, chosen=k)
        else:
            k = int(self.n_clusters)
            self.k_selection_ = KSelection(criterion="given", scores={}, chosen=k)
        if k > len(sample_std):
            raise ValueError(f"n_clusters={k} exceeds the {len(sample_std)} descriptors available")
        self.n_clusters_ = k

        # 3. k-means++ initialisation on the sample.
        init = KMeans(k, n_init=self.n_init, random_state=self.random_state).fit(sample_std)
        centers = init.cluster_centers_.astype(np.float32)

        # 4. Mini-batch pass(es) over the stream.
        if self.minibatch_epochs > 0:
            mbk = MiniBatchKMeans(k, init=centers, n_init=1, batch_size=self.block_size,
                                  random_state=self.random_state)
            for _ in range(self.minibatch_epochs):
                for start, block in iter_blocks(X, self.block_size):
                    keep = _include_block(include, start, start + len(block))
                    block = block if keep is None else block[keep]
                    if len(block):
                        mbk.partial_fit(self._transform(block))
            centers = mbk.cluster_centers_.astype(np.float32)

        # 5. Exact Lloyd refinement with streamed sums.
        counts = np.zeros(k, np.int64)
        inertia = 0.0
        self.n_iter_ = 0
        for _ in range(max(self.lloyd_passes, 1)):
            self.n_iter_ += 1
            sums = np.zeros((k, n_feat), np.float64)
            counts = np.zeros(k, np.int64)
            inertia = 0.0
            for start, block in iter_blocks(X, self.block_size):
                keep = _include_block(include, start, start + len(block))
                block = block if keep is None else block[keep]
                if not len(block):
                    continue
                z = self._transform(block)
                lab, dist = _nearest(z, centers)
                np.add.at(sums, lab, z)
                counts += np.bincount(lab, minlength=k)
                inertia += float(dist.sum())
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            shift = float(np.abs(new - centers).mean())
            centers = new.astype(np.float32)
            if self.lloyd_passes == 0 or shift < self.tol:
                break

        # 6. Number categories by decreasing size, then label block by block.
        order = np.argsort(-counts, kind="stable")
        self.cluster_centers_ = centers[order]
        self.counts_ = counts[order]
        self.inertia_ = inertia
        self.labels_ = self.predict(X, include=include, out=labels_out)
        return self

    # -- predict -------------------------------------------------------------------------
    def predict(self, X: Any, include: Any = None, out: Any = None):
        """Nearest category (segment,) int32 for every row, -1 where ``include`` is false."""
        if len(X.shape) != 2 or int(X.shape[1]) != len(self.mean_):
            raise ValueError(f"expected (segment, {len(self.mean_)}) descriptors, got shape {tuple(X.shape)}")
        if out is None:
            out = np.full(int(X.shape[0]), -1, np.int32)
        for start, block in iter_blocks(X, self.block_size):
            lab, _ = _nearest(self._transform(block), self.cluster_centers_)
            lab = lab.astype(np.int32)
            keep = _include_block(include, start, start + len(block))
            if keep is not None:
                lab[~keep] = -1
            out[start:start + len(block)] = lab
        return out

    def fit_predict(self, X: Any, include: Any = None) -> np.ndarray:
        return np.asarray(self.fit(X, include=include).labels_)


def _nearest(z: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre (segment,) and the squared distance to it."""
    d = (z * z).sum(1)[:, None] - 2.0 * z @ centers.T + (centers * centers).sum(1)[None, :]  # segment part
    lab = np.argmin(d, axis=1)
    return lab, np.maximum(d[np.arange(len(z)), lab], 0.0)


def cluster_segments(X: Any, include: Any = None, config: ClusterConfig = ClusterConfig(),
                     feature_weights=None, labels_out: Any = None):
    """Function form of ``StreamingPartClusterer``: returns ``(labels, clusterer)``."""
    est = StreamingPartClusterer.from_config(config, feature_weights=feature_weights)
    est.fit(X, include=include, labels_out=labels_out)
    return est.labels_, est
