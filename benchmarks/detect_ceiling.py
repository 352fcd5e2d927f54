"""What the appearance detector's evidence carries on a corpus with ground truth, and what a
supervised reader's does; prints JSON (and ``--markdown`` a table on stderr).

Given an ``eval_occlusion.py --detect-only --method appearance`` work folder, for every
``part-<fill>/store.zarr`` and ``cover-<fill>/store.zarr`` run (a part hidden under its own
outline, or under a leaf's: ``--how cover``; shown as ``cover / <fill>``), on the same cases:

- ``detector``: ROC AUC of the stored scores (``occlusion/scores``), as the stage's table;
- ``true_place``: the same two kinds of evidence (the classifiers' surprise, grain), with the
  run's own calibration and settings, judged over each category's region in the *unoccluded*
  image's map (``parts/labels``, what the parts stage assigned before anything was hidden)
  instead of the occluded image's assignment: a detector that knew exactly where each category
  lies. What it still misses is not in where it looks but in what the pixels say;
- ``true_place_hidden_only`` / ``true_place_others_only``: only the hidden categories' (or only
  the other categories') scores taken at the true place, the rest as detected: which side
  knowing the place helps;
- ``pixel_classifier``: per pixel, ROC AUC of the detector's p(background) (the mean of its
  fold classifiers, as a case is read) on the hidden against the visible pixels of the bird
  (ground truth: the corpus's part masks); a region's mean separates better than single pixels
  (noise averages out), so this is not a bound, but it tells which fills the pixels give away;
- ``pixel_judge``: the same for the part judge's p(background) (``data/models/diffparts-part-judge``:
  supervised, trained on renders with their true masks, with grey, noise, background-patch and
  colour-field occluders pasted on as background; never a leaf or a branch).

The classifiers are trained again (the stage keeps no weights; the same seed, images and
settings, so the same classifiers up to the platform's floating point). Nothing is written.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detect_ceiling.py runs/occ-eval-lost-128 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pixel_auc(hidden: list, visible: list) -> float:
    """ROC AUC of pooled per-pixel values: hidden pixels positive, visible ones negative."""
    import numpy as np

    from diffparts.metrics.occlusion import roc_auc

    h, v = np.concatenate(hidden), np.concatenate(visible)
    return float(roc_auc(np.r_[h, v], np.r_[np.ones(len(h), bool), np.zeros(len(v), bool)]))


def judge_background(judge, images) -> "np.ndarray":
    """(image, y, x) float32 p(background) of the judge at the images' own size (bilinear)."""
    import torch

    p = torch.softmax(judge.logits(images), 1)[:, :1]
    if tuple(p.shape[-2:]) != tuple(images.shape[1:3]):
        p = torch.nn.functional.interpolate(p, size=tuple(images.shape[1:3]), mode="bilinear", align_corners=False)
    return p[:, 0].numpy()


def run_images(root, corpus=None) -> tuple[dict, list, Callable]:
    """(the corpus records, the store's image table, load(i): store image i as extraction fed it)
    of an eval_occlusion run's store; corpus: its folder where the store's manifest names none."""
    from diffparts.occlusion.stage import _records, load_model_image
    from diffparts.store import image_table

    records, _ = _records(root, corpus)
    table = image_table(root)
    size = int(root["attention"].attrs["image_size"])
    return records, table, lambda i: load_model_image(records[table[i]["name"]].path, size)


def run_ceiling(store: Path, judge) -> dict:
    import numpy as np
    import zarr

    from diffparts.corpus import load_mask
    from diffparts.metrics.occlusion import roc_auc
    from diffparts.occlusion.appearance import appearance_reference
    from diffparts.occlusion.calibrate import image_evidence
    from diffparts.occlusion.detect import rank_evidence
    from diffparts.occlusion.occluders import resize_labels
    from diffparts.occlusion.stage import _stored_calibration, occlusion_config

    root = zarr.open_group(str(store), mode="r")
    g = root["occlusion"]
    config = occlusion_config(dict(g.attrs["config"]))
    detect = config.detect
    if detect.method != "appearance":
        raise SystemExit(f"{store}: detector {detect.method!r}; this reads the appearance detector's evidence")
    calibration = _stored_calibration(g.attrs)
    records, table, load = run_images(root)
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    unmasked = sorted({table[int(g["cases"][int(c)])]["name"] for c in done
                       if records[table[int(g["cases"][int(c)])]["name"]].part_mask_path is None})
    if unmasked:
        raise SystemExit(f"{store}: no part mask (ground truth) for {len(unmasked)} case image(s), e.g. "
                         f"{unmasked[0]!r}: this needs a corpus with part masks (the synthetic birds)")
    reference = appearance_reference(root, load, detect.appearance, config.seed, log=say)
    say(f"{store.parent.name}: reading its cases")
    pipelines = {"appearance": reference, "grain": None}
    k1 = reference.n_categories
    images = np.asarray(g["images"][:, 1])[done]
    judged = judge_background(judge, images)
    scores, place, hidden = [], [], []
    pix = {"classifier": ([], []), "judge": ([], [])}
    for n, c in enumerate(done):
        result = json.loads(str(g["results"][int(c)]))
        image, index = images[n], int(g["cases"][int(c)])
        truth = np.zeros(k1, bool)
        truth[list(result["truth"])] = True
        hidden.append(truth)
        scores.append(np.asarray(g["scores"][int(c)]))
        labels = np.asarray(root["parts/labels"][index])                  # the unoccluded image's map
        p = reference.probabilities(image)
        evidence = {k: image_evidence(k, image, labels, k1, pipelines, detect, probabilities=p) for k in detect.kinds}
        place.append(rank_evidence(labels, evidence, calibration, detect).scores)
        bird = resize_labels(load_mask(records[table[index]["name"]].part_mask_path), image.shape[:2]) > 0
        mask = np.asarray(g["masks"][int(c)], bool)
        for name, bg in (("classifier", p[0]), ("judge", judged[n])):
            pix[name][0].append(bg[mask & bird])
            pix[name][1].append(bg[~mask & bird])
    scores, place, hidden = np.stack(scores)[:, 1:], np.stack(place)[:, 1:], np.stack(hidden)[:, 1:]
    return {"run": store.parent.name, "how": config.how, "fill": config.fill, "cases": int(len(done)),
            "detector": float(roc_auc(scores, hidden)), "true_place": float(roc_auc(place, hidden)),
            "true_place_hidden_only": float(roc_auc(np.where(hidden, place, scores), hidden)),
            "true_place_others_only": float(roc_auc(np.where(hidden, scores, place), hidden)),
            "pixel_classifier": pixel_auc(*pix["classifier"]), "pixel_judge": pixel_auc(*pix["judge"])}


def markdown(rows: list[dict]) -> str:
    out = ["| fill | cases | detector | at the true place | ... hidden category only | ... other categories only "
           "| pixels: detector's classifier | pixels: judge |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shown = r["fill"] if r.get("how", "part") == "part" else f"{r['how']} / {r['fill']}"
        out.append(f"| {shown} | {r['cases']} | {r['detector']:.3f} | {r['true_place']:.3f} | "
                   f"{r['true_place_hidden_only']:.3f} | {r['true_place_others_only']:.3f} | "
                   f"{r['pixel_classifier']:.3f} | {r['pixel_judge']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", help="an eval_occlusion.py --work folder (part-<fill> and cover-<fill> runs)")
    ap.add_argument("--judge", default=None, help="part judge safetensors (default: the committed one)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (stderr)")
    args = ap.parse_args()

    import torch

    from diffparts.judge.model import PartJudge

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = Path(args.work)
    stores = sorted(p / "store.zarr" for how in ("part", "cover") for p in work.glob(f"{how}-*")
                    if (p / "store.zarr").is_dir())
    if not stores:
        raise SystemExit(f"no part-<fill> or cover-<fill> store.zarr run in {work}")
    judge = PartJudge.load(args.judge)
    rows = [run_ceiling(s, judge) for s in stores]
    print(json.dumps({"work": str(work), "rows": rows}, indent=1))
    if args.markdown:
        print(markdown(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
