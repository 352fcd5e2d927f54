"""``diffparts occlude`` (alias ``occlusion``): hide parts, detect them, inpaint them back (docs/design.md §5.7 "Occlusion")."""

from __future__ import annotations

import argparse
import json


def _names(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one name, e.g. head,wing")
    return values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "occlude", aliases=["occlusion"],
        help="occlude held-out images, detect the missing part categories, inpaint them with the part tokens",
        description=(
            "Run the assess-occlusion flow on a store after the parts and embeddings stages. Each case hides "
            "something in a held-out image (embeddings/held_out): a ground-truth part (--how part, needs the "
            "corpus's part masks; --how cover: under a leaf-shaped occluder), a discovered category (--how "
            "category) or a random box over the object (--how box), filled with flat grey, seeded noise, a "
            "background patch of another image or a leaf or branch (--fill). The "
            "occluded image is segmented and assigned to the store's fitted categories (no refit) and the "
            "categories missing against the dataset's prevalence and typical sizes are ranked. The hidden "
            "region (dilated to whole latent cells) is inpainted with StableDiffusionInpaintPipeline from "
            "the same seed for every variant: empty prompt, class prompt, the image's caption, and per loss "
            "the tokens of the detected and of the truly hidden categories; the original is pasted back "
            "outside the hidden pixels. Measures: detection precision/recall/F1 and ROC AUC; per variant the "
            "IoU of the restored category with the hidden part's true mask, the share of hidden pixels "
            "assigned it, PSNR and SSIM in the hidden region. Writes occlusion/ in the store and "
            "<store>.occlusion/grid.png; finished cases are skipped on a re-run. Prints JSON; exit status 1 "
            "if a case failed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="the Zarr store (after extract, segment, parts, embed)")
    parser.add_argument("--model", default=None,
                        help="hub id or diffusers folder; default: the model the store was extracted with")
    parser.add_argument("--corpus", default=None, help="corpus folder; default: the store manifest's")
    parser.add_argument("--cases", type=int, default=50, help="number of occluded cases (held-out images, cycled)")
    parser.add_argument("--how", default="part",
                        help="what to hide: part (a ground-truth part, its own outline), cover (a ground-truth "
                             "part under an occluder with a leaf's outline, reaching beyond the part), category (a "
                             "discovered one), box (a random box), or background (a part's shape moved onto the "
                             "background: a control where nothing is hidden, so every alarm is false)")
    parser.add_argument("--hide", type=_names, default=None,
                        help="comma-separated parts (names such as head,wing or ids; categories for --how "
                             "category) hidden in every case; default: one part per case, seeded")
    parser.add_argument("--fill", default="mix",
                        help="what replaces the hidden pixels: grey, noise, patch (texture cut from another "
                             "image's background), object (a leaf or a branch in natural colours), or mix (one "
                             "of the four per case, in a seeded order)")
    parser.add_argument("--detect", default=None, dest="detect_method",
                        help="detection method: appearance (does each category's region look like bird at all "
                             "to a small per-pixel classifier trained on the store's training images, and is it grainy "
                             "(noise, speckle) where no part is; calibrated on training images; no diffusion model; the "
                             "default), repaint (each region repainted from its context by the inpainting model, "
                             "its texture compared with the input, calibrated), evidence (img2img imagine and "
                             "compare, calibrated), combined (the larger of those two scores), colour (each region's "
                             "pixels against that category's colours on the training birds whose other parts look "
                             "like this one's, calibrated; no model) or area (prevalence x typical size, the earlier "
                             "baseline)")
    parser.add_argument("--detect-only", action="store_true",
                        help="detection only: no inpainting (the table keeps the original and occluded rows)")
    parser.add_argument("--losses", type=_names, default=None,
                        help="token losses to complete with (default: every loss with files beside the store)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan, the fills and the inpainting noise")
    parser.add_argument("--min-fraction", type=float, default=None,
                        help="a category counts as hidden from this share of its pixels covered (default 0.5)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="missing-score threshold of the detection (default: the calibration's family-wise one, "
                             "about 10 %% false alarms on complete training images; the area rule's 0.1)")
    parser.add_argument("--steps", type=int, default=None, help="inpainting steps (default 25)")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 7)")
    parser.add_argument("--inpaint-model", default="default", metavar="ID_OR_PATH",
                        help="a 9-channel inpainting pipeline (e.g. an SD 1.5 / 2 inpainting folder or hub id) to "
                             "complete with; 'default': the toy inpainting checkpoint for the embedded model, "
                             "latent blending otherwise; 'blend': latent blending in the text-to-image UNet")
    parser.add_argument("--batch-size", type=int, default=8, help="cases per task")
    parser.add_argument("--device", default="cpu", help="torch device (cuda for a GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model dtype")
    parser.add_argument("--max-workers", type=int, default=1, help="threads of the default task runner")
    parser.add_argument("--dask-address", default=None, help="run the tasks on this Dask scheduler")
    parser.add_argument("--dask-workers", type=int, default=None, help="start a local Dask cluster of N workers")
    parser.set_defaults(handler=run_occlude)


def run_occlude(args) -> int:
    from diffparts.occlusion.stage import occlusion_config

    config: dict = {}
    if args.min_fraction is not None:
        config["min_fraction"] = args.min_fraction
    detect = {k: v for k, v in (("threshold", args.threshold), ("method", args.detect_method)) if v is not None}
    if detect:
        config["detect"] = detect
    if args.detect_only:
        config["complete"] = False
    # Bad names (fill, how, method, inpaint model) are refused here in one line, before a flow starts.
    occlusion_config({**config, "fill": args.fill, "how": args.how})
    from diffparts.occlusion.complete import check_inpaint_model

    check_inpaint_model(args.inpaint_model)

    from flows.occlusion import assess_occlusion

    completion = {k: v for k, v in (("steps", args.steps), ("guidance_scale", args.guidance),
                                    ("inpaint_model", args.inpaint_model)) if v is not None}
    if completion:
        config["completion"] = completion
    result = assess_occlusion(
        args.store, model=args.model, corpus=args.corpus, n_cases=args.cases, how=args.how, hide=args.hide,
        fill=args.fill, losses=args.losses, seed=args.seed, config=config, batch_size=args.batch_size,
        max_workers=args.max_workers, dask_address=args.dask_address, dask_workers=args.dask_workers,
        device=args.device, dtype=args.dtype)
    print(json.dumps(result, indent=1, default=str))
    return 1 if result["failed"] else 0
