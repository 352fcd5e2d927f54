"""The occlusion detector's cost per case beside one inpainting completion (issue 18); prints JSON.

On a store after the parts stage (default runs/occ-eval-src, as ``eval_occlusion.py`` uses) and
its model, for ``--cases`` held-out birds with a part hidden (noise fill), in the same process
and on the same images, each timed ``--repeat`` times (median):

- ``detect_repaint``: the repaint detector (assignment + each category's region repainted from
  its context by the inpainting checkpoint + scores);
- ``repaint``: the repaintings alone (every category's mask x 2 seeds in one batch, 10 DDIM
  steps, guidance 7);
- ``detect_evidence``: the img2img evidence detector (assignment + imaginations + scores);
- ``imagine``: the imaginations alone (img2img, 2 seeds, 6 of 10 DDIM steps, guidance 7);
- ``detect_combined``: both kinds of evidence, the larger calibrated score;
- ``detect_appearance``: the appearance detector (the stage's default: assignment + the
  cross-fitted classifiers' reading + local contrast + scores; no diffusion model), and
  ``appearance_training_seconds``: its classifiers' training, once per store (not per case);
- ``assign``: the assignment alone (capture, segmentation, descriptors, nearest centre);
- ``detect_area``: the earlier area rule (the assignment and a count);
- ``complete_inpaint``: one completion with the inpainting checkpoint (the stage's default for
  the embedded model; 25 DDIM steps, guidance 7), the stage's completion of one variant;
- ``complete_blend``: one completion by latent blending in the text-to-image UNet (the baseline).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_detect.py --source runs/occ-eval-src --cases 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="runs/occ-eval-src", help="folder with store.zarr after the parts stage")
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--calibration-images", type=int, default=8, help="training images for the calibration")
    args = ap.parse_args()

    import numpy as np
    import torch

    from diffparts.corpus import load_mask, load_rgb
    from diffparts.inversion.stage import store_model
    from diffparts.model.extract import prepare_images
    from diffparts.model.load import load_pipeline
    from diffparts.occlusion.calibrate import calibrate_store, detector_pipelines, image_evidence
    from diffparts.occlusion.complete import CompletionConfig, complete, inpaint_pipeline, resolve_inpaint_model
    from diffparts.occlusion.detect import DetectConfig, detect_missing, store_expectation
    from diffparts.occlusion.imagine import img2img_pipeline, imagine
    from diffparts.occlusion.occluders import label_mask, occlude, resize_labels
    from diffparts.occlusion.split import held_out_images
    from diffparts.occlusion.stage import _records
    from diffparts.parts.assign import assign_image, fitted_parts
    from diffparts.store import done_mask, image_table, open_store

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    store = str(Path(args.source) / "store.zarr")
    root = open_store(store, "r")
    model = store_model(root, None)
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    i2i, blend = img2img_pipeline(pipe), inpaint_pipeline(pipe)
    inpaint = inpaint_pipeline(pipe, resolve_inpaint_model("default", model))
    inpaint.set_progress_bar_config(disable=True)
    pipelines = {"img2img": i2i, "repaint": inpaint}
    size = int(root["attention"].attrs["image_size"])
    records, _ = _records(root, None)
    names = [r["name"] for r in image_table(root)]
    held, _ = held_out_images(root, records, names)
    configs = {m: DetectConfig(method=m, calibration_images=args.calibration_images)
               for m in ("repaint", "evidence", "combined", "appearance")}

    class _Root:                                                # the source read-only, the split beside it
        def __init__(self, root, held):
            self._root, self._held = root, held

        def __contains__(self, key):
            return key == "occlusion/held_out" or key in self._root

        def __getitem__(self, key):
            return self._held if key == "occlusion/held_out" else self._root[key]

    view = _Root(root, held)

    def load(i: int) -> np.ndarray:
        return prepare_images(load_rgb(records[names[i]].path)[None], size)[0]

    calibration = calibrate_store(view, load, pipelines, configs["combined"])    # both kinds, one pass
    t0 = time.perf_counter()
    pipelines.update(detector_pipelines(configs["appearance"], pipe, None, view, load))    # trains the classifiers
    training = time.perf_counter() - t0
    app_calibration = calibrate_store(view, load, pipelines, configs["appearance"])
    expectation = store_expectation(view)
    fitted = fitted_parts(root)
    cases = [int(i) for i in np.flatnonzero(done_mask(root, "parts") & held)][: args.cases]
    timings = {k: [] for k in ("detect_repaint", "repaint", "detect_evidence", "imagine", "detect_combined",
                               "detect_appearance", "assign", "detect_area", "complete_inpaint", "complete_blend")}
    for i in cases:
        image = load(i)
        gt = resize_labels(load_mask(records[names[i]].part_mask_path), (size, size))
        part = int(np.bincount(gt[gt > 0]).argmax())
        occluded, record = occlude(image, label_mask(gt, [part], (size, size)), "noise", seed=i)
        labels = assign_image(fitted, pipe, occluded)
        k1 = len(calibration["repaint"].values)

        def detector(method):
            cal = app_calibration if method == "appearance" else calibration
            return lambda: detect_missing(fitted, pipe, occluded, None, configs[method], pipelines=pipelines,
                                          calibration=cal, seed=i)
        runs = {"detect_repaint": detector("repaint"),
                "repaint": lambda: image_evidence("repaint", occluded, labels, k1, pipelines, configs["repaint"], i),
                "detect_evidence": detector("evidence"),
                "imagine": lambda: imagine(i2i, occluded, configs["evidence"].imagine, i),
                "detect_combined": detector("combined"),
                "detect_appearance": detector("appearance"),
                "assign": lambda: assign_image(fitted, pipe, occluded),
                "detect_area": lambda: detect_missing(fitted, pipe, occluded, expectation, DetectConfig(method="area")),
                "complete_inpaint": lambda: complete(inpaint, occluded, record.mask, "a photo of a bird", i,
                                                     CompletionConfig()),
                "complete_blend": lambda: complete(blend, occluded, record.mask, "a photo of a bird", i,
                                                   CompletionConfig())}
        for name, fn in runs.items():
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - t0)
    result = {"source": args.source, "model": model, "cases": len(cases), "repeat": args.repeat,
              "threads": torch.get_num_threads(), "image_size": size,
              "appearance_training_seconds": round(training, 2),
              "seconds_median": {k: round(statistics.median(v), 4) for k, v in timings.items()},
              "seconds_min": {k: round(min(v), 4) for k, v in timings.items()}}
    med = result["seconds_median"]
    for det in ("detect_repaint", "detect_evidence", "detect_combined", "detect_appearance"):
        result[f"{det}_vs_one_completion"] = round(med[det] / med["complete_inpaint"], 3)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
