"""The parts stage over a whole store (docs/design.md §5.5 and §6): descriptors, clustering, label maps.

Layout of the ``parts/`` group (``segment`` = one row per described segment, ragged over
images; rows of one image are contiguous, images in store order; ``part`` = the K fitted
clusters, ``category`` = the K + 1 categories 0 (background), 1..K; the whole store: docs/store.md)::

    parts/descriptors/features    (segment, feature) float32  chunks (block, feature)
        attrs: feature_names, feature_weights, config (DescriptorConfig), level, complete
    parts/descriptors/image_index (segment,) int64   store image index of the row
    parts/descriptors/segment_id  (segment,) int32   unit id: value in unit_map(segments/labels[image,
                                                     level], box, connected) (= the segment id when
                                                     split_at_box and connected_units are off)
    parts/descriptors/foreground  (segment,) bool    False = background (category 0)
    parts/descriptors/pixels      (segment,) int64   segment area in segment-map pixels
    parts/descriptors/small       (segment,) bool    too small to cluster (category -1: its pixels
                                                     take the nearest unit's category in labels)
    parts/descriptors/category    (segment,) int32   part category: 0 background, 1..K, -1 small
    parts/descriptors/start       (image,) int64     first row of the image (-1 = not described)
    parts/descriptors/count       (image,) int32     number of rows of the image
    parts/box                     (image, xywh) float32  object box x, y, w, h in segment-map pixels
    parts/box_estimated           (image,) bool      True = foreground estimate (no corpus box)
    parts/centers                 (part, feature) float32  cluster centres (standardised, weighted);
                                                     row k - 1 is category k
    parts/mean, parts/scale       (feature,) float32 standardisation of the features
    parts/labels                  (image, y, x) int16 part category per pixel (-1 = not done)
    parts/prevalence              (category,) float32  fraction of labelled images holding category
    parts/category_pixels         (image, category) int32  pixels of each category in each labelled
                                                     image, one chunk, written after every label of a
                                                     paint (absent in older stores: read from labels)
    parts/done                    (image,) bool      labels of the image written
    attrs: n_categories (K + 1, background included), k_selection {criterion, scores, chosen},
           cluster_config

Descriptors are written by one sequential pass (the rows are ragged, so no per-image shard
exists for them); labels are written one image chunk at a time after clustering. In stores
written before issue 13 the columns ``image_index`` and ``segment_id`` are called ``image`` and
``segment`` (:func:`descriptor_column` reads either), the box axis ``box`` and prevalence's
``part``; a parts run rewrites them with the new names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from diffparts.parts.cluster import ClusterConfig, StreamingPartClusterer
from diffparts.parts.descriptors import (UNET_WEIGHT, DescriptorConfig, describe_image, feature_layout, scale_box,
                                        unit_map)
from diffparts.store import (create_stage_array, done_mask, ensure_stage, failures, has_features, image_count,
                             image_table, manifest_corpus, mark_done, read_cross_attention, read_features,
                             read_self_attention)
from diffparts.store.compact import is_compact, read_box_bins

STAGE = "parts"
SEGMENTS = "segments"
#: Earlier names of descriptor columns (before issue 13 they were named like dimensions).
EARLIER_COLUMNS = {"image_index": "image", "segment_id": "segment"}


def descriptor_column(desc: zarr.Group, name: str) -> zarr.Array:
    """The column ``name`` of ``parts/descriptors``, under its earlier name in an older store."""
    if name not in desc and EARLIER_COLUMNS.get(name) in desc:
        return desc[EARLIER_COLUMNS[name]]
    return desc[name]


@dataclass(frozen=True)
class ImageInfo:
    """What the parts stage needs to know about one stored image (from the corpus)."""

    index: int                                       # store image index
    image_id: int
    name: str
    size: tuple[int, int]                            # original (width, height) in pixels
    bbox: tuple[float, float, float, float] | None = None   # x, y, w, h (CUB), image pixels
    keypoints: np.ndarray | None = None              # (part, 3) x, y, visible
    class_id: int | None = None
    path: Path | None = None


def usable_indices(root: zarr.Group) -> list[int]:
    """Store indices of the images no stage has recorded a failure for."""
    failed = {row["index"] for row in failures(root)}
    return [k for k in range(image_count(root)) if k not in failed]


def image_infos(root: zarr.Group, records: Sequence | None, indices: Sequence[int] | None = None) -> list[ImageInfo]:
    """Match the store's images to corpus records by name; sizes from the image headers.

    Only the images at ``indices`` (default: those no stage recorded a failure for) are looked
    at, so an image an earlier stage could not use is never opened here (issue 12). One whose header
    cannot be read now (the file changed since extraction, or the reader refuses it) is left
    out. With no records, each image is given the attention input size and no box.
    """
    from diffparts.corpus import ImageLoadError, image_size

    table = image_table(root)
    wanted = set(usable_indices(root) if indices is None else (int(i) for i in indices))
    by_name = {str(r.name): r for r in (records or [])}
    size = int(root["attention"].attrs.get("image_size", 0)) if "attention" in root else 0
    out = []
    for row in table:
        if row["index"] not in wanted:
            continue
        rec = by_name.get(row["name"])
        if rec is None:
            out.append(ImageInfo(row["index"], row["image_id"], row["name"], (size, size)))
            continue
        if getattr(rec, "refused", None):
            continue
        try:
            wh = image_size(rec.path)
        except ImageLoadError:
            continue
        out.append(ImageInfo(row["index"], row["image_id"], row["name"], (int(wh[0]), int(wh[1])),
                             None if rec.bbox is None else tuple(float(v) for v in rec.bbox),
                             None if rec.keypoints is None else np.asarray(rec.keypoints, np.float32),
                             rec.class_id, Path(rec.path)))
    return out


def require_segments(root: zarr.Group, indices: Sequence[int] | None = None) -> list[int]:
    """The image indices to use: those whose segments are done.

    Images with a recorded failure (extract or segment stage) are left out; any other image
    whose segmentation is not done makes this raise ValueError naming it (run segment first).
    """
    n = image_count(root)
    if f"{SEGMENTS}/labels" not in root:
        raise ValueError("the store has no segments/labels: run the segment stage first")
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    done = done_mask(root, SEGMENTS)
    failed = {row["index"] for row in failures(root) if row["stage"] in ("attention", SEGMENTS)}
    missing = [i for i in indices if not done[i] and i not in failed]
    if missing:
        names = [image_table(root)[i]["name"] for i in missing[:5]]
        raise ValueError(f"segmentation has not finished for {len(missing)} of {len(indices)} images "
                         f"(e.g. indices {missing[:5]}: {names}); run the segment stage first")
    use = [i for i in indices if done[i]]
    if not use:
        raise ValueError("no images with finished segmentation to use")
    return use


def segment_map(root: zarr.Group, index: int, level: int) -> np.ndarray:
    """(y, x) segment labels of one image at one level (level 0 = finest)."""
    arr = root[f"{SEGMENTS}/labels"]
    if not 0 <= level < arr.shape[1]:
        raise ValueError(f"level {level} outside the stored 0..{arr.shape[1] - 1}")
    lab = np.asarray(arr[int(index), int(level)])
    if lab.min() < 0:
        raise ValueError(f"image {index} has no segments at level {level} (label {lab.min()})")
    return lab


def build_descriptors(root: zarr.Group, infos: Sequence[ImageInfo],
                      config: DescriptorConfig = DescriptorConfig(), block: int = 8192) -> dict:
    """Describe every segment of the given images and write ``parts/descriptors`` (one pass).

    Existing descriptors are replaced. Returns a small summary.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    n = image_count(root)
    has_cross = "attention/cross" in root and config.cross_tokens > 0 and config.weight_cross > 0
    n_tokens = int(root["attention/cross"].shape[1]) if has_cross else 0
    n_channels = 0
    if config.weight_unet is None:                       # default: use the features when the store has them
        config = dataclasses.replace(config, weight_unet=UNET_WEIGHT if has_features(root) else 0.0)
    if config.weight_unet > 0:
        if not has_features(root):
            raise ValueError("DescriptorConfig.weight_unet > 0 needs UNet features, and the store has no "
                             "features/ group: extract with --features (or set weight_unet=0)")
        n_channels = sum(int(v[0]) for v in root["features"].attrs["shapes"].values())
    names, weights = feature_layout(config, n_tokens, n_channels)
    n_feat = len(names)
    compact = is_compact(root)
    if compact and infos:   # refused here, by name, before any descriptor is replaced
        read_box_bins(root, infos[0].index, dataclasses.asdict(config))

    # 1. Schema: fresh ragged arrays, per-image start/count, boxes.
    group = ensure_stage(root, STAGE)
    if "descriptors" in group:
        del group["descriptors"]
    desc = group.require_group("descriptors")
    feats = desc.create_array("features", shape=(0, n_feat), dtype="float32", chunks=(block, n_feat),
                              dimension_names=("segment", "feature"),
                              attributes={"feature_names": names, "feature_weights": weights.tolist(),
                                          "config": dataclasses.asdict(config), "level": config.level,
                                          "complete": False})
    columns = {name: desc.create_array(name, shape=(0,), dtype=dt, chunks=(block,), dimension_names=("segment",))
               for name, dt in (("image_index", "int64"), ("segment_id", "int32"), ("foreground", "bool"),
                                ("pixels", "int64"), ("small", "bool"))}
    start = create_stage_array(desc, "start", (n,), "int64", ("image",), fill_value=-1)
    count = create_stage_array(desc, "count", (n,), "int32", ("image",), fill_value=0)
    if "box" in group and tuple(group["box"].metadata.dimension_names or ()) == ("image", "box"):
        del group["box"]                                 # named before issue 13; rewritten below
    boxes = create_stage_array(group, "box", (n, 4), "float32", ("image", "xywh"))
    box_est = create_stage_array(group, "box_estimated", (n,), "bool", ("image",), fill_value=False)
    start[:] = -1
    count[:] = 0

    # 2. One image at a time; rows buffered and appended in whole blocks.
    buf: dict[str, list[np.ndarray]] = {k: [] for k in ("features", *columns)}
    buffered = 0
    written = 0
    starts = np.full(n, -1, np.int64)
    counts = np.zeros(n, np.int32)

    def flush(final: bool = False) -> None:
        nonlocal buffered
        if not buffered:
            return
        rows = {k: np.concatenate(v) for k, v in buf.items()}
        take = buffered if final else (buffered // block) * block
        if take == 0:
            return
        feats.append(rows["features"][:take])
        for k, arr in columns.items():
            arr.append(rows[k][:take])
        for k in buf:
            buf[k] = [rows[k][take:]]
        buffered -= take

    for info in infos:
        labels = segment_map(root, info.index, config.level)
        h, w = labels.shape
        box = None if info.bbox is None else scale_box(info.bbox, info.size, (w, h))
        if compact:   # pooled per box bin at extraction (store.compact); the same descriptor
            attn, binned = None, read_box_bins(root, info.index, dataclasses.asdict(config))
        else:
            attn, binned = read_self_attention(root, info.index), None
        cross = read_cross_attention(root, info.index) if has_cross else None
        unet = read_features(root, info.index) if n_channels else None
        d = describe_image(labels, attn, cross, box=box, config=config, unet_features=unet, binned=binned)
        m = len(d.segment_ids)
        buf["features"].append(d.features)
        buf["image_index"].append(np.full(m, info.index, np.int64))
        buf["segment_id"].append(d.segment_ids)
        buf["foreground"].append(d.foreground)
        buf["pixels"].append(d.pixels)
        buf["small"].append(d.small)
        starts[info.index] = written
        counts[info.index] = m
        written += m
        buffered += m
        boxes[info.index] = d.box
        box_est[info.index] = d.box_estimated
        if buffered >= block:
            flush()
    flush(final=True)
    start[:] = starts
    count[:] = counts
    feats.attrs["complete"] = True
    fg = int(np.asarray(columns["foreground"][:]).sum()) if written else 0
    return {"images": len(infos), "segments": written, "foreground_segments": fg, "features": n_feat}


def cluster_parts(root: zarr.Group, config: ClusterConfig = ClusterConfig()) -> dict:
    """Cluster the foreground descriptors into K categories; write categories and centres."""
    desc = root[f"{STAGE}/descriptors"]
    feats = desc["features"]
    if not feats.attrs.get("complete", False):
        raise ValueError("parts/descriptors is incomplete: run build_descriptors first")
    group = root[STAGE]
    est = StreamingPartClusterer.from_config(config, feature_weights=np.asarray(feats.attrs["feature_weights"]))
    if "category" in desc:
        del desc["category"]
    cat = desc.create_array("category", shape=(feats.shape[0],), dtype="int32",
                            chunks=(feats.chunks[0],), dimension_names=("segment",), fill_value=0)
    include = _Clustered(desc["foreground"], desc["small"])
    est.fit(feats, include=include)
    # Categories: 0 background, 1..K foreground clusters (by decreasing size), -1 small units
    # (filled from their neighbours when painting).
    bs = feats.chunks[0]
    for s in range(0, feats.shape[0], bs):
        lab = np.asarray(est.labels_[s:s + bs])
        small = np.asarray(desc["small"][s:s + bs]) & np.asarray(desc["foreground"][s:s + bs])
        cat[s:s + bs] = np.where(lab >= 0, lab + 1, np.where(small, -1, 0)).astype(np.int32)
    k = est.n_clusters_
    for name, value, dims in (("centers", est.cluster_centers_, ("part", "feature")),
                              ("mean", est.mean_, ("feature",)), ("scale", est.scale_, ("feature",))):
        if name in group:
            del group[name]
        group.create_array(name, data=np.asarray(value, np.float32), dimension_names=dims)
    sel = est.k_selection_
    group.attrs.update({
        "n_categories": k + 1,
        "k_selection": {"criterion": sel.criterion, "scores": {str(a): b for a, b in sel.scores.items()},
                        "chosen": sel.chosen},
        "cluster_config": dataclasses.asdict(config),
    })
    return {"k": k, "n_categories": k + 1, "segments": int(est.n_seen_),
            "k_scores": {int(a): b for a, b in sel.scores.items()}, "counts": est.counts_.tolist()}


class _Clustered:
    """Lazy (segment,) bool: foreground and not small, sliced block by block."""

    def __init__(self, foreground, small):
        self.foreground, self.small, self.shape = foreground, small, foreground.shape

    def __getitem__(self, key):
        return np.asarray(self.foreground[key], bool) & ~np.asarray(self.small[key], bool)


def fill_unassigned(labels: np.ndarray) -> np.ndarray:
    """Pixels < 0 take the value of the nearest pixel >= 0 (Euclidean; unchanged if none)."""
    from scipy import ndimage

    missing = labels < 0
    if not missing.any() or missing.all():
        return labels
    _, (iy, ix) = ndimage.distance_transform_edt(missing, return_indices=True)
    return labels[iy, ix]


def paint_part_labels(root: zarr.Group, indices: Sequence[int] | None = None) -> dict:
    """Write ``parts/labels`` (image, y, x) from the segment categories, then ``parts/done``;
    finally ``parts/prevalence`` over all labelled images."""
    desc = root[f"{STAGE}/descriptors"]
    level = int(desc["features"].attrs["level"])
    seg_arr = root[f"{SEGMENTS}/labels"]
    n, h, w = image_count(root), seg_arr.shape[2], seg_arr.shape[3]
    group = root[STAGE]
    labels = create_stage_array(group, "labels", (n, h, w), "int16", ("image", "y", "x"), fill_value=-1)
    starts, counts = desc["start"][:], desc["count"][:]
    cfg = desc["features"].attrs["config"]
    split, connected = bool(cfg.get("split_at_box", False)), bool(cfg.get("connected_units", False))
    boxes, estimated = group["box"], group["box_estimated"]
    indices = [i for i in range(n) if starts[i] >= 0] if indices is None else list(indices)
    k1 = int(group.attrs["n_categories"])
    if "category_pixels" in group:                       # stale from here until every label is painted
        del group["category_pixels"]
    painted: dict[int, np.ndarray] = {}
    for i in indices:
        if starts[i] < 0:
            raise ValueError(f"image {i} has no descriptors")
        rows = slice(int(starts[i]), int(starts[i] + counts[i]))
        seg_ids = np.asarray(descriptor_column(desc, "segment_id")[rows])
        cats = np.asarray(desc["category"][rows])
        seg = segment_map(root, i, level)
        if (split and not estimated[i]) or connected:
            seg = unit_map(seg, boxes[i] if split and not estimated[i] else None, connected)[0]
        lut = np.zeros(int(max(seg.max(), seg_ids.max())) + 1, np.int16)
        lut[seg_ids] = cats
        lab = fill_unassigned(lut[seg])
        labels[i] = lab
        mark_done(root, STAGE, i)
        painted[i] = _count_categories(lab, k1)
    write_category_pixels(root, painted)
    return write_prevalence(root)


def _count_categories(labels: np.ndarray, k1: int) -> np.ndarray:
    """(category,) pixels of each category 0..K in one part map (unlabelled -1 not counted)."""
    lab = np.asarray(labels).ravel()
    return np.bincount(lab[lab >= 0], minlength=k1)[:k1]


def write_category_pixels(root: zarr.Group, counted: dict[int, np.ndarray]) -> None:
    """``parts/category_pixels`` (image, category): ``counted`` rows, the other labelled images'
    counted from their labels. One chunk, written once by the single painting task, so that the
    stages after parts read one chunk instead of every label map (issue 20)."""
    group = root[STAGE]
    k1 = int(group.attrs["n_categories"])
    done = done_mask(root, STAGE)
    pixels = np.zeros((len(done), k1), np.int32)
    for i in np.flatnonzero(done):
        pixels[i] = counted[int(i)] if int(i) in counted else _count_categories(root[f"{STAGE}/labels"][int(i)], k1)
    group.create_array("category_pixels", data=pixels, chunks=(max(len(done), 1), k1),
                       dimension_names=("image", "category"), attributes={"n_categories": k1})


def write_prevalence(root: zarr.Group) -> dict:
    """Fraction of labelled images in which each category appears (from the segment table)."""
    group = root[STAGE]
    desc = group["descriptors"]
    k1 = int(group.attrs["n_categories"])
    done = done_mask(root, STAGE)
    present = np.zeros((k1,), np.int64)
    img, cat = np.asarray(descriptor_column(desc, "image_index")[:]), np.asarray(desc["category"][:])
    keep = done[img] & (cat >= 0)
    pairs = np.unique(img[keep].astype(np.int64) * k1 + cat[keep])
    present += np.bincount(pairs % k1, minlength=k1)
    prevalence = present / max(int(done.sum()), 1)
    if "prevalence" in group:
        del group["prevalence"]
    group.create_array("prevalence", data=prevalence.astype(np.float32), dimension_names=("category",))
    return {"images": int(done.sum()), "prevalence": prevalence.round(4).tolist()}


def read_part_labels(root: zarr.Group, index: int) -> np.ndarray:
    """(y, x) int16 part categories of one image (0 background); ValueError if not done."""
    if not done_mask(root, STAGE)[int(index)]:
        raise ValueError(f"image {index} has no part labels (parts stage not done)")
    return np.asarray(root[f"{STAGE}/labels"][int(index)])


def load_infos(root: zarr.Group, corpus: str | Path | None = None,
               indices: Sequence[int] | None = None) -> list[ImageInfo]:
    """Image infos for a store from its corpus (``corpus`` or the manifest's ``corpus`` entry),
    for the images at ``indices`` (default: those without a recorded failure; ``image_infos``).

    The manifest's entry is ``{"path", "kind"}`` (written by extraction; a plain path string is
    read too). With no corpus at all the images get no box (the foreground estimate is used)
    and no keypoints (no evaluation).
    """
    corpus = corpus or manifest_corpus(root)
    records = None
    if corpus:
        from diffparts.corpus import open_corpus

        records = list(open_corpus(corpus))
    return image_infos(root, records, indices)


def labelled_images(root: zarr.Group, infos: Sequence[ImageInfo]) -> list[ImageInfo]:
    """The infos of images whose part labels are written."""
    done = done_mask(root, STAGE)
    return [i for i in infos if i.index < len(done) and done[i.index]]
