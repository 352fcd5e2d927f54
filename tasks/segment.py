"""Prefect tasks of the segment stage (docs/design.md §5.2-5.4, §6).

Thin: each reads from the store through ``diffparts.store``, calls the library
(``diffparts.segment``), writes its own images' chunks and returns small dicts, never arrays.

The ``segments/`` group (one chunk per image along ``image``)::

    segments/labels      (image, level, y, x) int16   level 0 = finest; labels 0..K_l-1; -1 unwritten
    segments/n_segments  (image, level) int16          K_l (levels past n_levels repeat the coarsest)
    segments/n_levels    (image,) int16                levels the method produced for the image
    segments/parent      (image, level, segment) int16 parent[l, a] = label at level l+1 of segment a
                                                       of level l (-1: padding / last level). This is
                                                       the tree: C_l^{l+1}(a, b) = [parent[l, a] == b]
                                                       (HSG transition matrices of nested levels)
    segments/name_token  (image, segment) int16        (names=True) token index of the level-0
                                                       segment's word in attention attrs ``tokens``
    segments/done        (image,) bool                 written after the rest
    attrs: settings {method, request, level_thresholds, rounds, ..., thresholds: {rule statistics}}
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES

STAGE = "segments"


def _open(store: str, mode: str = "r+"):
    from diffparts.store import open_store

    return open_store(store, mode=mode)


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def choose_thresholds(store: str, indices: list[int], rule: dict) -> dict:
    """Thresholds from the attention of the given images (``diffparts.segment.thresholds``)."""
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds as choose
    from diffparts.store import read_self_attention

    root = _open(store, "r")
    rule = ThresholdRule(**{k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()})
    return choose((read_self_attention(root, k) for k in indices), rule).as_dict()


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def create_segment_arrays(store: str, settings: dict, overwrite: bool = False) -> dict:
    """Create (or check) the ``segments/`` arrays once, before the fan-out (single writer).

    Runs under the store's set-up lock. Returns the array geometry
    ``{"n_levels", "max_segments", "y", "x"}``. Existing segments
    made with other settings are refused unless ``overwrite`` (which deletes them and clears
    the done markers of every stage that depends on segments: parts and after).
    """
    from diffparts.store import setup_lock

    with setup_lock(store):  # one set-up at a time on a local store (issue 12, item 9)
        _create_segment_arrays(store, settings, overwrite)
    y, x = settings["out_shape"]
    return {"n_levels": settings["n_levels"], "max_segments": settings["max_segments"], "y": y, "x": x}


def _create_segment_arrays(store: str, settings: dict, overwrite: bool) -> None:
    """``create_segment_arrays``' steps, with the set-up lock held."""
    from diffparts.store import clear_dependents, create_stage_array, ensure_stage, image_count

    root = _open(store)
    if STAGE in root:
        old = root[STAGE].attrs.get("settings")
        if old is not None and old != settings:
            if not overwrite:
                raise ValueError(
                    f"{store} holds segments made with other settings ({old.get('request')}); "
                    f"asked for {settings.get('request')}. Pass overwrite=True (CLI: --overwrite) "
                    "to delete and redo them."
                )
        if overwrite and old != settings:
            del root[STAGE]
            if f"failures/{STAGE}" in root:
                del root[f"failures/{STAGE}"]
            clear_dependents(root, STAGE)
    n = image_count(root)
    group = ensure_stage(root, STAGE)
    y, x = settings["out_shape"]
    n_levels, max_segments = settings["n_levels"], settings["max_segments"]
    create_stage_array(group, "labels", (n, n_levels, y, x), "int16", ("image", "level", "y", "x"), fill_value=-1)
    create_stage_array(group, "n_segments", (n, n_levels), "int16", ("image", "level"), fill_value=0)
    create_stage_array(group, "n_levels", (n,), "int16", ("image",), fill_value=0)
    create_stage_array(group, "parent", (n, n_levels, max_segments), "int16", ("image", "level", "segment"),
                       fill_value=-1)
    if settings.get("names"):
        create_stage_array(group, "name_token", (n, max_segments), "int16", ("image", "segment"), fill_value=-1)
    group.attrs["settings"] = settings


def _pad_levels(levels: np.ndarray, n_levels: int) -> np.ndarray:
    """Repeat the coarsest level until there are n_levels (still nested: identity transitions)."""
    if len(levels) > n_levels:
        raise ValueError(f"method produced {len(levels)} levels, the store holds {n_levels}")
    return np.concatenate([levels, np.repeat(levels[-1:], n_levels - len(levels), axis=0)])


def compute_levels(attn, settings: dict) -> np.ndarray:
    """(level, y, x) int32 nested levels of one image's attention by the stored ``settings``.

    attn: (qy, qx, ky, kx) float32 numpy (the segment stage's read, or a worker's on the CPU):
    ``diffparts.segment.hierarchy.segment_levels``, the one library entry for every method; or a
    torch tensor on a GPU worker (extraction of a compact store): DiffSeg runs in torch on its
    device (``diffparts.segment.diffseg_torch``), NCut through the same entry with its ``device``
    set to the tensor's (``diffparts.segment.ncut_torch``).
    """
    from diffparts.segment.hierarchy import segment_levels

    kwargs = dict(method=settings["method"], level_thresholds=settings["level_thresholds"],
                  rounds=settings["rounds"], anchors_per_side=settings["anchors_per_side"],
                  out_size=tuple(settings["out_shape"]), eps=settings["eps"])
    if not isinstance(attn, np.ndarray):  # a torch tensor
        if settings["method"] == "diffseg":
            from diffparts.segment.diffseg_torch import diffseg_levels_torch

            kw = {k: v for k, v in kwargs.items() if k != "method"}
            return diffseg_levels_torch(attn, **kw)
        params = dict(settings.get("ncut_params") or {})
        if settings["method"] == "ncut" and attn.device.type != "cpu":
            params["device"] = str(attn.device)   # NCut's matrix work back on the GPU (segment.ncut_torch)
        return segment_levels(attn.float().cpu().numpy(), ncut_params=params or None, **kwargs)
    return segment_levels(attn, ncut_params=settings.get("ncut_params"), **kwargs)


def _segment_one(root, index: int, settings: dict, attn=None, cross=None) -> dict:
    """Segment one image (its stored attention, or ``attn`` given by an extract worker) and write it."""
    from diffparts.store import read_self_attention

    levels = compute_levels(read_self_attention(root, index) if attn is None else attn, settings)  # level y x
    return write_levels(root, index, levels, settings, cross)


def write_levels(root, index: int, levels: np.ndarray, settings: dict, cross=None) -> dict:
    """Write one image's levels, parents (and names) into ``segments/``, then its done marker."""
    from diffparts.segment.hierarchy import parents_from_levels
    from diffparts.store import clear_failure, mark_done

    group = root[STAGE]
    counts = [int(lv.max()) + 1 for lv in levels]
    if max(counts) > settings["max_segments"]:
        raise ValueError(f"{max(counts)} segments exceed the store's {settings['max_segments']}")
    n_levels = len(levels)
    padded = _pad_levels(levels, settings["n_levels"])  # level y x
    parent = np.full((settings["n_levels"], settings["max_segments"]), -1, dtype=np.int16)
    for level, p in enumerate(parents_from_levels(padded)):
        parent[level, : len(p)] = p
    group["labels"][index] = padded.astype(np.int16)
    group["n_segments"][index] = np.array([int(lv.max()) + 1 for lv in padded], dtype=np.int16)
    group["n_levels"][index] = n_levels
    group["parent"][index] = parent
    names = []
    if settings.get("names"):
        from diffparts.segment.naming import name_segments
        from diffparts.store import attention_tokens, read_cross_attention

        token_index, names = name_segments(
            levels[0], read_cross_attention(root, index) if cross is None else cross, attention_tokens(root),
            settings.get("voting", "mean"))
        row = np.full(settings["max_segments"], -1, dtype=np.int16)
        row[: len(token_index)] = token_index
        group["name_token"][index] = row
    clear_failure(root, STAGE, index)
    mark_done(root, STAGE, index)
    return {"segments": counts, "n_levels": n_levels, "names": names}


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)  # image errors are recorded inside: the store fails it
def segment_images(store: str, images: list[dict], settings: dict) -> list[dict]:
    """Segment each image (``diffparts.segment.hierarchy.segment_levels``) and write its chunks.

    images: ``[{"image_id", "name", "index"}]``. Images already done are skipped; an image that
    fails for any reason (bad attention, too many segments, an ARPACK error, memory) gets a
    ``failures/segments`` record naming the exception and the others go on. Returns one small
    dict per image: index, image_id, name, status, segments per level.
    """
    from diffparts.store import is_done, record_failure

    root = _open(store)
    rows = []
    for img in images:
        row = {"index": img["index"], "image_id": img["image_id"], "name": img["name"]}
        if is_done(root, STAGE, img["index"]):
            rows.append({**row, "status": "skipped"})
            continue
        try:
            rows.append({**row, "status": "done", **_segment_one(root, img["index"], settings)})
        except Exception as err:  # noqa: BLE001 - one image's failure, whatever it is, is recorded
            reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            record_failure(root, STAGE, img["image_id"], img["name"], f"segment: {reason}", index=img["index"])
            rows.append({**row, "status": "failed", "reason": reason})
    return rows


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def record_batch_failure(store: str, images: list[dict], reason: str) -> list[dict]:
    """A batch task failed for good: record each of its unfinished images in ``failures/segments``."""
    from diffparts.store import is_done, record_failure

    root = _open(store)
    rows = []
    for img in images:
        if not is_done(root, STAGE, img["index"]):
            record_failure(root, STAGE, img["image_id"], img["name"], f"segment: {reason}", index=img["index"])
            rows.append({**img, "status": "failed", "reason": reason})
    return rows


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def score_segments(store: str, corpus: str, images: list[dict], fresh: list[int] | None = None) -> dict:
    """Measures against the corpus's part masks (``diffparts.metrics``; docs/design.md §8 "Measures").

    Per image: Hungarian mIoU and pixel accuracy of level 0 and NFCovering over all levels;
    overall: the same summed over the images (per-image matching) and mIoU per level. Labels
    are resized to the mask by nearest neighbour when their sizes differ. Images without a
    part mask are left out. Returns {"rows": [...], "summary": {...}} (small).

    Streams (issue 20): one image's labels and mask in memory at a time (it kept every image's
    labels, resized to the mask, and mask: about 1 MB per toy bird, 4.6 GB of peak RSS at 4,000).
    The number of classes is the legend's; where a mask holds a class past it (or there is no
    legend), the images are read a second time with the number seen, so the result equals the
    all-at-once one.

    Incremental (issue 20): the measures' sums are kept in the store (``segments`` attribute
    ``scores``, ``state``); when the images scored last time are the first of ``images``, none
    of them segmented again in this run (``fresh``: store indices segmented now) and the number
    of classes and levels is the same, only the images after them are read (a corpus grown by
    100 images reads 100 label maps, not all of them). The result equals scoring all at once.
    """
    from diffparts.corpus import open_corpus
    from diffparts.store.markers import read_image_vector

    root = _open(store, "r")
    dataset = open_corpus(corpus)
    records = {r.name: r for r in dataset}
    legend = getattr(dataset, "part_legend", {}) or {}
    images = [img for img in images if (rec := records.get(img["name"])) is not None
              and rec.part_mask_path is not None and rec.part_mask_path.exists()]
    n_levels = read_image_vector(root[f"{STAGE}/n_levels"]) if images else np.zeros(0, np.int16)
    images = [img for img in images if int(n_levels[img["index"]]) > 0]
    if not images:
        return {"rows": [], "summary": {}}
    max_levels = max(int(n_levels[img["index"]]) for img in images)
    n_classes = max(legend, default=0) + 1
    images = [{**img, "n_levels": int(n_levels[img["index"]])} for img in images]
    start = _resumable(root, corpus, images, set(fresh or ()), n_classes, max_levels)
    done = start["count"] if start else 0
    scored = _score_stream(root, records, images[done:], n_classes, max_levels, start)
    if scored["classes_seen"] > n_classes:                # a class past the legend: again, with it, all
        start = None
        scored = _score_stream(root, records, images, scored["classes_seen"], max_levels)
    rows = (start["rows"] if start else []) + scored["rows"]
    state = {**scored["state"], "prefix_key": scores_key(corpus, images)}
    return {"rows": rows, "summary": scored["summary"], "state": state, "read": len(images) - (done if start else 0)}


def _resumable(root, corpus: str, images: list[dict], fresh: set, n_classes: int, max_levels: int) -> dict | None:
    """The stored measures' state with its rows, when ``images`` continue what it scored (see
    ``score_segments``), else None."""
    found = dict(root[STAGE].attrs).get(SCORES_ATTR) or {}
    state = found.get("state")
    if not state or int(state["count"]) > len(images) or int(state["overall"]["n_classes"]) != n_classes \
            or int(state["max_levels"]) != max_levels:
        return None
    head = images[: int(state["count"])]
    if any(int(img["index"]) in fresh for img in head) or scores_key(corpus, head) != state.get("prefix_key"):
        return None
    return {**state, "rows": list(found.get("rows", []))}


def _image_pair(root, record, img: dict, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(level, y, x) int64 labels of one image resized to its mask, and the (y, x) int64 mask."""
    from diffparts.corpus import load_mask

    levels = np.asarray(root[f"{STAGE}/labels"][img["index"], :n_levels], dtype=np.int64)  # level y x
    gt = load_mask(record.part_mask_path).astype(np.int64)  # y x
    if levels.shape[1:] != gt.shape:
        ys = (np.arange(gt.shape[0]) * levels.shape[1]) // gt.shape[0]
        xs = (np.arange(gt.shape[1]) * levels.shape[2]) // gt.shape[1]
        levels = levels[:, ys][:, :, xs]
    return levels, gt


def _score_stream(root, records: dict, images: list[dict], n_classes: int, max_levels: int,
                  start: dict | None = None) -> dict:
    """``score_segments``' measures with ``n_classes`` classes, one image at a time, going on
    from ``start`` (a stored ``state``) if given. When a mask holds a class >= ``n_classes`` it
    only reads the rest for ``classes_seen`` (the caller scores again with that many)."""
    from diffparts.metrics import SegmentationScores, nf_covering

    overall = SegmentationScores(n_classes, ignore_index=None)
    per_level = [SegmentationScores(n_classes, ignore_index=None) for _ in range(max_levels)]
    cover_sum, cover_n, count = 0.0, 0, 0
    if start:
        overall.load_state(start["overall"])
        for scores, state in zip(per_level, start["per_level"]):
            scores.load_state(state)
        cover_sum, cover_n, count = float(start["covering_sum"]), int(start["covering_n"]), int(start["count"])
    rows, covering, seen = [], [], n_classes
    for img in images:
        levels, gt = _image_pair(root, records[img["name"]], img, img["n_levels"])
        seen = max(seen, int(gt.max()) + 1)
        if seen > n_classes:
            continue
        one = SegmentationScores(n_classes, ignore_index=None)
        one.update(levels[0], gt)
        overall.update(levels[0], gt)
        for k in range(max_levels):
            per_level[k].update(levels[min(k, len(levels) - 1)], gt)
        result = one.result()
        cover = nf_covering(levels, gt)
        covering.append(cover)
        rows.append({"image_id": img["image_id"], "name": img["name"], "miou": result.miou,
                     "pixel_accuracy": result.pixel_accuracy, "nf_covering": cover})
    if seen > n_classes:
        return {"classes_seen": seen, "rows": [], "summary": {}}
    finite = np.asarray(covering, np.float64)
    finite = finite[np.isfinite(finite)]
    cover_sum, cover_n, count = cover_sum + float(finite.sum()), cover_n + int(finite.size), count + len(images)
    total = overall.result()
    summary = {
        "images": count,
        "classes": n_classes,
        "miou": total.miou,
        "pixel_accuracy": total.pixel_accuracy,
        "nf_covering": cover_sum / cover_n if cover_n else float("nan"),
        "miou_per_level": [s.result().miou for s in per_level],
    }
    state = {"count": count, "max_levels": max_levels, "overall": overall.state(),
             "per_level": [s.state() for s in per_level], "covering_sum": cover_sum, "covering_n": cover_n}
    return {"classes_seen": seen, "rows": rows, "summary": summary, "state": state}


#: ``segments/`` attribute holding the last measures and what they were computed over.
SCORES_ATTR = "scores"


def scores_key(corpus: str, images: list[dict]) -> str:
    """What a set of measures was computed over: the corpus and the segmented images (index, name)."""
    import hashlib
    import json

    from pathlib import Path

    listed = [[int(img["index"]), str(img["name"])] for img in images]
    return hashlib.sha256(json.dumps([str(Path(corpus).resolve()), listed]).encode()).hexdigest()


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def stored_segment_scores(store: str, key: str) -> dict | None:
    """The measures recorded by an earlier run over the same images (``scores_key``), or None:
    a re-run that segmented nothing reads them instead of reading every label map again."""
    found = dict(_open(store, "r")[STAGE].attrs).get(SCORES_ATTR)
    return {"rows": found["rows"], "summary": found["summary"]} if found and found.get("key") == key else None


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def record_segment_scores(store: str, key: str, scores: dict, names: list[str]) -> None:
    """Keep the summary, the rows of ``names`` (the artifact's first rows) and the sums' state
    (the next run scores only images added after these) for the next run."""
    wanted = set(names)
    rows = [r for r in scores["rows"] if r["name"] in wanted]
    _open(store)[STAGE].attrs[SCORES_ATTR] = {"key": key, "summary": scores["summary"], "rows": rows,
                                              **({"state": scores["state"]} if scores.get("state") else {})}


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # a picture: an error would only repeat
def save_segment_picture(store: str, corpus: str | None, path: str, level: int = 0, n_images: int = 8) -> dict:
    """The first ``n_images`` segmented images with their segments at ``level`` (0 = finest),
    saved as a PNG grid at ``path`` (``diffparts.report.segments``); {"path", "images"}."""
    from pathlib import Path

    from diffparts.corpus import ImageLoadError, load_rgb, open_corpus
    from diffparts.parts.dataset import image_infos, segment_map
    from diffparts.report.segments import segment_grid
    from diffparts.store import done_mask

    root = _open(store, mode="r")
    finished = done_mask(root, STAGE)
    records = list(open_corpus(corpus)) if corpus and Path(corpus).exists() else None
    infos = [i for i in image_infos(root, records) if finished[i.index]][:n_images]
    if not infos:
        raise ValueError(f"no segmented image in {store} to draw")
    images, maps = [], []
    for info in infos:
        lab = segment_map(root, info.index, level)
        img = np.full((lab.shape[0] * 4, lab.shape[1] * 4, 3), 128, np.uint8)   # grey when the file is gone
        if info.path is not None:
            try:
                img = load_rgb(info.path, min_size=1, max_side=512)
            except ImageLoadError:
                pass
        images.append(img)
        maps.append(lab)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    segment_grid(images, maps).save(out)
    return {"path": str(out), "images": len(infos)}
