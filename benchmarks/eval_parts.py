"""Quality of the parts stage on synthetic birds (issue 6, docs/design.md §8 "Measures"): prints one JSON object.

Rows of the table (all on the same held-out synthetic birds, all with the same number of
categories K + 1 including background):

- ``diffparts``: extract attention with the model, DiffSeg levels (thresholds from the data,
  ``diffparts.segment.thresholds``), then the parts stage (descriptors, streaming clustering,
  part maps), evaluated with ``diffparts.parts.scoring.evaluate_store``;
- ``diffparts, random UNet``: the same pipeline with the checkpoint's UNet re-initialised at
  random (same shape; VAE, text encoder and tokenizer kept);
- ``k-means colour+position (dataset)``: one k-means over the pixels of all images on RGB and
  image position, so labels mean the same in every image (a fair reading of "k-means on raw
  pixel colour and position" for cross-image measures);
- ``k-means colour+position (per image)``: ``diffparts.baselines.kmeans_pixels`` per image
  (labels are arbitrary across images, so NMI/ARI/PCK show what no correspondence gives);
- ``box grid``: categories = cells of a 3 x 3 grid over the (ground-truth) box, background
  outside: what the box alone gives;
- ``oracle``: the corpus's true part masks as part maps: the ceiling of the transfer method.

Measures: NMI and ARI at visible keypoints, PCK@0.05 and PCK@0.1 over same-class pairs (the
box is the corpus's box). Usage (model default: the embedded checkpoint)::

    .venv/bin/python benchmarks/eval_parts.py --n-images 120 --k 8 [--model PATH] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(msg: str) -> None:
    print(f"[eval_parts {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_corpus(path: Path, n: int, seed: int) -> list:
    from diffparts.corpus import generate_birds, open_corpus

    if not (path / "images.txt").is_file():
        generate_birds(path, n, seed)
    return list(open_corpus(path))


def random_unet_model(model: Path, out: Path, seed: int = 0) -> Path:
    """A copy of ``model`` whose UNet is re-initialised at random (same config)."""
    import torch
    from diffusers import UNet2DConditionModel

    from diffparts.model.load import load_pipeline

    if (out / "model_index.json").is_file():
        return out
    pipe = load_pipeline(model)
    torch.manual_seed(seed)
    pipe.unet = UNet2DConditionModel.from_config(pipe.unet.config)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def extract(records, model: Path, store: Path, batch: int = 8, features=None, corpus: Path | None = None) -> None:
    """Attention (and, with a FeatureConfig, UNet features) of every record into ``store``
    (the library calls the extract tasks make)."""
    from dataclasses import asdict

    from diffparts.corpus import load_rgb
    from diffparts.model.extract import CaptureConfig, extract_attention, native_image_size, prepare_images
    from diffparts.model.load import load_pipeline
    from diffparts.store import (build_manifest, create_attention_arrays, create_feature_arrays, describe_corpus,
                                 describe_images, done_mask, has_attention_arrays, has_features, mark_done,
                                 model_hash, open_store, prepare_store, write_attention, write_features)

    config = CaptureConfig()
    settings = {"capture": {"timestep": config.timestep}, "precision": "float16"}
    if features is not None:
        settings["features"] = asdict(features)
    identity = build_manifest(str(model), model_hash(model), settings)
    prepared = prepare_store(store, describe_images(records), identity, stages=("attention", "segments"),
                             corpus=describe_corpus(corpus) if corpus else None)
    root = open_store(store, "r+")
    done = done_mask(root, "attention")
    todo = [(k, r) for k, r in zip(prepared.indices, records) if not done[k]]
    if not todo:
        return
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    size = native_image_size(pipe)
    for s in range(0, len(todo), batch):
        chunk = todo[s:s + batch]
        pixels = np.stack([prepare_images(load_rgb(r.path)[None], size)[0] for _, r in chunk])
        result = extract_attention(pipe, pixels, config, features)
        if not has_attention_arrays(root):
            create_attention_arrays(root, result.resolution, result.tokens, result.image_size, "float16")
        if features is not None and not has_features(root):
            create_feature_arrays(root, {b: f.shape[1:] for b, f in result.features.items()}, asdict(features))
        for j, (k, _) in enumerate(chunk):
            if features is not None:
                write_features(root, k, {b: f[j] for b, f in result.features.items()})
                mark_done(root, "features", k)
            write_attention(root, k, result.self_attn[j], result.cross_attn[j])
            mark_done(root, "attention", k)
        log(f"extracted {min(s + batch, len(todo))}/{len(todo)}")


def segment(store: Path, out_size: int) -> dict:
    """DiffSeg levels for every image (thresholds from the first 16 images' KL distances)."""
    from diffparts.segment.hierarchy import diffseg_levels
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds
    from diffparts.store import create_stage_array, ensure_stage, image_count, mark_done, open_store, read_self_attention

    root = open_store(store, "r+")
    n = image_count(root)
    if "segments/labels" in root and root["segments"].attrs.get("eval_settings") == {"out_size": out_size}:
        if bool(np.asarray(root["segments/done"][:]).all()):
            return dict(root["segments"].attrs["eval_summary"])
    rule = ThresholdRule()
    choice = choose_thresholds((read_self_attention(root, i) for i in range(min(16, n))), rule)
    group = ensure_stage(root, "segments")
    n_levels = len(choice.level_thresholds)
    if "labels" in group:
        del group["labels"]
    labels = create_stage_array(group, "labels", (n, n_levels, out_size, out_size), "int32",
                                ("image", "level", "y", "x"), fill_value=-1)
    counts = []
    for i in range(n):
        levels, _ = diffseg_levels(read_self_attention(root, i), choice.level_thresholds, rule.rounds,
                                   rule.anchors_per_side, out_size)
        labels[i] = levels
        mark_done(root, "segments", i)
        counts.append([int(lv.max()) + 1 for lv in levels])
    summary = {"thresholds": choice.as_dict()["level_thresholds"],
               "mean_segments_per_level": np.mean(counts, 0).round(2).tolist()}
    group.attrs.update({"eval_settings": {"out_size": out_size}, "eval_summary": summary})
    return summary


def run_parts(store: Path, records, k: int, level: int, seed: int, max_pairs: int, out_dir: Path | None,
              descriptor: dict | None = None, methods: tuple[str, ...] = ("parts",)) -> dict:
    """Descriptors, clustering and part maps, then the scores of each transfer method.

    Returns the first method's scores at the top level and every method's under ``methods``.
    """
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.dataset import (build_descriptors, cluster_parts, image_infos, paint_part_labels,
                                         require_segments)
    from diffparts.parts.scoring import evaluate_store
    from diffparts.parts.descriptors import DescriptorConfig
    from diffparts.store import open_store

    root = open_store(store, "r+")
    require_segments(root)
    infos = image_infos(root, records)
    desc = build_descriptors(root, infos, DescriptorConfig(**{"level": level, **(descriptor or {})}))
    clusters = cluster_parts(root, ClusterConfig(n_clusters=k or None, random_state=seed))   # 0: silhouette
    paint_part_labels(root)
    by_method = {m: evaluate_store(root, infos, max_pairs=max_pairs, random_state=seed, method=m) for m in methods}
    scores = by_method[methods[0]]
    if out_dir is not None:
        from diffparts.parts.gallery import save_store_pictures

        save_store_pictures(root, infos, out_dir)
    return {**scores, "segments": desc["segments"], "foreground_segments": desc["foreground_segments"],
            "cluster_counts": clusters["counts"], "k": clusters["k"], "k_scores": clusters["k_scores"],
            "methods": by_method}


def _image_maps(records, size: int):
    from diffparts.corpus import load_rgb
    from PIL import Image

    for r in records:
        img = load_rgb(r.path)
        yield r, img, np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))


def _evaluate_maps(records, maps: list[np.ndarray], max_pairs: int, seed: int) -> dict:
    from PIL import Image

    from diffparts.parts.evaluate import evaluate_parts

    sizes = []
    for r in records:
        with Image.open(r.path) as im:
            sizes.append(im.size)
    return evaluate_parts(lambda i: maps[i], [r.keypoints for r in records], [r.bbox for r in records], sizes,
                          [r.class_id for r in records], max_pairs=max_pairs, random_state=seed)


def pixel_kmeans_dataset(records, k: int, size: int, seed: int, max_pairs: int, position_weight: float = 1.0) -> dict:
    """One MiniBatchKMeans over the pixels of all images: RGB in [0, 1] and position in [0, 1]."""
    from sklearn.cluster import MiniBatchKMeans

    ys, xs = np.mgrid[0:size, 0:size]
    pos = np.stack([(xs.ravel() + 0.5) / size, (ys.ravel() + 0.5) / size], 1) * position_weight
    km = MiniBatchKMeans(k, random_state=seed, batch_size=4096, n_init=3)
    feats = []
    for _, _, small in _image_maps(records, size):
        feats.append(np.concatenate([small.reshape(-1, 3) / 255.0, pos], 1).astype(np.float32))
    rng = np.random.default_rng(seed)
    sample = np.concatenate([f[rng.choice(len(f), min(len(f), 1024), replace=False)] for f in feats])
    km.fit(sample)
    maps = [km.predict(f).reshape(size, size) for f in feats]
    return _evaluate_maps(records, maps, max_pairs, seed)


def pixel_kmeans_per_image(records, k: int, size: int, seed: int, max_pairs: int) -> dict:
    from diffparts.baselines import kmeans_pixels

    maps = [kmeans_pixels(small, k, random_state=seed, n_init=1) for _, _, small in _image_maps(records, size)]
    return _evaluate_maps(records, maps, max_pairs, seed)


def box_grid(records, size: int, seed: int, max_pairs: int, cells: int = 3) -> dict:
    from PIL import Image

    maps = []
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    for r in records:
        with Image.open(r.path) as im:
            w, h = im.size
        bx, by, bw, bh = r.bbox
        u = (xs * w / size - bx) / bw
        v = (ys * h / size - by) / bh
        inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
        cell = 1 + np.clip((v * cells).astype(int), 0, cells - 1) * cells + np.clip((u * cells).astype(int), 0, cells - 1)
        maps.append(np.where(inside, cell, 0))
    return _evaluate_maps(records, maps, max_pairs, seed)


def oracle_parts(records, seed: int, max_pairs: int) -> dict:
    """Upper bound of the transfer: the corpus's true part masks used as the part maps."""
    from diffparts.corpus import load_mask

    maps = [load_mask(r.part_mask_path).astype(np.int64) for r in records]
    return _evaluate_maps(records, maps, max_pairs, seed)


def feature_grid_ceiling(records, side: int, seed: int, max_pairs: int) -> dict:
    """PCK of a perfect matcher that can only name the centre of a ``side`` x ``side`` cell:
    every target keypoint moved to the centre of the feature cell holding it (the resolution
    limit of matching on the stored feature grid)."""
    from PIL import Image

    from diffparts.metrics import PCKScores, same_class_pairs

    sizes = []
    for r in records:
        with Image.open(r.path) as im:
            sizes.append(im.size)
    pairs = same_class_pairs(np.asarray([r.class_id for r in records]), max_pairs=max_pairs, random_state=seed)
    pck = PCKScores()
    for s, t in pairs:
        kp_s, kp_t = np.asarray(records[s].keypoints, np.float64), np.asarray(records[t].keypoints, np.float64)
        cell = np.asarray(sizes[t], np.float64) / side                       # image px per cell (x, y)
        pred = (np.floor(kp_t[:, :2] / cell) + 0.5) * cell
        pred[kp_s[:, 2] <= 0.5] = np.nan
        pck.update(pred, kp_s, kp_t, records[t].bbox)
    res = pck.result()
    return {"feature_side": side, "pck@0.05": res.pck.get(0.05), "pck@0.1": res.pck.get(0.1), "n_pairs": res.n_pairs,
            "n_pair_keypoints": res.n_keypoints}


METHOD_NAMES = {"parts": "relative position in the part", "features": "features: cosine NN over the image (DIFT)",
                "features-box": "features: cosine NN in the object box", "features-part": "features within the part"}


def markdown_table(rows: dict) -> str:
    """The README's table: one line per (row, transfer method)."""
    lines = ["| part categories | transfer | NMI | ARI | PCK@0.05 | PCK@0.1 | through a part |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    global_done = False
    for name, row in rows.items():
        methods = dict(row.get("methods") or {"": row})
        if global_done:           # global matching does not use the categories: its line is printed once
            methods = {m: r for m, r in methods.items() if m not in ("features", "features-box")}
        for method, r in methods.items():
            nmi = f"{r['nmi']:.3f}" if "nmi" in r else "-"
            ari = f"{r['ari']:.3f}" if "ari" in r else "-"
            via = f"{r['share_via_part']:.2f}" if "share_via_part" in r else "-"
            how = METHOD_NAMES.get(method, "relative position in the part" if "nmi" in r else "-")
            label = name
            if method in ("features", "features-box"):
                nmi = ari = via = "-"
                label = "features alone (no categories)"
                global_done = True
            lines.append(f"| {label} | {how} | {nmi} | {ari} | {r['pck@0.05']:.3f} | {r['pck@0.1']:.3f} | {via} |")
    return "\n".join(lines)


#: Descriptor sets of the trained arm (DescriptorConfig overrides; "unet" weight from --unet-weight).
DESCRIPTOR_SETS = ("attention", "features", "features+attention")
#: Transfer methods scored for every descriptor set (diffparts.parts.transfer.METHODS).
TRANSFER_METHODS = ("parts", "features", "features-box", "features-part")


def descriptor_set(name: str, unet_weight: float | None, base: dict | None) -> dict:
    """DescriptorConfig overrides of one descriptor set."""
    from diffparts.parts.descriptors import UNET_WEIGHT

    unet_weight = UNET_WEIGHT if unet_weight is None else unet_weight
    base = dict(base or {})
    if name == "attention":
        return {**base, "weight_unet": 0.0}
    if name == "features":
        return {**base, "weight_attn": 0.0, "weight_unet": unet_weight}
    return {**base, "weight_unet": unet_weight}


def main() -> None:
    parser = argparse.ArgumentParser(description="Quality of the parts stage on synthetic birds (JSON).")
    parser.add_argument("--model", default=None, help="diffusers folder (default: the embedded checkpoint)")
    parser.add_argument("--work", type=Path, default=Path("out/eval_parts"), help="corpus, stores, pictures (out/ is git-ignored)")
    parser.add_argument("--n-images", type=int, default=120, help="held-out synthetic birds evaluated")
    parser.add_argument("--corpus-seed", type=int, default=1234, help="seed of the held-out birds (training used 0; validation 999)")
    parser.add_argument("--k", type=int, default=8, help="foreground part categories (every method gets K + 1)")
    parser.add_argument("--level", type=int, default=0, help="segment level described (0 = finest)")
    parser.add_argument("--map-size", type=int, default=64, help="side of the segment / part maps")
    parser.add_argument("--max-pairs", type=int, default=2000, help="same-class pairs for PCK")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=["trained", "random", "baselines"])
    parser.add_argument("--descriptor", type=json.loads, default=None,
                        help='DescriptorConfig overrides as JSON, e.g. \'{"split_at_box": false}\'')
    parser.add_argument("--features", type=json.loads, default={},
                        help='FeatureConfig of the trained arm as JSON (default {}: the default up-block from '
                             'the attention forward), e.g. \'{"blocks": [0, 1], "noise_samples": 4, "timestep": 261}\'')
    parser.add_argument("--no-features", action="store_true", help="attention only (the table before issue 14)")
    parser.add_argument("--sets", nargs="*", default=list(DESCRIPTOR_SETS), choices=DESCRIPTOR_SETS,
                        help="descriptor sets of the trained arm")
    parser.add_argument("--unet-weight", type=float, default=None,
                        help="DescriptorConfig.weight_unet of the feature sets (default: descriptors.UNET_WEIGHT)")
    parser.add_argument("--markdown", action="store_true", help="after the JSON, print the README's table")
    parser.add_argument("--k-sweep", type=int, nargs="*", default=None, metavar="K",
                        help="only the trained arm's first descriptor set at each K (NMI/ARI/PCK per K; "
                             "0 = K chosen by silhouette, ClusterConfig(n_clusters=None))")
    args = parser.parse_args()

    from diffparts.model.features import FeatureConfig
    from diffparts.model.load import DEFAULT_MODEL

    model = Path(args.model or DEFAULT_MODEL)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    corpus = work / f"birds-s{args.corpus_seed}-n{args.n_images}"
    records = ensure_corpus(corpus, args.n_images, args.corpus_seed)
    records = [r for r in records if r.keypoints is not None and r.bbox is not None][: args.n_images]
    log(f"{len(records)} birds")
    features = None if args.no_features else FeatureConfig(**{**args.features, "blocks": (
        None if args.features.get("blocks") is None else tuple(args.features["blocks"]))})
    sets = args.sets if features is not None else ["attention"]
    methods = TRANSFER_METHODS if features is not None else ("parts",)
    feature_tag = "" if features is None else "-f" + "-".join(f"{k}{v}" for k, v in sorted(args.features.items())
                                                             ).replace(" ", "").replace(",", "_")
    rows: dict[str, dict] = {}
    arms = []
    if "trained" not in args.skip:
        arms.append(("diffparts", model))
    if "random" not in args.skip and args.k_sweep is None:
        arms.append(("diffparts, random UNet", random_unet_model(model, work / "random-unet-model", args.seed)))
    for name, m in arms:
        tag = "random" if "random" in name else "trained"
        trained = tag == "trained"
        store = work / f"{tag}{feature_tag if trained else ''}.zarr"
        t = time.perf_counter()
        extract(records, m, store, features=features if trained else None, corpus=corpus)
        seg = segment(store, args.map_size)
        log(f"{name}: segments {seg}")
        if trained and args.k_sweep:
            desc = descriptor_set(sets[0], args.unet_weight, args.descriptor)
            for k in args.k_sweep:
                rows[f"{name}, {sets[0]} descriptors, K={k}"] = run_parts(
                    store, records, k, args.level, args.seed, args.max_pairs, None, desc, methods)
                log(f"K={k}: nmi {rows[f'{name}, {sets[0]} descriptors, K={k}']['nmi']:.3f}")
            continue
        for dset in (sets if trained else ["attention"]):
            label = name if dset == "attention" else f"{name}, {dset} descriptors"
            rows[label] = {**run_parts(store, records, args.k, args.level, args.seed, args.max_pairs,
                                       work / f"pictures-{tag}-{dset}", descriptor_set(dset, args.unet_weight,
                                                                                      args.descriptor),
                                       methods if trained else ("parts",)),
                           "segmentation": seg, "seconds": round(time.perf_counter() - t, 1)}
            log(f"{label}: " + json.dumps({mm: {kk: round(v, 3) for kk, v in r.items() if kk in ("nmi", "pck@0.1")}
                                           for mm, r in rows[label]["methods"].items()}))
    if "baselines" not in args.skip and args.k_sweep is None:
        rows["k-means colour+position (dataset)"] = pixel_kmeans_dataset(records, args.k + 1, args.map_size,
                                                                        args.seed, args.max_pairs)
        rows["k-means colour+position (per image)"] = pixel_kmeans_per_image(records, args.k + 1, args.map_size,
                                                                            args.seed, args.max_pairs)
        rows["box grid 3x3 (GT box)"] = box_grid(records, args.map_size, args.seed, args.max_pairs)
        rows["oracle: true part masks"] = oracle_parts(records, args.seed, args.max_pairs)
        if features is not None and "trained" not in args.skip:
            from diffparts.store import open_store

            shapes = open_store(work / f"trained{feature_tag}.zarr")["features"].attrs["shapes"]
            side = max(int(v[-1]) for v in shapes.values())
            rows[f"ceiling: true point at its {side}x{side} feature cell centre"] = feature_grid_ceiling(
                records, side, args.seed, args.max_pairs)
    training = {}
    if (model / "training.json").is_file():
        full = json.loads((model / "training.json").read_text())
        training = {k: full.get(k) for k in ("final", "vae_steps", "unet_steps", "unet_val_loss")}
    print(json.dumps({"benchmark": "eval_parts", "model": str(model), "training": training,
                      "n_images": len(records), "k": args.k, "features": None if features is None else args.features,
                      "unet_weight": args.unet_weight, "level": args.level, "descriptor": args.descriptor,
                      "map_size": args.map_size, "corpus_seed": args.corpus_seed,
                      "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}, default=float))
    if args.markdown:
        print(markdown_table(rows))


if __name__ == "__main__":
    main()
