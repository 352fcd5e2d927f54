"""Evidence of absence from local appearance, no diffusion model: does a category's region
look like bird at all, and is it grainy where no part is? (docs/design.md §5.7
"Occlusion"; docs/occlusion.md "Detection").

The diffusion detectors ask the model what belongs in a region and compare; the colour
detector asks what colours the category has on birds like this one. This one learns, without
labels, what the store's birds and backgrounds *look like* up close, and asks whether the region
where a category belongs does. Two kinds of evidence (the ``appearance`` method uses both, the
larger calibrated score per category):

1. ``appearance``, **a small per-pixel classifier** (:func:`train_classifier`): a few 3 x 3
   convolutions (receptive field ``receptive`` pixels at the model's input size, no position
   input, replicated borders), trained with cross-entropy to predict the parts stage's own map
   (``parts/labels``, background included) on up to ``images`` seeded training images, never
   held-out ones. Its view is a few pixels wide on purpose: diffusion features are contextual
   (at a grey box where the head was they still say "head"); a patch this small only sees what
   is there.

   - **Cross-fitted** (``folds``): the reference images are split into folds and one
     classifier is trained per fold on the others, so a training image being calibrated is
     read by a classifier that never saw it (its values are those of an unseen image, as a
     case's are); a case is read by every fold's classifier, probabilities averaged.
   - **Statistic** (``statistic``): ``object`` (the default), each object pixel's surprise that
     it is bird at all, ``-log(1 - p(background | appearance))``; ``category``, its surprise at
     its own category, ``-log p(assigned category | appearance)``. Category k's evidence is the
     mean over its region (the occluded image's assignment: where k belongs); the pixel map is
     what the occlusion map thresholds ("matches nothing"). A flat grey box, a leaf, a branch
     or a patch of background looks like no bird pixel the classifier was shown; which part a
     small patch is, it can hardly tell (the categories share colours across species), so
     ``object`` separates better (validation birds, docs/occlusion.md).
2. ``grain``, **texture without a direction** (:func:`grain_evidence`, :func:`grain_map`): per
   pixel, the smallest over four directions (horizontal, vertical, both diagonals) of the
   colour's second difference along that direction; the evidence is the log of its mean over
   the region, the pixel map its 3 x 3 mean. An edge, an outline or a stripe has a direction
   along which it does not change, and a flat or shaded part changes slowly everywhere; noise,
   speckle and grit change in every direction. The classifier has never seen noise and calls it
   bird; this sees it pixel by pixel, so the occlusion map covers it (validation birds: it
   replaced the region's plain local contrast, which outlines and eyes share with noise;
   docs/occlusion.md "Detection").

- :class:`AppearanceConfig`: the settings; :class:`AppearanceReference`: the fold classifiers,
  from :func:`appearance_reference`; :func:`appearance_evidence`, :func:`grain_evidence`: one
  image's ((category,) evidence, (y, x) pixel map), the interface of ``calibrate.image_evidence``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from diffparts.occlusion.evidence import _resized, category_disagreement
from diffparts.occlusion.layout import LayoutPrior, layout_prior, lost_places
from diffparts.occlusion.occluders import resize_labels

MIN_SPREAD = 0.05             # the calibration's spread floor for both kinds (nats; log grain)
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))   # grain's (dy, dx): horizontal, vertical, both diagonals
STATISTICS = ("object", "category")
_CACHE: dict = {}             # (parts fit, images, folds, config, seed) -> AppearanceReference
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class AppearanceConfig:
    receptive: int = 7        # receptive field in pixels at the model's input size (odd, >= 3): 3 x 3 layers
                              # (validation birds, 128, 64 cases: 7 against 5 grey +0.026, object +0.035)
    width: int = 32           # channels of every hidden layer
    steps: int = 1000         # at most this many optimiser steps per fold classifier
    passes: int = 400         # ... and at most this many passes over the fold's images (a small store trains less)
    batch: int = 8            # images per step
    lr: float = 3e-3          # AdamW learning rate
    folds: int = 4            # cross-fitting folds (>= 2; fewer where the store has fewer training images):
                              # each classifier is trained without one fold
    images: int = 256         # training images in the reference (seeded; fewer if the store has fewer)
    balanced: bool = False    # weigh classes by the inverse square root of their pixel share
    statistic: str = "object"  # object: -log(1 - p(background)); category: -log p(assigned category)
    grain_quantile: float = 0.99   # the occlusion map's grain threshold: this quantile of the training images'
                                   # object pixels' grain (eyes and specks make its upper tail long; validation
                                   # birds: IoU on noise 0.64 against 0.50 at the classifier's 0.95)
    grain_offset: float = 1.0      # robust spreads taken off grain's score before the larger of the two kinds:
                                   # grain counts where it is far out (noise), not where it is a little high
                                   # (validation birds: mean ROC AUC 0.866 against 0.838 without)
    size: int = 64            # the classifier reads larger images area-resized to size x size (the toy's input
                              # size, where it was chosen; at SD's 512 px a 5-pixel view would see 1/64 of that
                              # area, and training would cost 64 times more); smaller ones as they are
    lost_background: float | None = 0.9   # a category the assignment lost is looked for at its usual places
                                          # (occlusion.layout.lost_places) on background pixels whose
                                          # p(background) is below this; None: off (validation birds, 128
                                          # cases: mean ROC AUC 0.846 against 0.821)
    lost_share: float = 0.05  # ... where the training maps' categories together hold at least this share

    def __post_init__(self):
        if self.receptive < 3 or self.receptive % 2 == 0:
            raise ValueError(f"appearance receptive must be odd and >= 3, got {self.receptive}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"unknown appearance statistic {self.statistic!r}: {', '.join(STATISTICS)}")
        if self.folds < 2:
            raise ValueError(f"appearance folds must be >= 2 (cross-fitting), got {self.folds}")
        if not 0.0 < self.grain_quantile < 1.0:
            raise ValueError(f"appearance grain_quantile must be in (0, 1), got {self.grain_quantile}")
        if self.grain_offset < 0:
            raise ValueError(f"appearance grain_offset must be >= 0, got {self.grain_offset}")
        if self.lost_background is not None and not 0.0 < self.lost_background <= 1.0:
            raise ValueError(f"appearance lost_background must be in (0, 1] or None, got {self.lost_background}")
        if not 0.0 <= self.lost_share <= 1.0:
            raise ValueError(f"appearance lost_share must be in [0, 1], got {self.lost_share}")
        if self.size < self.receptive:
            raise ValueError(f"appearance size must be at least the receptive field, got {self.size}")
        if min(self.width, self.steps, self.passes, self.batch, self.images) < 1 or self.lr <= 0:
            raise ValueError(f"appearance width, steps, passes, batch, images and lr must be positive, got "
                             f"{self.width}, {self.steps}, {self.passes}, {self.batch}, {self.images}, {self.lr}")


def _net(n_categories: int, config: AppearanceConfig):
    """A stack of 3 x 3 convolutions with GELU, (receptive - 1) / 2 of them, then a 1 x 1 head
    to ``n_categories`` logits; padding replicates the border (no zero frame to tell position)."""
    import torch

    layers, c = [], 3
    for _ in range((config.receptive - 1) // 2):
        layers += [torch.nn.Conv2d(c, config.width, 3, padding=1, padding_mode="replicate"), torch.nn.GELU()]
        c = config.width
    layers.append(torch.nn.Conv2d(c, n_categories, 1))
    return torch.nn.Sequential(*layers)


def _tensor(images: np.ndarray, size: int | None = None):
    """(n, y, x, 3) uint8 -> (n, 3, y, x) float32 in [-1, 1], area-resized to size x size when
    given and the images are larger."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if size is not None and max(x.shape[-2:]) > size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
    return x


def train_classifier(images, labels: np.ndarray, n_categories: int,
                     config: AppearanceConfig = AppearanceConfig(), seed: int = 0):
    """One :func:`_net` trained on (n, y, x, 3) uint8 images (or their :func:`_tensor`) and their
    (n, y, x) category maps (-1 pixels ignored), with ``config.steps`` optimiser steps or
    ``config.passes`` passes over the images, whichever is fewer; with ``balanced`` the classes are weighted by the inverse
    square root of their pixel share. Horizontal flips as augmentation."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    net = _net(n_categories, config)
    x = images if isinstance(images, torch.Tensor) else _tensor(images)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    counts = torch.bincount(y[y >= 0].ravel(), minlength=n_categories)[:n_categories].float()
    weight = (counts > 0).float()                                  # a class with no pixel has no weight
    if config.balanced:
        weight = weight * (counts.sum() / counts.clamp(min=1)).sqrt()
        weight = weight / weight[counts > 0].mean()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=-1)
    steps = min(config.steps, -(-config.passes * len(x) // config.batch))
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(config.batch, len(x)),), generator=gen)
        xb, yb = x[idx], y[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
        loss = loss_fn(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net


@dataclass(frozen=True)
class AppearanceReference:
    """The fold classifiers of a store's training images."""

    images: np.ndarray        # (image,) int store indices of the reference images
    fold: np.ndarray          # (image,) int fold of each reference image
    nets: tuple               # one classifier per fold, trained without that fold
    n_categories: int
    config: AppearanceConfig = AppearanceConfig()
    layout: LayoutPrior | None = None   # where the categories lie on the same images' maps (lost categories)

    def probabilities(self, image: np.ndarray, exclude: int | None = None) -> np.ndarray:
        """(category, y, x) float32 p(category | appearance) of one (y, x, 3) uint8 image: the
        mean over folds, or only the fold classifier that never saw store image ``exclude``; an
        image larger than ``config.size`` is read at that size and the probabilities resized
        back (bilinear) to the image's."""
        import torch

        nets = self.nets
        seen = np.flatnonzero(self.images == exclude) if exclude is not None else ()
        if len(seen):
            nets = (self.nets[int(self.fold[seen[0]])],)
        image = np.asarray(image)
        with torch.no_grad():
            x = _tensor(image[None], self.config.size)
            p = torch.stack([n(x).softmax(1)[0] for n in nets]).mean(0)
            if tuple(p.shape[-2:]) != image.shape[:2]:
                p = torch.nn.functional.interpolate(p[None], size=image.shape[:2], mode="bilinear",
                                                    align_corners=False)[0]
        return p.numpy().astype(np.float32)


def appearance_reference(root, load_image: Callable[[int], np.ndarray],
                         config: AppearanceConfig = AppearanceConfig(), seed: int = 0,
                         log: Callable[[str], None] | None = None) -> AppearanceReference:
    """The :class:`AppearanceReference` of a store: up to ``config.images`` of its training images
    (``occlusion.split.training_images``, a seeded choice, split into ``config.folds`` seeded
    folds), each loaded by ``load_image(i)`` at the model's input size with ``parts/labels`` as
    its categories; ``config.folds`` folds, or one per image where there are fewer. One
    training image (a corpus of two labelled birds, one held out) cannot be cross-fitted: one
    classifier is trained on it, and its calibration value is that of a seen image (lower than
    an unseen one's, so alarms are likelier), which the log says. ValueError without one.

    Training takes up to a few minutes on a CPU, so the reference is kept in the process for
    the same parts fit, images, folds, settings and seed: the stage's set-up and
    every batch of cases on a thread pool (or a Dask worker's later batches) train it once."""
    from diffparts.occlusion.split import training_images

    train = training_images(root)
    if len(train) == 0:
        raise ValueError("the appearance detector needs a training image; every labelled image is held out")
    rng = np.random.default_rng(seed)
    chosen = np.asarray(sorted(int(i) for i in rng.permutation(train)[: config.images]))
    folds = min(config.folds, len(chosen))
    fold = np.empty(len(chosen), int)
    fold[rng.permutation(len(chosen))] = np.arange(len(chosen)) % folds
    key = _cache_key(root, chosen, fold, config, seed)
    with _CACHE_LOCK:                           # held while training: a second batch of cases waits, then reads it
        if key not in _CACHE:
            _CACHE.clear()                      # one store's reference at a time: a few hundred KB of weights
            _CACHE[key] = _train_reference(root, load_image, chosen, fold, config, seed, log)
        return _CACHE[key]


def _train_reference(root, load_image, chosen: np.ndarray, fold: np.ndarray, config: AppearanceConfig, seed: int,
                     log) -> AppearanceReference:
    import torch

    folds = int(fold.max()) + 1
    k1 = int(root["parts/prevalence"].shape[0])
    if folds == 1 and log:
        log("appearance reference: one training image, not cross-fitted (its calibration has seen it)")
    images = _tensor(np.stack([load_image(int(i)) for i in chosen]), config.size)
    maps = [np.asarray(root["parts/labels"][int(i)]) for i in chosen]
    labels = np.stack([resize_labels(m, tuple(images.shape[-2:])) for m in maps])
    nets = []
    for f in range(folds):
        rest = fold != f if folds > 1 else np.ones(len(fold), bool)
        nets.append(train_classifier(images[torch.from_numpy(rest)], labels[rest], k1, config, seed=seed + f))
        if log:
            log(f"appearance reference: fold {f + 1}/{folds} trained on {int(rest.sum())} images")
    layout = None if config.lost_background is None else layout_prior(maps, k1)
    return AppearanceReference(chosen, fold, tuple(nets), k1, config, layout)


def _cache_key(root, chosen: np.ndarray, fold: np.ndarray, config: AppearanceConfig, seed: int):
    """What the reference depends on: the parts fit (``inversion.saving.parts_fingerprint``, the
    fitted centres: a refit rewrites the maps), the chosen images, the folds, the settings and
    the seed. Read once per call: no image or map is read for a cached reference."""
    from diffparts.inversion.saving import parts_fingerprint

    return (parts_fingerprint(root), tuple(chosen.tolist()), tuple(fold.tolist()), config, int(seed))


def appearance_evidence(image: np.ndarray, labels: np.ndarray, n_categories: int, reference: AppearanceReference,
                        exclude: int | None = None, min_pixels: int = 4,
                        probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((category,) evidence, (y, x) pixel surprise) of one (y, x, 3) uint8 image whose
    categories are the (ly, lx) map ``labels``: the module's kind 1, its ``statistic`` floored
    at ``-log(1e-6)``. NaN evidence for background and for a category with fewer than
    ``min_pixels`` pixels in ``labels``. ``exclude``: a store index being calibrated (read only
    by the fold that never saw it). ``probabilities``: the reference's reading of this image (as
    :func:`appearance_regions` returns it), so the classifiers run once per image."""
    if reference.n_categories != n_categories:
        raise ValueError(f"the appearance reference has {reference.n_categories} categories, the store {n_categories}")
    labels = np.asarray(labels)
    p = reference.probabilities(image, exclude) if probabilities is None else probabilities   # category y x
    pix = resize_labels(labels, image.shape[:2])
    if reference.config.statistic == "object":
        seen = 1.0 - p[0]
    else:
        seen = np.take_along_axis(p, np.clip(pix, 0, n_categories - 1)[None].astype(np.int64), 0)[0]
    dmap = np.where(pix > 0, -np.log(np.maximum(seen, 1e-6)), 0.0).astype(np.float32)
    return category_disagreement(dmap, labels, n_categories, min_pixels), dmap


def appearance_regions(image: np.ndarray, labels: np.ndarray, reference: AppearanceReference,
                       exclude: int | None = None, min_pixels: int = 4) -> tuple[np.ndarray, np.ndarray | None]:
    """(the (ly, lx) map whose regions both kinds judge, the classifiers' (category, y, x)
    probabilities or None): ``labels`` (the assignment, or a training image's stored map) with
    each category it lost given its usual places (:func:`diffparts.occlusion.layout.lost_places`,
    on the background pixels the classifier does not find clearly background), and the
    probabilities that decided it, for :func:`appearance_evidence` to reuse; ``(labels, None)``
    when the reference has no layout (``lost_background`` None). ``exclude``: as
    :func:`appearance_evidence`."""
    labels = np.asarray(labels)
    config = reference.config
    if reference.layout is None or config.lost_background is None:
        return labels, None
    p = reference.probabilities(image, exclude)
    regions = lost_places(labels, _resized(p[0], labels.shape), reference.layout, config.lost_background,
                          config.lost_share, min_pixels)
    return regions, p


def _second_differences(image: np.ndarray) -> np.ndarray:
    """(direction, y, x) float32: ``sum_c |I(p + d) + I(p - d) - 2 I(p)|`` of one (y, x, 3)
    uint8 image along each of :data:`DIRECTIONS` (colour in [0, 1], borders replicated)."""
    x = np.pad(np.asarray(image, np.float32) / 255.0, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[0] - 2, x.shape[1] - 2
    return np.stack([np.abs(_shifted(x, dy, dx, h, w) + _shifted(x, -dy, -dx, h, w) - 2.0 * x[1:h + 1, 1:w + 1]).sum(-1)
                     for dy, dx in DIRECTIONS])


def _shifted(padded: np.ndarray, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    return padded[1 + dy:h + 1 + dy, 1 + dx:w + 1 + dx]


def _grain(second: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """(y, x) minimum over directions of :func:`_second_differences`; with an image-sized
    ``labels`` map only the directions whose two neighbours share the pixel's label (all where
    none does)."""
    grain = second.min(0)
    if labels is None:
        return grain
    lab = np.pad(np.asarray(labels), 1, mode="edge")
    h, w = grain.shape
    centre = lab[1:h + 1, 1:w + 1]
    inside = np.stack([(_shifted(lab, dy, dx, h, w) == centre) & (_shifted(lab, -dy, -dx, h, w) == centre)
                       for dy, dx in DIRECTIONS])
    return np.where(inside.any(0), np.where(inside, second, np.inf).min(0), grain)


def _window_mean(grain: np.ndarray, window: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter

    return (uniform_filter(grain, window, mode="nearest") if window > 1 else grain).astype(np.float32)


def grain_map(image: np.ndarray, window: int = 3, labels: np.ndarray | None = None) -> np.ndarray:
    """(y, x) float32 grain of one (y, x, 3) uint8 image: per pixel the minimum over
    :data:`DIRECTIONS` of ``sum_c |I(p + d) + I(p - d) - 2 I(p)|`` (colour in [0, 1], borders
    replicated), averaged over ``window`` x ``window`` pixels (1: none). 0 on a flat or
    linearly shaded surface, small along an edge or stripe (its own direction does not change),
    large on noise. With the image-sized map ``labels``, only directions whose two neighbours
    share the pixel's label count (never lower than without: a direction across a border
    measures the border, not the region); a pixel with no such direction keeps the minimum
    over all."""
    return _window_mean(_grain(_second_differences(image), labels), window)


def grain_evidence(image: np.ndarray, labels: np.ndarray, n_categories: int,
                   min_pixels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """((category,) log mean grain, (y, x) grain of the object pixels) of one (y, x, 3) uint8
    image whose categories are the (ly, lx) map ``labels``: the module's kind 2
    (:func:`grain_map`). A region's mean is of its pixels' own grain, unaveraged and along the
    directions that stay inside the region (a direction across its border measures the border:
    a flat neighbour would make noise at the border look smoother); the pixel map is the
    image's grain averaged over 3 x 3 pixels, so the occlusion map covers noise whole. NaN as
    :func:`appearance_evidence`."""
    labels = np.asarray(labels)
    pix = resize_labels(labels, image.shape[:2])
    second = _second_differences(image)                       # once, for both
    own = np.where(pix > 0, _grain(second, pix), 0.0)
    means = category_disagreement(own, labels, n_categories, min_pixels)
    dmap = np.where(pix > 0, _window_mean(_grain(second), 3), 0.0).astype(np.float32)
    return np.log(means + 1e-3).astype(np.float32), dmap


def reference_for(references: dict, kind: str = "appearance") -> AppearanceReference:
    """The appearance reference among a detector's ``pipelines`` ({kind: ...})."""
    ref = references.get(kind)
    if not isinstance(ref, AppearanceReference):
        raise ValueError("the appearance detector needs the store's appearance reference "
                         "(occlusion.appearance.appearance_reference)")
    return ref
