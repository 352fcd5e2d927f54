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
    for name in ("extract", "segment", "parts", "embeddings", "occlusion"):   # the report line is the CLI's
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
    first = bird_parts(str(folder), store, to_stage="embeddings", report=False, **FAST)
    assert statuses(first)["embeddings"] == "done" and statuses(first)["occlusion"] == "not run"
    assert "occlusion" not in open_store(store)
    centers = open_store(store)["parts/centers"][:]

    for path in images[6:]:
        shutil.copy(path, folder / path.name)
    grown = bird_parts(str(folder), store, to_stage="embeddings", report=False, **FAST)
    extract, segment, parts, embeddings = (r["summary"] for r in grown["stages"][:4])
    assert (extract["written"], extract["skipped"]) == (2, 6)
    assert (segment["done"], segment["skipped"]) == (2, 6)
    assert statuses(grown)["parts"] == "done" and parts["images"] == 8
    # new categories: the tokens of the old ones are stale, so the embeddings stage redid them
    assert not np.array_equal(open_store(store)["parts/centers"][:], centers)
    assert statuses(grown)["embeddings"] == "done" and len(embeddings["trained"]) == len(embeddings["summary"]) > 0

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


@pytest.mark.flow
def test_cli_run_prints_each_stage_and_names_bad_options(prefect_server, birds, tmp_path, capsys):
    from diffparts.cli import main

    store = str(tmp_path / "cli.zarr")
    assert main(["run", "--corpus", str(birds), "--store", store, "--to-stage", "segment", "--no-report",
                 "--max-workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # each stage's line as it finishes, then the summary table (a row per stage) and the report line
    assert [line.split()[:2] for line in lines if line.split()[:1] in (["extract"], ["segment"])] == \
        [["extract", "done"], ["segment", "done"]] * 2
    assert "== diffparts run: extract, segment ==" in lines and lines[-1] == "report  (none: --no-report)"
    assert main(["run", "--corpus", str(birds), "--store", store, "--from-stage", "parts",
                 "--to-stage", "segment"]) == 2
    assert "diffparts run: error: --from-stage parts comes after --to-stage segment" in capsys.readouterr().err


@pytest.mark.flow
def test_compact_store_through_the_pipeline(prefect_server, birds, tmp_path):
    """``keep_attention=False``: the extract workers segment with the segment stage's settings
    (method and ``stage_options["segment"]``), the segment stage finds every image done, and the
    parts stage reads the pooled attention; a re-run skips."""
    from diffparts.store import is_compact
    from flows.pipeline import bird_parts

    store = str(tmp_path / "compact.zarr")
    options = {"segment": {"ncut": {"tau": 0.3}}}
    first = bird_parts(str(birds), store, to_stage="parts", keep_attention=False, report=False,
                       max_workers=1, stage_options=options)
    assert statuses(first) == {"extract": "done", "segment": "skipped", "parts": "done",
                               "embeddings": "not run", "occlusion": "not run"}
    root = open_store(store)
    assert is_compact(root) and "attention/self" not in root
    assert root["segments"].attrs["settings"]["method"] == "ncut"
    assert root["segments"].attrs["settings"]["ncut_params"]["tau"] == 0.3
    assert root["segments"].attrs["settings"]["made_by"] == "extract"
    assert done_mask(root, "segments").all() and done_mask(root, "parts").all()
    again = bird_parts(str(birds), store, to_stage="parts", keep_attention=False, report=False,
                       max_workers=1, stage_options=options)
    assert set(statuses(again).values()) == {"skipped", "not run"}
