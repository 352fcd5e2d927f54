"""Flow: part categories across the whole dataset (docs/design.md §5.5 "Parts").

Depends on the segment stage: it refuses to start unless every image's ``segments/done`` marker
is set. Then, in order (each a thin task over ``diffparts.parts``):

1. Check that segmentation finished for the images it uses.
2. Describe every segment (``parts/descriptors``; one sequential pass, ragged rows).
3. Cluster all foreground segments into K part categories with the streaming clusterer
   (ClusterConfig's fixed K when not given, silhouette on a fixed sample with k="auto").
4. Paint per-pixel part maps ``parts/labels`` (same id = same part in every image), done
   markers, per-category prevalence.
5. Pictures: an overlay grid and a crop gallery per category (PNG), embedded as data URIs in a
   markdown artifact (``parts-pictures``), with a table artifact of per-category prevalence
   (``parts-prevalence``).
6. Where the corpus has keypoints: NMI/ARI at keypoints and PCK@0.05/0.1 on same-class pairs
   (table artifact ``parts-scores``). A progress artifact (``parts-progress``) follows the steps.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from flows.artifacts import (advance_progress, markdown_with_pictures, measure_rows, publish_markdown,
                             publish_progress, publish_table, stage_report)
from tasks.parts import (build_descriptors, cluster_parts, count_images, current_parts, evaluate_store,
                         paint_part_labels, record_parts_run, require_segments, save_store_pictures)


def _pictures(pictures: dict) -> list[dict]:
    """The overlay grid and the stacked gallery (the per-category rows are in it too)."""
    shown = [{"title": "Overlays (colour = category, same colour in every image)", "path": p}
             for p in pictures["overlays"]]
    stacked = [p for p in pictures["galleries"] if Path(p).name == "gallery.png"]
    return shown + [{"title": "Galleries (crops of each category from many images)", "path": p} for p in stacked]


def _markdown(store: str, pictures: dict, clusters: dict) -> str:
    lines = [f"# Part categories of `{store}`", "",
             f"K = {clusters['k']} foreground categories (+ background = 0); "
             + (f"K scores (silhouette): {clusters['k_scores']}" if clusters.get("k_scores")
                else "K fixed (given, or ClusterConfig's default chosen on validation birds)")]
    folder = Path(pictures["overlays"][0]).parent if pictures["overlays"] else None
    lines += ["", f"PNG files (one gallery per category too) in `{folder}`"]
    return markdown_with_pictures(lines, _pictures(pictures))


def _publish_skipped(store: str, summary: dict) -> None:
    """The dashboard of a skipped run: done, and the last run's prevalence and pictures."""
    report = summary.get("report") or {}
    publish_progress("parts-progress", f"part discovery on {store}: up to date, skipped", 1, 1)
    publish_table("parts-prevalence", (report.get("tables") or {}).get("prevalence") or [],
                  "fraction of images containing each category (from the last run: up to date, skipped)")
    lines = [f"# Part categories of `{store}`", "",
             "Up to date for these images and settings: skipped; the last run's pictures."]
    publish_markdown("parts-pictures", markdown_with_pictures(lines, report.get("pictures") or []),
                     "part overlays and galleries (last run)")


@flow(name="discover-parts")
def discover_parts(store: str, k: int | str | None = None, corpus: str | None = None, level: int = 0,
                   out_dir: str | None = None, evaluate: bool = True, max_pairs: int = 2000,
                   seed: int = 0, descriptor: dict | None = None, cluster: dict | None = None,
                   method: str = "auto") -> dict:
    """Discover part categories over every segmented image of ``store``.

    k: number of foreground part categories (None: ClusterConfig's fixed default, chosen on
    validation birds; "auto": silhouette on a fixed sample, 3..12).
    corpus: the corpus folder (boxes, keypoints, classes, pictures); default the manifest's.
    method: keypoint transfer scored by PCK (``diffparts.parts.transfer.METHODS``; ``auto``:
    feature matching when the store has features, else relative position through the parts).
    level: hierarchy level of the segments described (0 = finest). out_dir: where the PNGs go
    (default ``<store>.parts/``). descriptor/cluster: overrides of DescriptorConfig/ClusterConfig.
    Returns small summaries of every step.
    """
    from diffparts.store import open_store

    logger = get_run_logger()
    store = str(store)
    out_dir = str(out_dir or f"{store.rstrip('/')}.parts")
    descriptor = {**(descriptor or {}), "level": int(level)}
    cluster = {**(cluster or {}), "n_clusters": "default" if k is None else k, "random_state": int(seed)}

    # 1. Segmentation must be done for every image used.
    indices = require_segments(store)
    left_out = count_images(store) - len(indices)
    logger.info("segments done for %d images; %d left out (failed in an earlier stage: "
                "`diffparts failures --store %s`)", len(indices), left_out, store)
    # Up to date (same images, same settings, every label written): the last run's summary.
    settings = {"descriptor": descriptor, "cluster": cluster, "corpus": corpus, "evaluate": evaluate,
                "max_pairs": max_pairs, "seed": seed, "method": method, "out_dir": out_dir}
    current = current_parts(store, indices, settings)
    if current["summary"] is not None:
        logger.info("parts: up to date for these %d images and settings: skipped (categories kept; "
                    "`diffparts run --force parts` redoes them)", len(indices))
        _publish_skipped(store, current["summary"])
        return {**current["summary"], "skipped": True}
    if "parts/centers" in open_store(store):
        logger.info("parts: the images or settings changed since the last clustering: clustering again "
                    "(the embeddings and occlusion stages, which read the categories, will be redone)")
    # 2.-4. Descriptors, clustering, label maps.
    steps = 5 if evaluate else 4
    progress = publish_progress("parts-progress", f"part discovery on {store}: steps done "
                                "(descriptors, clusters, labels, pictures, scores)", 0, steps)
    described = build_descriptors(store, corpus, descriptor, indices)
    advance_progress(progress, 1, steps)
    logger.info("described %(segments)d segments (%(foreground_segments)d foreground)", described)
    clusters = cluster_parts(store, cluster)
    advance_progress(progress, 2, steps)
    if clusters["k_scores"]:
        logger.info("K = %d, chosen by score among %s", clusters["k"],
                    ", ".join(f"K={k}: {v:.3f}" for k, v in sorted(clusters["k_scores"].items())))
    else:
        logger.info("K = %d: the fixed number of categories (--k; no K search, so no per-K scores)", clusters["k"])
    painted = paint_part_labels(store)
    advance_progress(progress, 3, steps)
    # 5. Pictures and artifacts.
    pictures = save_store_pictures(store, corpus, out_dir)
    publish_markdown("parts-pictures", _markdown(store, pictures, clusters), "part overlays and galleries")
    prevalence = [{"category": c, "name": "background" if c == 0 else f"part {c}", "prevalence": p}
                  for c, p in enumerate(painted["prevalence"])]
    publish_table("parts-prevalence", prevalence, "fraction of images containing each category")
    advance_progress(progress, 4, steps)
    result = {"store": store, "images": len(indices), "left_out": left_out, "descriptors": described, "clusters": clusters,
              "prevalence": painted["prevalence"], "pictures": pictures}
    # 6. Scores where the corpus has keypoints.
    if evaluate:
        scores = evaluate_store(store, corpus, max_pairs, seed, method)
        if scores is not None:
            publish_table("parts-scores", measure_rows(scores), "NMI/ARI at keypoints, PCK on same-class pairs")
            logger.info("NMI %.3f ARI %.3f PCK@0.1 %.3f", scores["nmi"], scores["ari"], scores["pck@0.1"])
        result["scores"] = scores
        advance_progress(progress, 5, steps)
    measures = measure_rows({"images": len(indices), "left_out": left_out, "k": clusters["k"],
                             "segments": described.get("segments"), **(result.get("scores") or {})})
    result["report"] = stage_report(measures, {"prevalence": prevalence}, _pictures(pictures))
    record_parts_run(store, current["identity"], result)
    return result


if __name__ == "__main__":
    import sys

    print(discover_parts(sys.argv[1] if len(sys.argv) > 1 else "data/stores/birds.zarr",
                         corpus=sys.argv[2] if len(sys.argv) > 2 else None))
