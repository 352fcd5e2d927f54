"""The occlusion stage (docs/design.md §5.7 "Occlusion"): hide parts, detect what is missing, inpaint it back.

- ``occluders``: hide ground-truth parts, discovered categories or a random box, or move such a
  shape onto the background (the control); grey, noise, background-patch or object (leaf,
  branch) fills; :class:`OcclusionRecord` of exactly what was hidden;
- ``detect``: missing-part detection: where from the assignment, whether from evidence of
  absence (``imagine``: img2img imaginations and their disagreement with the input;
  ``repaint``: each category's region repainted from its context by the inpainting pipeline;
  ``colour``: a region's colours against its category's on birds like this one;
  ``appearance``: a small per-pixel classifier of each category's local look, cross-fitted;
  ``evidence``: per-category evidence, calibration, family-wise threshold, occlusion map;
  ``calibrate``: the calibration on a store's training images); the earlier area rule as a
  baseline;
- ``split``: which images are held out for the cases (a seeded share for a small corpus);
- ``complete``: inpainting with the part tokens, the mask dilated to latent cells, the
  original pasted back outside the hidden region;
- ``stage``: the cases over a store (``occlusion/`` group), the table and the picture grid.

Never imports Prefect; measures live in ``diffparts.metrics.occlusion``.
"""

from diffparts.occlusion.appearance import (AppearanceConfig, AppearanceReference, appearance_evidence,
                                            appearance_reference)
from diffparts.occlusion.colour import ColourConfig, ColourReference, colour_evidence, colour_reference
from diffparts.occlusion.complete import (CompletionConfig, complete, encode_prompts, inpaint_pipeline,
                                          latent_cell_mask, token_prompt)
from diffparts.occlusion.detect import (DetectConfig, Detection, Expectation, dataset_expectation, detect_missing,
                                        missing_scores, rank_evidence, rank_missing, store_expectation)
from diffparts.occlusion.evidence import (Calibration, Calibrations, calibrate, calibrated_scores,
                                          category_disagreement, family_threshold, leave_one_out_maxima)
from diffparts.occlusion.imagine import ImagineConfig, disagreement, img2img_pipeline, imagine
from diffparts.occlusion.repaint import RepaintConfig, region_masks, repaint, repaint_disagreement, repaint_evidence
from diffparts.occlusion.occluders import (FILLS, OcclusionRecord, background_patch, fill_region, hidden_fractions,
                                           label_mask, move_to_background, object_texture, occlude, random_box,
                                           resize_labels)
from diffparts.occlusion.split import NothingToOcclude, held_out_images
from diffparts.occlusion.cases import run_cases
from diffparts.occlusion.stage import (OcclusionConfig, available_losses, occlusion_config, occlusion_dir,
                                       occlusion_grid, plan_cases, setup_occlusion, summarize_occlusion)

__all__ = [
    "AppearanceConfig", "AppearanceReference", "appearance_evidence", "appearance_reference",
    "ColourConfig", "ColourReference", "colour_evidence", "colour_reference",
    "Calibration", "ImagineConfig", "NothingToOcclude", "calibrate", "calibrated_scores", "category_disagreement",
    "disagreement", "held_out_images", "img2img_pipeline", "imagine", "move_to_background", "object_texture",
    "rank_evidence", "Calibrations", "RepaintConfig", "family_threshold", "leave_one_out_maxima", "region_masks",
    "repaint", "repaint_disagreement", "repaint_evidence",
    "FILLS", "CompletionConfig", "DetectConfig", "Detection", "Expectation", "OcclusionConfig", "OcclusionRecord",
    "available_losses", "background_patch", "complete", "dataset_expectation", "detect_missing", "encode_prompts",
    "fill_region", "hidden_fractions", "inpaint_pipeline", "label_mask", "latent_cell_mask", "missing_scores",
    "occlude", "occlusion_config", "occlusion_dir", "occlusion_grid", "plan_cases", "random_box", "rank_missing",
    "resize_labels", "run_cases", "setup_occlusion", "store_expectation", "summarize_occlusion", "token_prompt",
]
