"""Which evidence of absence separates hidden from visible categories (issue 18)? Prints JSON.

A validation tool, run on the VALIDATION birds (corpus seed 999) to choose the repaint
detector's statistic; never on the evaluation ones. On a copy of ``--source``'s store
(``--work``), the ``--cases`` part cases of the occlusion stage's plan, each with every fill
(noise, grey, patch, object) and, for the background controls, the same shape moved onto the
background. For each case: the occluded image's assignment (where each category belongs),
the img2img evidence detector's calibrated scores, and per category region R_k (dilated one
cell) two repaintings of R_k from its context by the inpainting checkpoint (class prompt, 10
DDIM steps, guidance 7; :mod:`diffparts.occlusion.repaint`). Per category the statistics
(means over R_k, undilated):

- ``col``: |repainting - input| of the colour; ``tex``: of the local contrast (the repaint
  detector's default); ``both``: their sum; ``-sp`` / ``-.5sp``: minus (half) the same distance
  between the two repaintings (the model's doubt); ``mcol``: |mean colour of the repainting -
  mean colour of the input|; ``mtex``: mean local contrast of the repainting - of the input
  (``-mtex``, ``|mtex|``: signs); ``2s``: two-sided (|z|); ``logtex``: log of ``tex``;
  ``i2i+X``: the larger of the img2img score and X's.

The same statistics on 32 seeded training images (their store map as regions) calibrate each
category (robust z) and give the family-wise threshold (the 0.9 quantile of the training
images' leave-one-out maximum z). Printed per statistic: ROC AUC per fill (all cases / hidden
part not grey-ish), false alarms on the background controls at the family-wise threshold,
and F1 over the part cases.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detect_features.py --source runs/occ-val-src --build 999,64 \\
        --work runs/x-val --out runs/x-val.npz            # collect (about 40 minutes on 1 loaded core), then print
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/detect_features.py --out runs/x-val.npz --print-only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FILLS = ("noise", "grey", "patch", "object")
COLUMNS = ("col", "tex", "col_sp", "tex_sp", "mcol", "mtex")


def log(m: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True)


def features(image, labels, inpaint, cfg, k1: int, seed: int, size: int) -> np.ndarray:
    """(category, COLUMNS) of one image and its (ly, lx) category map; NaN without a region."""
    from diffparts.occlusion.occluders import resize_labels
    from diffparts.occlusion.repaint import appearance, region_masks, repaint

    cats, masks = region_masks(labels, k1, size, cfg.dilate, 4)
    lab = resize_labels(np.asarray(labels, np.int16), (size, size))
    out = np.full((k1, len(COLUMNS)), np.nan, np.float32)
    if not cats:
        return out
    painted = repaint(inpaint, image, masks, cfg, seed)                              # category seed y x 3
    a, p = appearance(image, 1.0, 1.0), appearance(painted, 1.0, 1.0)
    for j, k in enumerate(cats):
        r = lab == k
        if r.sum() < 1:
            r = masks[j]
        din = np.abs(p[j] - a[None])                                                  # seed y x c
        sp = np.abs(p[j, 0] - p[j, 1])
        out[k] = [din[..., :3].mean(-1).mean(0)[r].mean(), din[..., 3:].mean(-1).mean(0)[r].mean(),
                  sp[..., :3].mean(-1)[r].mean(), sp[..., 3:].mean(-1)[r].mean(),
                  np.abs(p[j][:, r, :3].mean(1) - a[r, :3].mean(0)).mean(), p[j][:, r, 3:].mean() - a[r, 3:].mean()]
    return out


def collect(args) -> dict:
    """Build ``--source`` if asked, copy its store to ``--work``, collect every row (saved to
    ``--out`` after each)."""
    from diffparts.corpus import load_rgb
    from diffparts.inversion.stage import store_model
    from diffparts.metrics.occlusion import hidden_greyish
    from diffparts.model.extract import prepare_images
    from diffparts.occlusion import cases as C
    from diffparts.occlusion.complete import TOY_INPAINT_MODEL, load_inpaint_pipeline
    from diffparts.occlusion.repaint import RepaintConfig
    from diffparts.occlusion.split import training_images
    from diffparts.occlusion.stage import occlusion_config, setup_occlusion
    from diffparts.store import model_hash, open_store

    src, work = Path(args.source), Path(args.work)
    if args.build and not (src / "store.zarr").exists():
        from benchmarks.eval_embeddings import run_stages

        seed, n = (int(v) for v in args.build.split(","))
        src.mkdir(parents=True, exist_ok=True)
        run_stages(src / "corpus", src / "store.zarr", None, n, seed, 64, None)
    if not (work / "store.zarr").exists():
        shutil.copytree(src / "store.zarr", work / "store.zarr")
    store = str(work / "store.zarr")
    root = open_store(store, "r+")
    model = store_model(root, None)
    cfg = occlusion_config({"n_cases": args.cases, "how": "part", "fill": "noise", "complete": False, "losses": [],
                            "detect": {"method": "evidence"}})
    setup_occlusion(root, store, None, model, cfg, model_hash(model), log=log)
    ctx = C._context(root, store, None, model, "cpu", "float32")
    inpaint = load_inpaint_pipeline(TOY_INPAINT_MODEL)
    inpaint.set_progress_bar_config(disable=True)
    rcfg = RepaintConfig()
    k1, size = int(root["parts/prevalence"].shape[0]), ctx.size
    data: dict = {}
    train = training_images(root)
    chosen = sorted(int(i) for i in np.random.default_rng(0).permutation(train)[:32])   # the stage's calibration set
    rows, i2i = [], []
    for i in chosen:
        image = prepare_images(load_rgb(ctx.records[ctx.names[i]].path)[None], size)[0]
        labels = np.asarray(root["parts/labels"][i])
        rows.append(features(image, labels, inpaint, rcfg, k1, i, size))
        i2i.append(__import__("diffparts.occlusion.calibrate", fromlist=["x"]).image_evidence(
            "img2img", image, labels, k1, ctx.pipelines, cfg.detect, i)[0])
    data["train"], data["train_i2i"] = np.stack(rows), np.stack(i2i)
    log("training images done")
    for how in ("part", "background"):
        ctx.config = dataclasses.replace(cfg, how=how)
        for fill in FILLS:
            feats, z, truth, grey = [], [], [], []
            for c in sorted(ctx.plan):
                case = {**ctx.plan[c], "fill": fill}
                prep = C._prepare(ctx, case)
                feats.append(features(prep["occluded"], prep["detection"].assigned, inpaint, rcfg, k1, case["seed"],
                                      size))
                z.append(prep["detection"].scores)
                t = np.zeros(k1, bool)
                t[list(prep["truth"])] = True
                truth.append(t)
                grey.append(hidden_greyish(prep["image"], prep["mask"]))
            data.update({f"{how}-{fill}-f": np.stack(feats), f"{how}-{fill}-z": np.stack(z),
                         f"{how}-{fill}-t": np.stack(truth), f"{how}-{fill}-g": np.array(grey)})
            np.savez(args.out, **data)
            log(f"{how}-{fill} done")
    return data


def zscore(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(n, category) robust z against (m, category) training values; 0 where NaN."""
    out = np.zeros(values.shape, np.float64)
    for k in range(1, values.shape[1]):
        ref = train[:, k][np.isfinite(train[:, k])]
        if ref.size:
            med = np.median(ref)
            spread = max(1.4826 * np.median(np.abs(ref - med)), 1e-3)
            out[:, k] = np.where(np.isfinite(values[:, k]), (values[:, k] - med) / spread, 0.0)
    return out


def loo_z(train: np.ndarray) -> np.ndarray:
    return np.stack([zscore(train[i:i + 1], np.delete(train, i, 0))[0] for i in range(len(train))])


STATS = {
    "col": lambda f: f[..., 0], "tex": lambda f: f[..., 1], "both": lambda f: f[..., 0] + f[..., 1],
    "col-sp": lambda f: f[..., 0] - f[..., 2], "col-.5sp": lambda f: f[..., 0] - 0.5 * f[..., 2],
    "both-sp": lambda f: f[..., 0] + f[..., 1] - f[..., 2] - f[..., 3],
    "both-.5sp": lambda f: f[..., 0] + f[..., 1] - 0.5 * (f[..., 2] + f[..., 3]),
    "tex-sp": lambda f: f[..., 1] - f[..., 3], "logtex": lambda f: np.log(f[..., 1]),
    "mcol": lambda f: f[..., 4], "mtex": lambda f: f[..., 5], "-mtex": lambda f: -f[..., 5],
    "|mtex|": lambda f: np.abs(f[..., 5]),
}


def report(d) -> list[dict]:
    """One row per statistic (and the img2img detector, and combinations)."""
    from diffparts.metrics.occlusion import roc_auc

    i2i_train = d["train_i2i"]

    def scorer(fn=None, two=False, with_i2i=False):
        def z(key):
            if key == "train":                                       # leave-one-out maxima of training images
                parts = []
                if fn is not None:
                    a = loo_z(fn(d["train"]))
                    parts.append(np.abs(a) if two else a)
                if with_i2i:
                    parts.append(loo_z(i2i_train))
                return np.max(parts, 0)[:, 1:].max(1)
            parts = []
            if fn is not None:
                a = zscore(fn(d[key + "-f"]), fn(d["train"]))
                parts.append(np.abs(a) if two else a)
            if with_i2i:
                parts.append(np.nan_to_num(d[key + "-z"]))
            return np.max(parts, 0)
        return z

    candidates = {name: scorer(fn) for name, fn in STATS.items()}
    candidates.update({"2s mtex": scorer(STATS["mtex"], True), "2s tex": scorer(STATS["tex"], True),
                       "2s col": scorer(STATS["col"], True), "img2img": scorer(None, with_i2i=True)})
    candidates.update({f"i2i+{n}": scorer(STATS[n], with_i2i=True) for n in ("tex", "logtex", "mtex", "-mtex", "both")})
    rows = []
    for name, z in candidates.items():
        threshold = float(np.quantile(z("train"), 0.9))
        row = {"statistic": name, "family_threshold": round(threshold, 3)}
        tp = fp = fn_ = 0
        for fill in FILLS:
            key = f"part-{fill}"
            if key + "-f" not in d.files:
                continue
            s, t, plain = z(key), d[key + "-t"], ~d[key + "-g"]
            row[f"auc_{fill}"] = round(float(roc_auc(s[:, 1:], t[:, 1:])), 3)
            row[f"auc_{fill}_not_greyish"] = round(float(roc_auc(s[plain, 1:], t[plain, 1:])), 3)
            pred = s[:, 1:] >= threshold
            tp += int((pred & t[:, 1:]).sum()); fp += int((pred & ~t[:, 1:]).sum()); fn_ += int((~pred & t[:, 1:]).sum())
            bg = f"background-{fill}"
            if bg + "-f" in d.files:
                row[f"false_alarms_{fill}"] = round(float((z(bg)[:, 1:].max(1) >= threshold).mean()), 3)
        row["f1_part"] = round(2 * tp / max(2 * tp + fp + fn_, 1), 3)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="runs/occ-val-src")
    ap.add_argument("--build", default=None, metavar="SEED,N")
    ap.add_argument("--work", default="runs/x-val")
    ap.add_argument("--cases", type=int, default=32)
    ap.add_argument("--out", default="runs/x-val.npz", help="the collected statistics (npz)")
    ap.add_argument("--print-only", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if not args.print_only:
        collect(args)
    print(json.dumps(report(np.load(args.out)), indent=1))


if __name__ == "__main__":
    main()
