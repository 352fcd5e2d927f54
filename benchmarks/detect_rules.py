"""The appearance detector's stored cases scored again under other rules for where each category
is looked for and how its region's pixels are summed up; prints JSON (and ``--markdown`` a table
on stderr).

Given an ``eval_occlusion.py --detect-only --method appearance`` work folder, the classifiers are
trained once (the run's seed and settings: the same classifiers up to the platform's floating
point), and for every rule named on the command line the detector is **calibrated again** on the
store's training images with the rule in place (the stage's own ``calibrate_store``: a rule
changes what complete birds score too) and every stored case is scored again from its occluded
image and its stored plain assignment (``occlusion/labels``, variant 1). Nothing else runs again
(no capture, no segmentation): a rule costs seconds where a stage run costs minutes, so rules
can be tried on the validation birds in one process. Rule ``default`` must give the stored
scores back (``reproduced``: the largest difference, 0 when nothing has drifted).

Rules (``name`` or ``name:a,b``):

- ``default``: the stage's (the assignment, lost categories at their usual places);
- ``true``: each category's region in the **unoccluded** image's map (``occlusion/labels``,
  variant 0), not a detector (``benchmarks/detect_ceiling.py``'s "at the true place");
- ``shrunk:R,B,O``: a category with fewer than R times the pixels the layout prior expects of it
  in this frame is looked for like a lost one, on background pixels with p(background) below B
  where the categories together usually hold at least O (defaults 0.5, 0.9, 0.05);
- ``implausible:T,R``: an object pixel whose assigned category holds under T of the training
  maps at that place goes to the likeliest category there, when that one has under R times its
  expected pixels (defaults 0.05, 0.5; R 100: always);
- ``erode:N``: each region less its own border, N pixels deep, for both kinds of evidence (a
  region that would keep fewer than ``min_pixels`` is kept whole);
- ``erodeapp:N``: the same for the classifier's evidence only (grain keeps whole regions);
- ``pbg``: a region's mean p(background) instead of its mean surprise ``-log(1 - p)``;
- ``quantile:Q``: the region's Q quantile of the surprise instead of its mean;
- ``top:T``: the mean of the region's highest T share of the surprise.

A ``+median`` suffix takes off each category's score the median of the image's other
categories' (those with a region): an image whose every region looks a little unusual (a species
the classifiers read as background-ish) does not count against its categories. Its false alarms
are not reported (the family-wise threshold would need recalibrating with it).

Per rule and run: the ROC AUC (part and cover runs) and its paired difference from ``default``
with a 95 % bootstrap interval over the cases (``metrics.occlusion.roc_auc_difference``), or the
false-alarm rate at the family-wise threshold (background runs). With ``default``, where the
assignment puts the hidden categories' occluded pixels (``placement``: in the category's own
region, the background, or another category's; also a line on stderr with ``--markdown``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/detect_rules.py runs/occ-v128-lost-128 default erode:1 default+median --markdown
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

REGION_RULES = {"default": (), "true": (), "shrunk": (0.5, 0.9, 0.05), "implausible": (0.05, 0.5), "erode": (1,)}
STATISTIC_RULES = {"erodeapp": (1,), "pbg": (), "quantile": (0.75,), "top": (0.5,)}
POSTS = ("", "median")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_rule(spec: str) -> tuple[str, tuple[float, ...], str]:
    """(name, arguments with defaults filled in, post) of ``name[:a,b][+median]``; SystemExit
    naming the rule when it is unknown or its arguments are not numbers."""
    body, _, post = spec.partition("+")
    name, _, args = body.partition(":")
    defaults = {**REGION_RULES, **STATISTIC_RULES}.get(name)
    if defaults is None:
        raise SystemExit(f"unknown rule {spec!r}: {', '.join(list(REGION_RULES) + list(STATISTIC_RULES))}")
    if post not in POSTS:
        raise SystemExit(f"unknown rule suffix {'+' + post!r} in {spec!r}: only +median")
    try:
        given = tuple(float(a) for a in args.split(",")) if args else ()
    except ValueError:
        raise SystemExit(f"rule {spec!r}: its arguments must be numbers") from None
    if len(given) > len(defaults):
        raise SystemExit(f"rule {spec!r}: {name} takes at most {len(defaults)} argument(s)")
    return name, given + tuple(defaults[len(given):]), post


def erode_regions(labels: np.ndarray, n_categories: int, depth: int, min_pixels: int = 4) -> np.ndarray:
    """``labels`` with each category's region less its own border, ``depth`` pixels deep (the
    pixels taken off: -1, no category); a region that would keep fewer than ``min_pixels``
    pixels is kept whole. Background (0) and -1 pixels are unchanged."""
    from scipy.ndimage import binary_erosion

    labels = np.asarray(labels)
    out = labels.copy()
    for k in range(1, n_categories):
        region = labels == k
        if not region.any():
            continue
        kept = binary_erosion(region, iterations=int(depth), border_value=1)
        if int(kept.sum()) >= min_pixels:
            out[region & ~kept] = -1
    return out


def relocated(name: str, args: tuple, labels: np.ndarray, p_background: np.ndarray, reference,
              min_pixels: int = 4) -> np.ndarray:
    """The regions of region rule ``name`` (not ``default`` or ``true``) for a (ly, lx)
    assignment ``labels`` whose p(background) at the map's size is ``p_background``: the stage's
    lost categories first (``layout.lost_places``), then the rule."""
    from diffparts.occlusion.layout import lost_places, place_shares

    config = reference.config
    base = lost_places(labels, p_background, reference.layout, config.lost_background, config.lost_share, min_pixels)
    if name == "erode":
        return erode_regions(base, reference.n_categories, int(args[0]), min_pixels)
    shares = place_shares(reference.layout, labels)                              # category y x
    k1 = shares.shape[0]
    counts = np.bincount(base[base > 0].ravel(), minlength=k1)[:k1].astype(float)
    likeliest = 1 + np.argmax(shares[1:], 0)
    if name == "shrunk":
        ratio, max_background, min_object = args
        short = counts < np.maximum(min_pixels, ratio * shares.sum((1, 2)))
        short[0] = False
        take = (base == 0) & (p_background < max_background) & (shares[1:].sum(0) >= min_object) & short[likeliest]
        return np.where(take, likeliest, base).astype(base.dtype)
    if name == "implausible":
        below, ratio = args
        short = counts < np.maximum(min_pixels, ratio * shares.sum((1, 2)))
        short[0] = False
        own = np.take_along_axis(shares, np.clip(base, 0, k1 - 1)[None].astype(np.int64), 0)[0]
        take = (base > 0) & (own < below) & short[likeliest] & (likeliest != base)
        return np.where(take, likeliest, base).astype(base.dtype)
    raise ValueError(f"{name!r} is not a region rule")


def summarised(name: str, args: tuple, surprise: np.ndarray, p_background: np.ndarray, labels: np.ndarray,
               n_categories: int, min_pixels: int = 4) -> np.ndarray:
    """(category,) the classifier's evidence of statistic rule ``name`` (not ``erodeapp``) over
    each region of the (ly, lx) ``labels``, from the per-pixel surprise and p(background) at the
    map's size; NaN for background and a region under ``min_pixels`` pixels."""
    out = np.full(n_categories, np.nan, np.float32)
    for k in range(1, n_categories):
        region = labels == k
        if int(region.sum()) < min_pixels:
            continue
        if name == "pbg":
            out[k] = float(p_background[region].mean())
        elif name == "quantile":
            out[k] = float(np.quantile(surprise[region], args[0]))
        elif name == "top":
            values = np.sort(surprise[region])[::-1]
            out[k] = float(values[: max(1, int(round(args[0] * len(values))))].mean())
        else:
            raise ValueError(f"{name!r} is not a statistic rule")
    return out


def less_median(scores: np.ndarray, labels: np.ndarray, min_pixels: int = 4) -> np.ndarray:
    """(category,) ``scores`` less, for each category, the median score of the image's other
    categories with at least ``min_pixels`` pixels in ``labels`` (unchanged where it has none)."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    counts = np.bincount(labels[labels > 0].ravel(), minlength=len(scores))[:len(scores)]
    present = [j for j in range(1, len(scores)) if counts[j] >= min_pixels]
    out = scores.copy()
    for k in range(1, len(scores)):
        others = [scores[j] for j in present if j != k]
        if others:
            out[k] = scores[k] - float(np.median(others))
    return out


@contextlib.contextmanager
def rule_in_place(name: str, args: tuple):
    """The library's appearance regions or evidence replaced by the rule's while in the block
    (``calibrate_store`` and ``detector_regions`` import them from the module at each call)."""
    import diffparts.occlusion.appearance as appearance
    from diffparts.occlusion.evidence import _resized
    from diffparts.occlusion.occluders import resize_labels

    stage_evidence = appearance.appearance_evidence
    if name in ("default", "true"):
        yield
        return
    if name in REGION_RULES:
        def regions(image, labels, reference, exclude=None, min_pixels=4):
            labels = np.asarray(labels)
            p = reference.probabilities(image, exclude)
            return relocated(name, args, labels, _resized(p[0], labels.shape), reference, min_pixels), p

        with mock.patch.object(appearance, "appearance_regions", regions):
            yield
        return

    def evidence(image, labels, n_categories, reference, exclude=None, min_pixels=4, probabilities=None):
        labels = np.asarray(labels)
        p = reference.probabilities(image, exclude) if probabilities is None else probabilities
        values, dmap = stage_evidence(image, labels, n_categories, reference, exclude, min_pixels, p)
        if name == "erodeapp":
            values, _ = stage_evidence(image, erode_regions(labels, n_categories, int(args[0]), min_pixels),
                                       n_categories, reference, exclude, min_pixels, p)
            return values, dmap
        pix = resize_labels(labels, image.shape[:2]) > 0
        surprise = _resized(np.where(pix, -np.log(np.maximum(1.0 - p[0], 1e-6)), 0.0), labels.shape)
        background = _resized(np.where(pix, p[0], 0.0), labels.shape)
        return summarised(name, args, surprise, background, labels, n_categories, min_pixels), dmap

    with mock.patch.object(appearance, "appearance_evidence", evidence):
        yield


def placement(assigned: np.ndarray, unoccluded: np.ndarray, masks: np.ndarray, hidden: np.ndarray) -> dict | None:
    """Where the assignment puts the occluded pixels of the hidden categories: over the cases,
    the share of the pixels under each case's occluder ``masks`` (case, y, x) that the unoccluded
    map gives a hidden category k and the occluded image's assignment gives k itself ("own"),
    the background, or another category; None when no case hides one."""
    from diffparts.occlusion.occluders import resize_labels

    counts = np.zeros(3)
    for plain, truth_map, mask, truth in zip(assigned, unoccluded, masks, hidden):
        mask = resize_labels(np.asarray(mask, np.int16), plain.shape) > 0
        for k in np.flatnonzero(truth[1:]) + 1:
            at = plain[mask & (truth_map == k)]
            counts += [(at == k).sum(), (at == 0).sum(), ((at > 0) & (at != k)).sum()]
    if counts.sum() == 0:
        return None
    return dict(zip(("own", "background", "other"), (counts / counts.sum()).round(4).tolist()))


def read_runs(work: Path) -> dict:
    """{run name: (occluded images, plain assignments, unoccluded maps, stored scores, hidden,
    occluder masks)} of the done cases of every ``<how>-<fill>/store.zarr`` in ``work``; runs
    calibrated differently (from another source, seed or settings) are refused by name."""
    import zarr

    stores = sorted(p / "store.zarr" for p in work.iterdir() if (p / "store.zarr").is_dir())
    if not stores:
        raise SystemExit(f"no <how>-<fill>/store.zarr run in {work}")
    groups = {store: zarr.open_group(str(store), mode="r")["occlusion"] for store in stores}
    for store, g in groups.items():
        method = dict(g.attrs["config"]).get("detect", {}).get("method")
        if method != "appearance":
            raise SystemExit(f"{store}: detector {method!r}; these rules are the appearance detector's")
        if g.attrs.get("calibration") != groups[stores[0]].attrs.get("calibration"):   # one reference serves all
            raise SystemExit(f"{store} and {stores[0]} were calibrated differently (another source, seed or "
                             "detector settings): score them in separate folders")
    runs = {}
    for store, g in groups.items():
        done = np.flatnonzero(np.asarray(g["done"][:], bool))
        scores = np.asarray(g["scores"][:])[done]
        hidden = np.zeros(scores.shape, bool)
        for n, c in enumerate(done):
            hidden[n, list(json.loads(str(g["results"][int(c)]))["truth"])] = True
        labels = np.asarray(g["labels"][:])[done]
        runs[store.parent.name] = (np.asarray(g["images"][:, 1])[done], labels[:, 1], labels[:, 0], scores, hidden,
                                   np.asarray(g["masks"][:])[done])
    return runs


def score_rules(work: Path, specs: list[str], corpus: str | None = None) -> list[dict]:
    """The rows of the rules ``specs`` (``default`` first) on the runs of ``work``; corpus: the
    runs' corpus folder where their store's manifest names none."""
    import zarr

    from diffparts.metrics.occlusion import roc_auc, roc_auc_difference
    from diffparts.occlusion.appearance import appearance_reference
    from diffparts.occlusion.calibrate import calibrate_store, detector_regions, image_evidence
    from diffparts.occlusion.detect import rank_evidence
    from benchmarks.detect_ceiling import run_images
    from diffparts.occlusion.stage import occlusion_config

    parsed = [(spec, *parse_rule(spec)) for spec in specs]
    runs = read_runs(work)
    first = next(p / "store.zarr" for p in sorted(work.iterdir()) if p.name in runs)
    root = zarr.open_group(str(first), mode="r")
    config = occlusion_config(dict(root["occlusion"].attrs["config"]))
    detect = config.detect
    _, _, load = run_images(root, corpus)
    reference = appearance_reference(root, load, detect.appearance, config.seed, log=say)
    pipelines = {"appearance": reference, "grain": None}
    k1 = reference.n_categories
    baseline: dict[str, np.ndarray] = {}
    rows = []
    todo = [("default", "default", (), "")] + [p for p in parsed if p[0] != "default"]
    for spec, name, args, post in todo:
        with rule_in_place(name, args):
            calibration = calibrate_store(root, load, pipelines, detect, config.seed)
            row = {"rule": spec, "runs": {}}
            for run, (images, assigned, unoccluded, stored, hidden, masks) in runs.items():
                scores, alarms = [], []
                for image, assignment, truth_map in zip(images, assigned, unoccluded):
                    if name == "true":
                        labels, p = truth_map, None
                    else:
                        labels, p = detector_regions(image, assignment, pipelines, detect)
                    evidence = {k: image_evidence(k, image, labels, k1, pipelines, detect, probabilities=p)
                                for k in detect.kinds}
                    found = rank_evidence(labels, evidence, calibration, detect, assignment)
                    scores.append(less_median(found.scores, labels, detect.min_pixels) if post else found.scores)
                    alarms.append(bool(found.missing))
                scores = np.stack(scores).astype(np.float64)
                out = {"cases": len(scores)}
                if spec == "default":
                    out["reproduced"] = float(np.abs(scores - stored).max())
                    out["placement"] = placement(assigned, unoccluded, masks, hidden)
                if hidden[:, 1:].any():
                    out["auc"] = float(roc_auc(scores[:, 1:], hidden[:, 1:]))
                    if run in baseline:
                        d, lo, hi = roc_auc_difference(baseline[run][:, 1:], scores[:, 1:], hidden[:, 1:])
                        out["difference"] = [d, lo, hi]
                    else:
                        baseline[run] = scores
                else:
                    out["false_alarms"] = None if post else float(np.mean(alarms))
                row["runs"][run] = out
        aucs = [r["auc"] for r in row["runs"].values() if "auc" in r]
        row["mean_auc"] = float(np.mean(aucs)) if aucs else None
        say(f"{spec}: mean ROC AUC {row['mean_auc']:.3f}" if aucs else f"{spec}: done")
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    runs = sorted({run for r in rows for run in r["runs"]})
    parts = [run for run in runs if "auc" in rows[0]["runs"][run]]
    controls = [run for run in runs if run not in parts]
    head = ["rule"] + [f"ROC AUC {run}" for run in parts] + ["mean"] + [f"false alarms {run}" for run in controls]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        cells = [f"`{r['rule']}`"]
        for run in parts:
            x = r["runs"][run]
            d = x.get("difference")
            cells.append(f"{x['auc']:.3f}" + (f" ({d[0]:+.3f}, {d[1]:+.3f} to {d[2]:+.3f})" if d else ""))
        cells.append(f"{r['mean_auc']:.3f}")
        for run in controls:
            fa = r["runs"][run]["false_alarms"]
            cells.append("-" if fa is None else f"{100 * fa:.1f} %")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", help="an eval_occlusion.py --detect-only --method appearance --work folder")
    ap.add_argument("rules", nargs="+", help="rules to score (see above); default is always scored first, "
                    "the baseline of the differences")
    ap.add_argument("--corpus", default=None, help="the runs' corpus folder (default: the one their store names)")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (stderr)")
    args = ap.parse_args()

    import torch

    for spec in args.rules:
        parse_rule(spec)                            # a typo is refused before minutes of training
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rows = score_rules(Path(args.work), args.rules, args.corpus)
    print(json.dumps({"work": args.work, "rows": rows}, indent=1))
    if args.markdown:
        print(markdown(rows), file=sys.stderr)
        for run, out in rows[0]["runs"].items():
            if out.get("placement"):
                say(f"{run}: the hidden categories' occluded pixels the assignment puts in their own region "
                    f"{out['placement']['own']:.3f}, the background {out['placement']['background']:.3f}, "
                    f"another category's {out['placement']['other']:.3f}")


if __name__ == "__main__":
    main()
