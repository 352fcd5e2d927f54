"""Extract tasks through ``task.fn`` (no Prefect server): set-up, batches, skips, failures."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.corpus import SynthConfig, generate_birds
from diffparts.store import done_mask, failures, mark_done, open_store, read_self_attention
from tasks.extract import (
    create_attention_arrays,
    describe_images,
    extract_batch,
    identify_run,
    prepare_store,
    record_batch_failure,
)

CAPTURE = {"timestep": 300, "prompt": ""}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A plain folder of 3 synthetic birds (32 px) and one corrupt file."""
    birds = generate_birds(tmp_path_factory.mktemp("birds"), n=3, seed=1, config=SynthConfig(image_size=32))
    folder = tmp_path_factory.mktemp("folder")
    for k, path in enumerate(sorted((birds / "images").rglob("*.png"))):
        (folder / f"bird_{k}.png").write_bytes(path.read_bytes())
    (folder / "bird_9_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def setup_store(tmp_path, corpus, model):
    images = describe_images.fn(str(corpus))
    identity = identify_run.fn(str(model), CAPTURE, "float16")
    store = str(tmp_path / "s.zarr")
    prepared = prepare_store.fn(store, images, identity, False)
    create_attention_arrays.fn(store, prepared["version"], str(model), CAPTURE, "float16", "cpu", "float32")
    return store, prepared


def test_describe_images_hashes_content(corpus):
    rows = describe_images.fn(str(corpus))
    assert [r["name"] for r in rows][-1] == "bird_9_corrupt.png"
    assert all(len(r["sha256"]) == 64 for r in rows) and len({r["sha256"] for r in rows}) == 4


def test_identify_run_rejects_bad_precision(tiny_pipeline):
    with pytest.raises(ValueError, match="bfloat16"):
        identify_run.fn(str(tiny_pipeline[0]), CAPTURE, "bfloat16")


def test_extract_batch_writes_skips_and_records_failures(tmp_path, corpus, tiny_pipeline):
    store, prepared = setup_store(tmp_path, corpus, tiny_pipeline[0])
    assert prepared["pending"] == [0, 1, 2, 3]
    root = open_store(store)
    assert root["attention/self"].shape == (4, 16, 16, 16, 16)  # tiny model: R = latent side 16
    batch = prepared["images"]  # all four in one batch, the corrupt one included
    out = extract_batch.fn(store, 1, batch, str(tiny_pipeline[0]), CAPTURE, "cpu", "float32")
    assert (out["written"], out["failed"], out["skipped"]) == (3, 1, 0) and out["bytes"] > 0
    assert done_mask(open_store(store), "attention").tolist() == [True, True, True, False]
    [failure] = failures(open_store(store))
    assert failure["name"] == "bird_9_corrupt.png" and failure["reason"].startswith("load:")
    attn = read_self_attention(open_store(store), 2)
    np.testing.assert_allclose(attn.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    # the marker is checked inside the task: a second call writes nothing new
    again = extract_batch.fn(store, 1, batch[:3], str(tiny_pipeline[0]), CAPTURE, "cpu", "float32")
    assert (again["written"], again["skipped"]) == (0, 3)


def test_record_batch_failure_marks_only_unfinished(tmp_path, corpus, tiny_pipeline):
    images = describe_images.fn(str(corpus))
    store = str(tmp_path / "s.zarr")
    prepared = prepare_store.fn(store, images, identify_run.fn(str(tiny_pipeline[0]), CAPTURE, "float16"), False)
    mark_done(open_store(store, "r+"), "attention", 0)
    n = record_batch_failure.fn(store, 1, prepared["images"][:2], "extract: out of memory")
    assert n == 1
    assert [(f["index"], f["reason"]) for f in failures(open_store(store))] == [(1, "extract: out of memory")]


def test_features_are_written_beside_attention_with_the_corpus_in_the_manifest(tmp_path, corpus, tiny_pipeline):
    from diffparts.model.extract import CaptureConfig, extract_attention
    from diffparts.model.features import FeatureConfig
    from diffparts.store import read_features
    from tasks.extract import stored_bytes

    model, pipe = tiny_pipeline
    features = {"blocks": [1]}
    images = describe_images.fn(str(corpus))
    identity = identify_run.fn(str(model), CAPTURE, "float16", features)
    assert identity["config"]["features"]["blocks"] == (1,)
    store = str(tmp_path / "f.zarr")
    prepared = prepare_store.fn(store, images, identity, False, str(corpus), features)
    assert open_store(store).attrs["manifest"]["corpus"] == {"path": str(corpus.resolve()), "kind": "folder"}
    shapes = create_attention_arrays.fn(store, 1, str(model), CAPTURE, "float16", "cpu", "float32", features=features)
    channels = pipe.unet.config.block_out_channels[0]
    assert shapes["features"] == {"up_1": [channels, 16, 16]}
    out = extract_batch.fn(store, 1, prepared["images"][:2], str(model), CAPTURE, "cpu", "float32", features=features)
    assert out["written"] == 2 and stored_bytes.fn(store, 1) > 0
    root = open_store(store)
    assert done_mask(root, "features").tolist() == [True, True, False, False]
    assert root["features/up_1"].metadata.dimension_names == ("image", "up_1_channel", "up_1_y", "up_1_x")
    # read back equal, within the int8 step of each cell (issue 20), to the same forward run directly
    from diffparts.corpus import load_rgb

    assert root["features/up_1"].dtype == np.int8
    pixels = np.stack([load_rgb(img["path"]) for img in prepared["images"][:2]])
    direct = extract_attention(pipe, pixels, CaptureConfig(**CAPTURE), FeatureConfig(blocks=(1,))).features[1]
    step = np.abs(direct[1]).max(axis=0) / 127                          # y x
    assert (np.abs(read_features(root, 1) - direct[1]) <= step[None] / 2 * 1.01 + 2e-3 * step.max()).all()
    np.testing.assert_allclose(read_features(root, 1), direct[1], rtol=0, atol=float(step.max()))
