"""A descriptor for every segment of one image (docs/design.md §5.5 "Parts"), and foreground/background.

A segment is described by what it attends to, where it sits in the object and how big it is,
all relative to the object's box so that descriptors compare across images:

- ``attn``: the segment's mean self-attention key map (the average of the key maps of its
  queries, a distribution over keys), binned on a G x G grid laid over the object box, plus one
  bin for the mass outside the box (G*G + 1 values). Parts of the same kind attend to the same
  region of the object, wherever the object is.
- ``cross``: the segment's mean cross-attention over the first T prompt tokens (optional;
  T = 0 turns it off, and it is off when the store has no cross-attention).
- ``unet``: the segment's mean UNet up-block feature (``features/``, DIFT), L2-normalised
  (optional; ``weight_unet`` = 0 turns it off). Pooled over the feature grid cells the segment
  covers, like the cross-attention.
- ``position``: centroid (x, y), spread (std x, std y) and extent (width, height) of the
  segment's pixels, in box units (0..1 inside the box).

Objects face either way (the synthetic birds are mirrored half the time), so by default the
descriptor is mirror-invariant: x is folded about the box centre (``|cx - 0.5|``, and grid
columns j and G-1-j summed). The head of a bird facing left and of one facing right then fall
in one category; which way each image faces is decided per pair at transfer time from the
categories' layout (``transfer.relative_flip``).
- ``size``: log of the segment's area as a fraction of the box area.

Each group is weighted by ``weight_<group> / sqrt(group size)`` after standardisation (the
clusterer multiplies by ``feature_weights``), so a group counts the same however many values it has.

Foreground/background (the background is its own category, id 0 in ``parts/labels``):
a segment is background when less than ``inside_box_min`` of its pixels lie inside the object
box, or when it holds more than ``border_share_max`` of the image's border pixels (the border
prior: the object rarely covers a large share of the frame's edge). With no box (folder corpora)
the box is *estimated*: the border prior alone marks background segments and the box is the
bounding box of the remaining segments (the whole frame if none remain). A box from the corpus
is trusted further (``split_at_box``): a foreground segment's pixels outside it are background.

Units: what gets a descriptor is a *unit* (``unit_map``): a segment, cut at a corpus box and
into its connected pieces (``connected_units``; DiffSeg's segments group similar attention
wherever it is, so one segment can be scattered over the image, and a centroid of scattered
pixels says nothing about where a part is). ``ImageDescriptors.segment_ids`` are unit ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


#: Group weight of the pooled UNet features when the store has them (``weight_unet=None``).
#: Chosen on validation birds (seed 999, 64 birds, K = 10, with the attention groups): NMI at
#: keypoints 0.35 without features, 0.38 / 0.46 / 0.58 / 0.58 / 0.58 / 0.57 at weight 0.5 / 1 /
#: 2 / 4 / 8 / 16; 2 is the smallest on the plateau (and had the best ARI, 0.36).
UNET_WEIGHT = 2.0


@dataclass(frozen=True)
class DescriptorConfig:
    level: int = 0                   # hierarchy level described (0 = finest = part-sized segments)
    box_grid: int = 4                # key maps binned on a G x G grid over the object box (+1 outside)
    cross_tokens: int = 8            # first T tokens of pooled cross-attention kept; 0 = not used
    weight_attn: float = 0.5         # group weight of the binned key map (what the segment attends to)
    weight_cross: float = 0.0        # pooled cross-attention: 0 = off; the default empty prompt's
                                     # tokens name no parts (validation: it only added noise)
    weight_unet: float | None = None  # pooled UNet features (features/ group); None: UNET_WEIGHT when the
                                      # store has them, else off
    weight_position: float = 1.0     # group weight of centroid/spread/extent in box units
    weight_size: float = 0.5         # group weight of log area fraction
    inside_box_min: float = 0.5      # fewer of the segment's pixels inside the box -> background
    mirror_invariant: bool = True    # fold x about the box centre: a part facing left = facing right
    split_at_box: bool = True        # with a corpus box, a segment's pixels outside it are background
    connected_units: bool = True     # describe each connected piece of a segment on its own
    min_unit_fraction: float = 0.01  # foreground units smaller than this share of the box are not
                                     # clustered; their pixels take the nearest unit's category
    border_share_max: float = 0.15   # more of the image border's pixels than this -> background


@dataclass(frozen=True)
class ImageDescriptors:
    """Descriptors of the segments of one image."""

    features: np.ndarray     # (segment, feature) float32
    segment_ids: np.ndarray  # (segment,) int32, label value in the segment map
    foreground: np.ndarray   # (segment,) bool
    pixels: np.ndarray       # (segment,) int64, pixel count in the segment map
    small: np.ndarray        # (segment,) bool, foreground but below min_unit_fraction of the box
    box: np.ndarray          # (4,) float32 x, y, width, height in segment-map pixels
    box_estimated: bool      # True when the box came from the foreground estimate


def feature_layout(config: DescriptorConfig, n_tokens: int, n_channels: int = 0) -> tuple[list[str], np.ndarray]:
    """Feature names and per-feature weights for a store whose cross-attention has n_tokens
    and whose UNet features have n_channels (0: none)."""
    g = config.box_grid
    gx = (g + 1) // 2 if config.mirror_invariant else g
    t = min(config.cross_tokens, n_tokens) if config.weight_cross > 0 else 0
    groups = [
        ("attn", [f"attn_{i}_{j}" for i in range(g) for j in range(gx)] + ["attn_outside"], config.weight_attn),
        ("cross", [f"cross_{i}" for i in range(t)], config.weight_cross),
        ("unet", [f"unet_{i}" for i in range(n_channels if config.weight_unet else 0)], config.weight_unet or 0.0),
        ("position", ["cx", "cy", "sx", "sy", "extent_w", "extent_h"], config.weight_position),
        ("size", ["log_area"], config.weight_size),
    ]
    names: list[str] = []
    weights: list[float] = []
    for _, group_names, w in groups:
        if not group_names:
            continue
        names += group_names
        weights += [w / np.sqrt(len(group_names))] * len(group_names)
    return names, np.asarray(weights, np.float32)


def _validate_config(config: DescriptorConfig) -> None:
    if config.box_grid < 1:
        raise ValueError(f"box_grid must be >= 1, got {config.box_grid}")
    if config.cross_tokens < 0:
        raise ValueError(f"cross_tokens must be >= 0, got {config.cross_tokens}")
    if not 0.0 <= config.inside_box_min <= 1.0:
        raise ValueError(f"inside_box_min must be in [0, 1], got {config.inside_box_min}")


def area_weights(labels: np.ndarray, segment_ids: np.ndarray, res: int) -> np.ndarray:
    """Fraction of each res x res attention cell covered by each segment: (segment, q)."""
    h, w = labels.shape
    cy = np.minimum((np.arange(h) * res) // h, res - 1)        # y -> qy
    cx = np.minimum((np.arange(w) * res) // w, res - 1)        # x -> qx
    cell = (cy[:, None] * res + cx[None, :]).ravel()            # (y x) -> q
    lut = np.full(int(labels.max()) + 1, -1, np.int64)
    lut[segment_ids] = np.arange(len(segment_ids))
    seg = lut[labels.ravel()]
    out = np.zeros((len(segment_ids), res * res), np.float64)
    np.add.at(out, (seg, cell), 1.0)
    return out / np.maximum(out.sum(1, keepdims=True), 1e-12)


def border_share(labels: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Share of the image's border pixels that each segment holds: (segment,)."""
    edge = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    counts = np.bincount(edge, minlength=int(labels.max()) + 1)
    return counts[segment_ids] / max(len(edge), 1)


def box_mask(shape: tuple[int, int], box) -> np.ndarray:
    """(y, x) bool: pixel centres inside the box (x, y, w, h), in map pixels."""
    h, w = shape
    bx, by, bw, bh = (float(v) for v in box)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    return (xs >= bx) & (xs <= bx + bw) & (ys >= by) & (ys <= by + bh)


def unit_map(labels: np.ndarray, box=None, connected: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The units that get one descriptor each: segments, split at the box and into pieces.

    box: (x, y, w, h) or None; with a box each segment's pixels inside and outside it become
    separate units. connected: each connected piece (4-neighbourhood) of a segment is its own
    unit (DiffSeg segments can be scattered over the image; a descriptor of position needs a
    place). Returns units (y, x) int64 numbered 0..U-1 (deterministic: by segment id, then
    outside-before-inside, then piece in raster order), parent (unit,) the segment id, and
    inside (unit,) bool (all True without a box).
    """
    from scipy import ndimage

    labels = np.asarray(labels, np.int64)
    inside = box_mask(labels.shape, box) if box is not None else np.ones(labels.shape, bool)
    key = labels * 2 + inside                                  # (segment, inside) per pixel
    if not connected:
        values, units = np.unique(key, return_inverse=True)
        return units.reshape(labels.shape), values // 2, (values % 2).astype(bool)
    units = np.zeros(labels.shape, np.int64)
    parent, side = [], []
    for v in np.unique(key):
        pieces, n = ndimage.label(key == v)
        units[pieces > 0] = pieces[pieces > 0] - 1 + len(parent)
        parent += [v // 2] * n
        side += [bool(v % 2)] * n
    return units, np.asarray(parent, np.int64), np.asarray(side, bool)


def estimate_foreground_box(labels: np.ndarray, border_share_max: float = 0.15) -> np.ndarray:
    """Unsupervised object box (x, y, w, h) from the border prior: segments not on the frame."""
    ids = np.unique(labels)
    fg_ids = ids[border_share(labels, ids) <= border_share_max]
    mask = np.isin(labels, fg_ids)
    if not mask.any():
        h, w = labels.shape
        return np.array([0.0, 0.0, w, h], np.float32)
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], np.float32)


def box_bins(shape: tuple[int, int], box, res: int, grid: int) -> np.ndarray:
    """(k, bin) float32 one-hot: the G x G box-grid bin (or the last, outside bin) of every key cell.

    shape: (y, x) of the segment map the box (x, y, w, h) is in; res: the key grid's side.
    """
    h, w = shape
    bx, by, bw, bh = (float(v) for v in box)
    kc = (np.arange(res) + 0.5) / res                                      # key centre, frame units
    kx_rel = (kc * w - bx) / bw                                            # kx -> box units
    ky_rel = (kc * h - by) / bh                                            # ky -> box units
    gx = np.floor(kx_rel * grid).astype(np.int64)
    gy = np.floor(ky_rel * grid).astype(np.int64)
    in_x, in_y = (gx >= 0) & (gx < grid), (gy >= 0) & (gy < grid)
    bins = np.where(in_y[:, None] & in_x[None, :], gy[:, None] * grid + gx[None, :], grid * grid).ravel()  # k
    onehot = np.zeros((res * res, grid * grid + 1), np.float32)
    onehot[np.arange(res * res), bins] = 1.0
    return onehot


def image_box(labels: np.ndarray, box, config: DescriptorConfig = DescriptorConfig()) -> tuple[np.ndarray, bool]:
    """(box (x, y, w, h) float32 in segment-map pixels, estimated?): the given box checked, or
    the border prior's estimate from ``labels`` (the segments at ``config.level``)."""
    if box is None:
        return estimate_foreground_box(np.asarray(labels), config.border_share_max), True
    box_arr = np.asarray(box, np.float32)
    if box_arr.shape != (4,) or box_arr[2] <= 0 or box_arr[3] <= 0:
        raise ValueError(f"box must be (x, y, width > 0, height > 0), got {box}")
    return box_arr, False


def describe_image(labels: np.ndarray, self_attn: np.ndarray | None, cross_attn: np.ndarray | None = None,
                   box=None, config: DescriptorConfig = DescriptorConfig(),
                   unet_features: np.ndarray | None = None, binned: np.ndarray | None = None) -> ImageDescriptors:
    """Describe every segment of one image.

    labels: (y, x) int segment map. self_attn: (qy, qx, ky, kx) aggregated self-attention, each
    key map a distribution; or None with ``binned``: (q, bin) the same attention summed into the
    bins of ``box_bins`` for this image's box (a compact store's ``attention/box_bins``).
    cross_attn: (token, qy, qx) or None. box: (x, y, width, height) of the
    object in segment-map pixels, or None to estimate it. unet_features: (channel, y, x) UNet
    features on a square grid, or None (used when ``config.weight_unet`` > 0).
    """
    _validate_config(config)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (y, x), got shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {labels.min()}")
    if self_attn is None:
        g2 = config.box_grid ** 2 + 1
        res = int(round(np.sqrt(binned.shape[0]))) if binned is not None and binned.ndim == 2 else 0
        if binned is None or binned.ndim != 2 or binned.shape[1] != g2 or res * res != binned.shape[0]:
            raise ValueError(f"without self_attn, binned must be (q, {g2}) with square q, got "
                             f"{None if binned is None else binned.shape}")
    elif self_attn.ndim != 4 or self_attn.shape[0] != self_attn.shape[1] or self_attn.shape[:2] != self_attn.shape[2:]:
        raise ValueError(f"self_attn must be (qy, qx, ky, kx) with equal sides, got {self_attn.shape}")
    else:
        res = self_attn.shape[0]
    h, w = labels.shape
    labels = labels.astype(np.int64)

    # 1. Segments, their pixel counts and the box (given, or estimated from the border prior).
    segment_ids = np.unique(labels)
    pixels = np.bincount(labels.ravel())[segment_ids]
    box_arr, estimated = image_box(labels, box, config)
    bx, by, bw, bh = (float(v) for v in box_arr)

    # 2. Foreground: mostly inside the box and not holding much of the frame's edge.
    ys, xs = np.mgrid[0:h, 0:w]
    inside = box_mask((h, w), box_arr)
    inside_frac = np.bincount(labels.ravel(), weights=inside.ravel().astype(np.float64))[segment_ids] / pixels
    foreground = (inside_frac >= config.inside_box_min) & (border_share(labels, segment_ids) <= config.border_share_max)
    if (config.split_at_box and not estimated) or config.connected_units:
        # Units: a given box is trusted (a segment's pixels outside it are a background unit)
        # and scattered segments are cut into connected pieces; a unit inherits its segment's
        # foreground flag.
        units, parent, unit_inside = unit_map(labels, box_arr if config.split_at_box and not estimated else None,
                                              config.connected_units)
        fg_of = dict(zip(segment_ids.tolist(), foreground.tolist()))
        labels = units
        segment_ids = np.arange(len(parent))
        pixels = np.bincount(labels.ravel(), minlength=len(parent))
        foreground = np.array([fg_of[int(p)] for p in parent], bool) & unit_inside

    # 3. Mean key map per segment, binned on a G x G grid over the box (+ an outside bin).
    #    From the full tensor: (wq @ attn) normalised, then binned; from pooled bins (a compact
    #    store's (q, bin) = attn @ onehot): wq @ bins normalised, the same sum in another order.
    wq = area_weights(labels, segment_ids, res)                            # segment q
    g = config.box_grid
    if self_attn is not None:
        attn = self_attn.reshape(res * res, res * res).astype(np.float32)     # q k
        key_map = (wq.astype(np.float32) @ attn)                               # segment k
        key_map /= np.maximum(key_map.sum(1, keepdims=True), 1e-12)
        attn_feat = key_map @ box_bins((h, w), box_arr, res, g)            # segment (bin)
    else:
        attn_feat = wq.astype(np.float32) @ np.asarray(binned, np.float32)  # segment (bin)
        attn_feat /= np.maximum(attn_feat.sum(1, keepdims=True), 1e-12)
    if config.mirror_invariant:                                            # fold columns j and g-1-j
        grid = attn_feat[:, : g * g].reshape(-1, g, g)
        folded = grid + grid[:, :, ::-1]
        folded[:, :, g // 2] *= 0.5 if g % 2 else 1.0                      # the middle column once
        attn_feat = np.concatenate([folded[:, :, : (g + 1) // 2].reshape(len(grid), -1),
                                    attn_feat[:, g * g:]], axis=1)

    # 4. Pooled cross-attention over the first T tokens.
    parts = [attn_feat]
    if cross_attn is not None and config.cross_tokens > 0 and config.weight_cross > 0:
        t = min(config.cross_tokens, cross_attn.shape[0])
        if cross_attn.shape[1:] != (res, res):
            raise ValueError(f"cross_attn must be (token, {res}, {res}), got {cross_attn.shape}")
        ct = cross_attn[:t].reshape(t, res * res).astype(np.float32)      # token q
        parts.append(wq.astype(np.float32) @ ct.T)                         # segment token
    if config.weight_unet:
        if unet_features is None or unet_features.ndim != 3 or unet_features.shape[1] != unet_features.shape[2]:
            raise ValueError("weight_unet > 0 needs unet_features (channel, y, x) on a square grid, got "
                             f"{None if unet_features is None else unet_features.shape}")
        c, fres = unet_features.shape[:2]
        wf = area_weights(labels, segment_ids, fres).astype(np.float32)    # segment (y x)
        pooled = wf @ unet_features.reshape(c, fres * fres).T.astype(np.float32)   # segment channel
        parts.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12))

    # 5. Position and size in box units.
    lab = labels.ravel()
    n_seg = len(segment_ids)
    lut = np.full(int(labels.max()) + 1, -1, np.int64)
    lut[segment_ids] = np.arange(n_seg)
    seg = lut[lab]
    px = (xs.ravel() + 0.5 - bx) / bw
    py = (ys.ravel() + 0.5 - by) / bh
    cnt = pixels.astype(np.float64)
    cx = np.bincount(seg, px, n_seg) / cnt
    cy = np.bincount(seg, py, n_seg) / cnt
    sx = np.sqrt(np.maximum(np.bincount(seg, px * px, n_seg) / cnt - cx**2, 0))
    sy = np.sqrt(np.maximum(np.bincount(seg, py * py, n_seg) / cnt - cy**2, 0))
    x_min = np.full(n_seg, np.inf); x_max = np.full(n_seg, -np.inf)
    y_min = np.full(n_seg, np.inf); y_max = np.full(n_seg, -np.inf)
    np.minimum.at(x_min, seg, px); np.maximum.at(x_max, seg, px)
    np.minimum.at(y_min, seg, py); np.maximum.at(y_max, seg, py)
    ext_w = x_max - x_min + 1.0 / bw
    ext_h = y_max - y_min + 1.0 / bh
    position = np.stack([np.abs(cx - 0.5) if config.mirror_invariant else cx, cy, sx, sy, ext_w, ext_h], 1)
    size = np.log(cnt / (bw * bh))[:, None]
    parts += [position, size]

    features = np.concatenate([p.astype(np.float32) for p in parts], axis=1)  # segment feature
    small = foreground & (pixels < config.min_unit_fraction * bw * bh)
    return ImageDescriptors(features=features, segment_ids=segment_ids.astype(np.int32),
                            foreground=foreground, pixels=pixels.astype(np.int64), small=small,
                            box=np.array([bx, by, bw, bh], np.float32), box_estimated=estimated)


def scale_box(box, image_size: tuple[int, int], map_size: tuple[int, int]) -> np.ndarray:
    """A box (x, y, w, h) in original image pixels -> segment-map pixels.

    image_size and map_size are (width, height); the extract stage resizes whole images.
    """
    sx = map_size[0] / image_size[0]
    sy = map_size[1] / image_size[1]
    x, y, w, h = (float(v) for v in box)
    return np.array([x * sx, y * sy, w * sx, h * sy], np.float32)
