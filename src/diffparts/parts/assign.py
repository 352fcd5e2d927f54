"""Part categories of a NEW image under a store's fitted categories (no refit).

The same code path as the corpus: the store's capture settings (manifest), its segmentation
settings (``segments`` attrs), its descriptor configuration and the clusterer's state
(``parts/mean``, ``parts/scale``, ``parts/centers``, the feature weights). Each foreground unit
goes to its nearest centre; background units are 0; small units take the nearest clustered
pixel's category, as when the corpus was painted. Used to score generated images (the
embeddings stage) and occluded ones (the occlusion stage).

"Unknown": ``assign_image(..., return_distance=True)`` also returns each pixel's squared
distance to its unit's nearest centre in the clusterer's space (standardised, weighted: as
``parts.cluster._nearest``). :func:`corpus_distances` gives the same distances for the corpus's
own clustered units, :func:`unknown_threshold` a high quantile of them, and
:func:`mark_unknown` sets foreground pixels farther than that to -1 (no category).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from diffparts.parts.dataset import descriptor_column, fill_unassigned
from diffparts.store.markers import read_image_vector


@dataclass(frozen=True)
class FittedParts:
    """Everything needed to assign categories to a new image, read once from a store."""

    capture: dict          # CaptureConfig fields (manifest)
    features: dict | None  # FeatureConfig fields (manifest) when the store has UNet features
    feature_blocks: tuple  # the up_blocks stored, in the order read_features concatenates them
    segment: dict          # the segment stage's settings
    descriptor: dict       # DescriptorConfig fields
    mean: np.ndarray       # (feature,)
    scale: np.ndarray      # (feature,)
    weights: np.ndarray    # (feature,)
    centers: np.ndarray    # (part, feature), part 0 = category 1
    n_categories: int      # K + 1 (background included)


def fitted_parts(root) -> FittedParts:
    """Read the fitted state; ValueError naming what is missing if the parts stage is not done."""
    missing = [k for k in ("parts/centers", "parts/mean", "parts/scale", "parts/descriptors/features", "segments")
               if k not in root]
    if missing:
        raise ValueError(f"the store has no {missing}: run the segment and parts stages first")
    feats = root["parts/descriptors/features"]
    return FittedParts(
        capture=dict(root.attrs.get("manifest", {}).get("config", {}).get("capture", {})),
        features=root.attrs.get("manifest", {}).get("config", {}).get("features"),
        feature_blocks=tuple(root["features"].attrs.get("blocks", ())) if "features" in root else (),
        segment=dict(root["segments"].attrs["settings"]),
        descriptor=dict(feats.attrs["config"]),
        mean=np.asarray(root["parts/mean"][:], np.float32),
        scale=np.asarray(root["parts/scale"][:], np.float32),
        weights=np.asarray(feats.attrs["feature_weights"], np.float32),
        centers=np.asarray(root["parts/centers"][:], np.float32),
        n_categories=int(root["parts"].attrs["n_categories"]),
    )


def _known(cls, values: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in names}


def corpus_distances(root, exclude_held_out: bool = True, block_size: int = 65536) -> np.ndarray:
    """(unit,) float32 squared distance of every clustered corpus unit (foreground, not small)
    to its nearest fitted centre, in the clusterer's space (``parts/mean``, ``parts/scale``, the
    feature weights, ``parts/centers``). exclude_held_out: skip the images of
    ``embeddings/held_out`` when the store has that split (they are the ones to test on)."""
    from diffparts.parts.cluster import _nearest

    fitted = fitted_parts(root)
    desc = root["parts/descriptors"]
    feats = desc["features"]
    keep = np.asarray(desc["foreground"][:], bool) & ~np.asarray(desc["small"][:], bool)
    if exclude_held_out and "embeddings/held_out" in root:
        held = np.flatnonzero(np.asarray(read_image_vector(root["embeddings/held_out"]), bool))
        keep &= ~np.isin(np.asarray(descriptor_column(desc, "image_index")[:], np.int64), held)
    out = []
    for start in range(0, int(feats.shape[0]), block_size):
        k = keep[start:start + block_size]
        if not k.any():
            continue
        block = np.asarray(feats[start:start + block_size], np.float32)[k]
        out.append(_nearest(((block - fitted.mean) / fitted.scale) * fitted.weights, fitted.centers)[1])
    if not out:
        raise ValueError("the store has no clustered corpus unit to learn the unknown threshold from")
    return np.concatenate(out).astype(np.float32)


def unknown_threshold(root, quantile: float = 0.99, exclude_held_out: bool = True) -> float:
    """The ``quantile`` of :func:`corpus_distances`: a unit farther than this is unknown."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(corpus_distances(root, exclude_held_out), quantile))


def mark_unknown(labels: np.ndarray, distance: np.ndarray, threshold: float) -> np.ndarray:
    """(y, x) int16: ``labels`` with -1 where a foreground pixel (> 0) is farther than
    ``threshold`` from its nearest centre (``distance`` from ``assign_image(..., return_distance=True)``)."""
    labels, distance = np.asarray(labels), np.asarray(distance)
    if labels.shape != distance.shape:
        raise ValueError(f"labels {labels.shape} and distances {distance.shape} differ in shape")
    return np.where((labels > 0) & (distance > threshold), -1, labels).astype(np.int16)


def assign_image(fitted: FittedParts, pipe, image: np.ndarray, box=None, return_distance: bool = False):
    """(y, x) int16 part categories (segment-map size) of one (y, x, 3) uint8 image.

    ``box``: the object box (x, y, w, h) in segment-map pixels, or None to estimate it from the
    segments (as for a folder corpus). return_distance: also return (y, x) float32, each pixel's
    squared distance from its unit's descriptor to the nearest centre (clusterer space; 0 on
    background; small units take the nearest clustered pixel's, as their category does).
    """
    from diffparts.model.extract import CaptureConfig, extract_attention
    from diffparts.parts.cluster import _nearest
    from diffparts.parts.descriptors import DescriptorConfig, describe_image, unit_map
    from diffparts.segment.hierarchy import segment_levels

    # 1. Attention (and UNet features, when the descriptors pool them) as extraction captured
    #    them for the corpus.
    capture = CaptureConfig(**_known(CaptureConfig, fitted.capture))
    config = DescriptorConfig(**_known(DescriptorConfig, fitted.descriptor))
    feature_config = None
    if config.weight_unet:
        if not fitted.features:
            raise ValueError("the store's descriptors pool UNet features but its manifest records no feature settings")
        from diffparts.model.features import FeatureConfig

        feature_config = FeatureConfig(**_known(FeatureConfig, fitted.features))
    batch = np.asarray(image, np.uint8)[None]
    result = (extract_attention(pipe, batch, capture) if feature_config is None
              else extract_attention(pipe, batch, capture, feature_config))
    attn = result.self_attn[0]                                                 # qy qx ky kx
    cross = None if result.cross_attn is None else result.cross_attn[0]        # token qy qx
    unet_features = None
    if feature_config is not None:                                             # as store.read_features: nearest
        maps = [result.features[b][0] for b in (fitted.feature_blocks or sorted(result.features))]  # channel y x
        side = max(m.shape[-1] for m in maps)
        unet_features = np.concatenate([np.repeat(np.repeat(m, side // m.shape[-2], 1), side // m.shape[-1], 2)
                                        for m in maps], 0)

    # 2. Segments with the store's settings; the level the descriptors describe.
    s = fitted.segment
    levels = segment_levels(attn, method=s["method"], level_thresholds=s["level_thresholds"], rounds=s["rounds"],
                            anchors_per_side=s["anchors_per_side"], out_size=tuple(s["out_shape"]), eps=s["eps"],
                            ncut_params=s.get("ncut_params"))                  # level y x
    labels = levels[min(config.level, len(levels) - 1)]

    # 3. Descriptors -> nearest fitted centre (the clusterer's transform: standardise, weight).
    d = describe_image(labels, attn, cross, box=box, config=config, unet_features=unet_features)
    if d.features.shape[1] != len(fitted.mean):
        raise ValueError(f"this image has {d.features.shape[1]} descriptor features, the store's clusterer "
                         f"{len(fitted.mean)}: the parts stage was fitted with other inputs")
    z = ((d.features - fitted.mean) / fitted.scale) * fitted.weights
    nearest, dist = _nearest(z, fitted.centers)
    cats = np.where(d.foreground & ~d.small, nearest + 1, np.where(d.foreground & d.small, -1, 0))

    # 4. Paint as the parts stage paints the corpus.
    seg = labels
    if (config.split_at_box and not d.box_estimated) or config.connected_units:
        seg = unit_map(labels, d.box if config.split_at_box and not d.box_estimated else None,
                       config.connected_units)[0]
    lut = np.zeros(int(max(seg.max(), d.segment_ids.max())) + 1, np.int16)
    lut[d.segment_ids] = cats
    painted = fill_unassigned(lut[seg]).astype(np.int16)
    if not return_distance:
        return painted
    dlut = np.zeros(len(lut), np.float32)
    dlut[d.segment_ids] = np.where(d.foreground & ~d.small, dist, np.where(d.foreground & d.small, -1.0, 0.0))
    return painted, fill_unassigned(dlut[seg]).astype(np.float32)
