"""The segment flow and its tasks on a tiny store of synthetic birds with known part masks."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.corpus import SynthConfig, generate_birds, load_mask, open_corpus
from diffparts.segment.hierarchy import check_nested
from diffparts.segment.synthetic import make_region_attention
from diffparts.store import (
    build_manifest,
    create_attention_arrays,
    describe_corpus,
    describe_images,
    done_mask,
    failures,
    image_table,
    mark_done,
    open_store,
    prepare_store,
    write_attention,
)

R = 8  # attention resolution of the tiny store
TOKENS = ["<|startoftext|>", "bird</w>", "wing</w>", "<|endoftext|>"]


def build_store(path, corpus) -> str:
    """A store whose attention follows each bird's part mask (regions known in advance)."""
    records = list(open_corpus(corpus))
    identity = build_manifest("synthetic", "sha256:test", {"precision": "float16"})
    prepare_store(str(path), describe_images(records), identity, corpus=describe_corpus(corpus))
    root = open_store(str(path), mode="r+")
    create_attention_arrays(root, R, TOKENS, image_size=32)
    for row in image_table(root):
        mask = load_mask(records[row["index"]].part_mask_path)  # y x, 32 x 32
        coarse = mask[2::4, 2::4]  # R x R
        attn = make_region_attention(coarse, sharpness=10.0, locality=1.0, seed=row["index"])
        cross = np.stack([np.ones((R, R)), (coarse > 0).astype(float), (coarse == 7).astype(float),
                          np.ones((R, R))]).astype(np.float32)
        write_attention(root, row["index"], attn, cross)
        mark_done(root, "attention", row["index"])
    return str(path)


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return generate_birds(tmp_path_factory.mktemp("birds"), n=3, seed=0, config=SynthConfig(image_size=32))


def test_segment_images_task_writes_nested_levels_and_records_failures(birds, tmp_path, monkeypatch):
    import diffparts.store
    from flows.segment import resolve_settings
    from tasks.segment import create_segment_arrays, segment_images

    store = build_store(tmp_path / "s.zarr", birds)
    read = diffparts.store.read_self_attention

    def read_nan_for_image_1(root, index):  # the store renormalises NaN maps away, so inject one
        attn = read(root, index)
        if index == 1:
            attn[0, 0, 0, 0] = np.nan
        return attn

    monkeypatch.setattr(diffparts.store, "read_self_attention", read_nan_for_image_1)
    request = {"method": "diffseg", "thresholds": "sd", "rule": "quantile", "quantile": 0.05,
               "level_thresholds": [0.5, 1.0, 4.0], "rounds": 2, "anchors_per_side": 16, "sample": 4,
               "ncut": {}, "out_size": None, "names": True}
    settings = resolve_settings(store, request, [0, 1, 2], R, 32)
    assert settings["level_thresholds"] == [1.1, 1.1, 4.0]  # level 0 = the merge; never below it
    geometry = create_segment_arrays.fn(store, settings)
    assert geometry == {"n_levels": 3, "max_segments": 64, "y": 32, "x": 32}
    rows = segment_images.fn(store, image_table(open_store(store)), settings)
    assert [r["status"] for r in rows] == ["done", "failed", "done"], rows
    assert "non-finite" in rows[1]["reason"]
    root = open_store(store)
    assert done_mask(root, "segments").tolist() == [True, False, True]
    assert failures(root, "segments")[0]["index"] == 1
    labels = root["segments/labels"][0]  # level y x
    assert labels.shape == (3, 32, 32) and labels.min() == 0
    check_nested(labels[: root["segments/n_levels"][0]])
    parent = root["segments/parent"][0]
    k0 = int(root["segments/n_segments"][0, 0])
    np.testing.assert_array_equal(parent[0, :k0][labels[0]], labels[1])  # parent reproduces level 1
    assert rows[0]["names"] and set(rows[0]["names"]) <= {"bird", "wing"}
    # a second call skips the finished images, retries the failed one (still failing)
    again = segment_images.fn(store, image_table(root), settings)
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped"]


def test_other_settings_refused_without_overwrite(birds, tmp_path):
    from flows.segment import resolve_settings
    from tasks.segment import create_segment_arrays

    store = build_store(tmp_path / "s.zarr", birds)
    base = {"method": "diffseg", "thresholds": "sd", "rule": "quantile", "quantile": 0.05,
            "level_thresholds": [], "rounds": 3, "anchors_per_side": 16, "sample": 4,
            "ncut": {}, "out_size": 16, "names": False}
    create_segment_arrays.fn(store, resolve_settings(store, base, [0], R, 32))
    other = resolve_settings(store, {**base, "thresholds": "0.5"}, [0], R, 32)
    with pytest.raises(ValueError, match="overwrite"):
        create_segment_arrays.fn(store, other)
    assert create_segment_arrays.fn(store, other, overwrite=True)["n_levels"] == 4


@pytest.mark.flow
def test_flow_segments_skips_and_scores(prefect_server, birds, tmp_path, monkeypatch):
    import flows.segment as flow
    from flows.segment import segment_dataset

    store = build_store(tmp_path / "s.zarr", birds)
    first = segment_dataset(store, method="diffseg", thresholds="auto", rule="otsu", corpus=str(birds), batch_size=2, sample=3)
    assert (first["done"], first["failed"], first["skipped"]) == (3, 0, 0)
    assert 0 < first["miou"] <= 1 and 0 < first["nf_covering"] <= 1
    root = open_store(store)
    stored = root["segments"].attrs["settings"]
    assert stored["thresholds"]["statistics"]["rule"] == "otsu"
    assert stored["thresholds"]["statistics"]["n_images"] == 3
    def no_rereading(*args, **kwargs):
        raise AssertionError("a re-run with nothing new re-read every label map to score it")

    with monkeypatch.context() as m:
        m.setattr(flow, "score_segments", no_rereading)       # the measures stored by the first run are used
        second = segment_dataset(store, method="diffseg", thresholds="auto", rule="otsu", batch_size=2,
                                 sample=3)   # manifest's corpus
    assert (second["done"], second["skipped"]) == (0, 3)
    assert second["miou"] == first["miou"]
    assert second["level_thresholds"] == first["level_thresholds"]

    ncut = segment_dataset(store, method="ncut", ncut={"tau": 0.3, "max_depth": 3, "min_size": 2},
                           corpus=str(birds), overwrite=True)
    assert ncut["done"] == 3
    root = open_store(store)
    assert root["segments/labels"].shape == (3, 3, 32, 32)
    for k in range(3):
        check_nested(root["segments/labels"][k])


def test_cli_help_lists_options():
    from diffparts.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["segment", "--store", "x.zarr", "--method", "ncut", "--tau", "0.2", "--levels", "0.1,0.2"])
    assert args.method == "ncut" and args.tau == 0.2 and args.levels == [0.1, 0.2]
    help_text = parser._subparsers._group_actions[0].choices["segment"].format_help()
    assert "--thresholds" in help_text and "--corpus" in help_text


def _diffseg_settings(store):
    from flows.segment import resolve_settings

    request = {"method": "diffseg", "thresholds": "sd", "rule": "quantile", "quantile": 0.05,
               "level_thresholds": [], "rounds": 2, "anchors_per_side": 16, "sample": 4,
               "ncut": {}, "out_size": 16, "names": False}
    return resolve_settings(store, request, [0, 1, 2], R, 32)


def test_any_exception_for_one_image_is_recorded_and_the_others_go_on(birds, tmp_path, monkeypatch):
    """Issue 12 item 6: not only ValueError: an ARPACK error or MemoryError fails one image."""
    import tasks.segment
    from tasks.segment import create_segment_arrays, segment_images

    store = build_store(tmp_path / "s.zarr", birds)
    settings = _diffseg_settings(store)
    create_segment_arrays.fn(store, settings)
    real = tasks.segment._segment_one
    errors = {1: RuntimeError("ARPACK error -9999: no convergence"), 2: MemoryError("cannot allocate")}

    def flaky(root, index, settings):
        if index in errors:
            raise errors[index]
        return real(root, index, settings)

    monkeypatch.setattr(tasks.segment, "_segment_one", flaky)
    rows = segment_images.fn(store, image_table(open_store(store)), settings)
    assert [r["status"] for r in rows] == ["done", "failed", "failed"]
    reasons = {f["index"]: f["reason"] for f in failures(open_store(store), "segments")}
    assert reasons == {1: "segment: RuntimeError: ARPACK error -9999: no convergence",
                       2: "segment: MemoryError: cannot allocate"}


def test_overwrite_clears_the_markers_of_the_stages_that_depend_on_segments(birds, tmp_path):
    """Issue 12 item 10: after segment --overwrite, parts/done and its failures are cleared."""
    from diffparts.store import ensure_stage, record_failure
    from tasks.segment import create_segment_arrays

    store = build_store(tmp_path / "s.zarr", birds)
    settings = _diffseg_settings(store)
    create_segment_arrays.fn(store, settings)
    root = open_store(store, "r+")
    ensure_stage(root, "parts")
    for k in range(3):
        mark_done(root, "parts", k)
    record_failure(root, "parts", image_table(root)[2]["image_id"], image_table(root)[2]["name"],
                   "parts: old", index=2)
    create_segment_arrays.fn(store, settings, overwrite=True)          # same settings: nothing cleared
    assert done_mask(open_store(store), "parts").all()
    create_segment_arrays.fn(store, {**settings, "rounds": 3}, overwrite=True)
    root = open_store(store)
    assert not done_mask(root, "parts").any() and failures(root, "parts") == []


@pytest.mark.flow
def test_a_batch_that_fails_for_good_is_recorded_per_image(prefect_server, birds, tmp_path, monkeypatch):
    """Issue 12 item 6: the batch's images go to failures/segments, so the parts stage can go on."""
    from prefect import task

    import flows.segment
    from diffparts.parts.dataset import require_segments
    from tasks.segment import create_segment_arrays

    store = build_store(tmp_path / "s.zarr", birds)
    settings = _diffseg_settings(store)
    create_segment_arrays.fn(store, settings)

    @task(retries=0)
    def broken(store, images, settings):
        raise OSError("disk went away")

    table = image_table(open_store(store))
    monkeypatch.setattr(flows.segment, "segment_images", broken)
    rows = flows.segment.segment_batches(store, [table[:2]], settings)
    assert [r["status"] for r in rows] == ["failed", "failed"] and "disk went away" in rows[0]["reason"]
    root = open_store(store)
    assert [f["index"] for f in failures(root, "segments")] == [0, 1]
    mark_done(open_store(store, "r+"), "segments", 2)
    assert require_segments(open_store(store)) == [2]           # the failed ones are left out, not waited for


def _all_at_once(store, corpus, images, n_classes):
    """The measures as score_segments computed them before issue 20: every image in memory."""
    from diffparts.metrics import SegmentationScores, nf_covering

    root, records = open_store(store), {r.name: r for r in open_corpus(corpus)}
    pairs = []
    for img in images:
        n = int(root["segments/n_levels"][img["index"]])
        levels = np.asarray(root["segments/labels"][img["index"], :n], np.int64)
        gt = load_mask(records[img["name"]].part_mask_path).astype(np.int64)
        ys, xs = [(np.arange(gt.shape[a]) * levels.shape[a + 1]) // gt.shape[a] for a in (0, 1)]
        pairs.append((levels[:, ys][:, :, xs], gt))
    n_classes = max([n_classes] + [int(gt.max()) + 1 for _, gt in pairs])
    overall = SegmentationScores(n_classes, ignore_index=None)
    per_level = [SegmentationScores(n_classes, ignore_index=None) for _ in range(max(len(lv) for lv, _ in pairs))]
    covering = []
    for levels, gt in pairs:
        overall.update(levels[0], gt)
        for k, s in enumerate(per_level):
            s.update(levels[min(k, len(levels) - 1)], gt)
        covering.append(nf_covering(levels, gt))
    return {"classes": n_classes, "miou": overall.result().miou, "nf_covering": float(np.nanmean(covering)),
            "miou_per_level": [s.result().miou for s in per_level]}


def _segmented_store(birds, tmp_path):
    """A store of the three birds segmented with DiffSeg at three levels: (store, image table)."""
    from flows.segment import resolve_settings
    from tasks.segment import create_segment_arrays, segment_images

    store = build_store(tmp_path / "s.zarr", birds)
    request = {"method": "diffseg", "thresholds": "sd", "rule": "quantile", "quantile": 0.05,
               "level_thresholds": [0.5, 1.0, 4.0], "rounds": 2, "anchors_per_side": 16, "sample": 4,
               "ncut": {}, "out_size": None, "names": False}
    settings = resolve_settings(store, request, [0, 1, 2], R, 32)
    create_segment_arrays.fn(store, settings)
    images = image_table(open_store(store))
    assert [r["status"] for r in segment_images.fn(store, images, settings)] == ["done"] * 3
    return store, images


def test_scores_streamed_one_image_at_a_time_equal_the_all_at_once_ones(birds, tmp_path, monkeypatch):
    """Issue 20: score_segments holds one image's labels and mask at a time; its measures equal
    those computed with every image in memory, also when a mask holds a class past the legend
    (the images are then read again with the larger number of classes)."""
    import diffparts.corpus
    from tasks.segment import score_segments

    store, images = _segmented_store(birds, tmp_path)
    legend = getattr(open_corpus(birds), "part_legend", {}) or {}
    streamed = score_segments.fn(store, str(birds), images)["summary"]
    expected = _all_at_once(store, birds, images, max(legend, default=0) + 1)
    assert streamed["classes"] == expected["classes"] and len(streamed["miou_per_level"]) >= 2
    for key in ("miou", "nf_covering", "miou_per_level"):
        np.testing.assert_allclose(streamed[key], expected[key])
    # a legend shorter than the masks' classes: a second pass with the classes seen, same result
    opened = diffparts.corpus.open_corpus

    def short_legend(*args, **kwargs):
        dataset = opened(*args, **kwargs)
        dataset.part_legend = {0: "background", 1: "one"}
        return dataset

    with monkeypatch.context() as m:
        m.setattr(diffparts.corpus, "open_corpus", short_legend)
        again = score_segments.fn(store, str(birds), images)["summary"]
    assert again["classes"] == expected["classes"]
    np.testing.assert_allclose(again["miou_per_level"], expected["miou_per_level"])


def test_scores_of_a_grown_corpus_read_only_the_new_images(birds, tmp_path, monkeypatch):
    """Issue 20: the measures' sums are kept in the store; scoring images that continue the ones
    scored last time reads only the new ones, and equals scoring all at once. An image segmented
    again in this run (``fresh``) makes it read everything."""
    import tasks.segment as segment_tasks
    from tasks.segment import record_segment_scores, score_segments, scores_key

    store, images = _segmented_store(birds, tmp_path)
    first = score_segments.fn(store, str(birds), images[:2])
    record_segment_scores.fn(store, scores_key(str(birds), images[:2]), first, [r["name"] for r in images])
    read = []
    real_pair = segment_tasks._image_pair
    monkeypatch.setattr(segment_tasks, "_image_pair", lambda root, rec, img, n: read.append(img["index"])
                        or real_pair(root, rec, img, n))
    grown = score_segments.fn(store, str(birds), images, [])
    assert read == [images[2]["index"]] and grown["read"] == 1
    whole = _all_at_once(store, birds, images, grown["summary"]["classes"])
    assert grown["summary"]["images"] == 3 and len(grown["rows"]) == 3
    for key in ("miou", "nf_covering", "miou_per_level"):
        np.testing.assert_allclose(grown["summary"][key], whole[key])
    read.clear()
    again = score_segments.fn(store, str(birds), images, [images[0]["index"]])   # image 0 segmented again
    assert len(read) == 3 and again["read"] == 3
    np.testing.assert_allclose(again["summary"]["miou"], whole["miou"])
