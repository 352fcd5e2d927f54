"""flows/pipeline.py:bird_parts and `diffparts run`: five dependent stages, skipping, slicing, forcing."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from diffparts.store import done_mask, open_store

#: Small and fast: 2 training steps per token, 2 occlusion cases, few denoising steps.
FAST = {"embed_steps": 2, "occlusion_cases": 2, "max_workers": 1,
        "stage_options": {"embeddings": {"picture_config": {"n_images": 1, "generate_steps": 2}},
                          "occlusion": {"config": {"completion": {"steps": 2}}, "grid_cases": 2}}}


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from diffparts.corpus import SynthConfig, generate_birds

    return generate_birds(tmp_path_factory.mktemp("birds") / "corpus", n=8, seed=3, config=SynthConfig(image_size=64, n_classes=4))


def statuses(result):
    return {r["name"]: r["status"] for r in result["stages"]}


@pytest.mark.flow
def test_five_stages_then_a_rerun_skips_every_one(prefect_server, birds, tmp_path, capsys):
    from flows.pipeline import bird_parts

    store = str(tmp_path / "store.zarr")
    first = bird_parts(str(birds), store, echo=True, **FAST)
    assert statuses(first) == dict.fromkeys(["extract", "segment", "parts", "embeddings", "occlusion"], "done")
    root = open_store(store)
    for group in ("attention", "features", "segments", "parts"):
        assert done_mask(root, group).all(), group
    assert root["embeddings/noise/done"][1:].any() and root["occlusion/done"][:].all()
    report = Path(first["report"])
    assert report.is_file() and report.parent == Path(f"{store}.reports")
    printed = capsys.readouterr().out
    for name in ("extract", "segment", "parts", "embeddings", "occlusion", "report"):
        assert any(line.startswith(name) for line in printed.splitlines()), name

    centers = root["parts/centers"][:]
    second = bird_parts(str(birds), store, **FAST)
    assert statuses(second) == dict.fromkeys(["extract", "segment", "parts", "embeddings", "occlusion"], "skipped")
    assert second["stages"][0]["summary"]["skipped"] == 8
    assert np.array_equal(open_store(store)["parts/centers"][:], centers)
    assert Path(second["report"]).is_file() and second["report"] != first["report"]


@pytest.mark.flow
def test_grown_corpus_slices_and_force(prefect_server, birds, tmp_path):
    """A folder corpus that grows: only the new images are extracted and segmented, the parts
    are clustered again; --from/--to slice the run; --force redoes a stage and the ones after."""
    from flows.pipeline import bird_parts

    folder = tmp_path / "folder"
    folder.mkdir()
    images = sorted((Path(birds) / "images").rglob("*.png"))
    for path in images[:6]:
        shutil.copy(path, folder / path.name)
    store = str(tmp_path / "grow.zarr")
    first = bird_parts(str(folder), store, to_stage="parts", report=False, **FAST)
    assert statuses(first)["parts"] == "done" and statuses(first)["embeddings"] == "not run"
    assert "embeddings" not in open_store(store)

    for path in images[6:]:
        shutil.copy(path, folder / path.name)
    grown = bird_parts(str(folder), store, to_stage="parts", report=False, **FAST)
    extract, segment, parts = (r["summary"] for r in grown["stages"][:3])
    assert (extract["written"], extract["skipped"]) == (2, 6)
    assert (segment["done"], segment["skipped"]) == (2, 6)
    assert statuses(grown)["parts"] == "done" and parts["images"] == 8

    only_parts = bird_parts(str(folder), store, from_stage="parts", to_stage="parts", report=False, **FAST)
    assert statuses(only_parts) == {"extract": "not run", "segment": "not run", "parts": "skipped",
                                    "embeddings": "not run", "occlusion": "not run"}

    forced = bird_parts(str(folder), store, to_stage="parts", force="segment", report=False, **FAST)
    assert statuses(forced) == {"extract": "skipped", "segment": "done", "parts": "done",
                                "embeddings": "not run", "occlusion": "not run"}
    assert forced["stages"][1]["summary"]["done"] == 8

    with pytest.raises(ValueError, match="--force extract comes before --from-stage segment"):
        bird_parts(str(folder), store, from_stage="segment", force="extract", report=False)


@pytest.mark.flow
def test_missing_corpus_is_named_or_rendered(prefect_server, tmp_path):
    from flows.pipeline import bird_parts

    missing = tmp_path / "nothing-here"
    with pytest.raises(FileNotFoundError, match="corpus .*nothing-here does not exist"):
        bird_parts(str(missing), str(tmp_path / "s.zarr"), report=False)
    assert not (tmp_path / "s.zarr").exists()
    made = bird_parts(str(missing), str(tmp_path / "s.zarr"), synthetic_birds=4, to_stage="extract", report=False,
                      max_workers=1)
    assert made["stages"][0]["summary"]["written"] == 4 and (missing / "images.txt").is_file()
