"""The embeddings stage over a store: set-up refusals, training a category, files and store
rows, the measures, the flow and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from diffparts.inversion.stage import (embedding_summary, finish_index, measure_embeddings, setup_embeddings,
                                       train_category)
from diffparts.inversion.train import InversionConfig
from diffparts.store import open_store

CONFIG = InversionConfig(steps=3, batch_size=2, checkpoint_every=2)


def _model(tiny_pipeline):
    return str(tiny_pipeline[0])


def test_setup_refuses_a_store_without_parts(tmp_path):
    from diffparts.parts.synthetic import make_part_store

    make_part_store(tmp_path / "s.zarr", n_images=4)
    root = open_store(tmp_path / "s.zarr", "r+")
    with pytest.raises(ValueError, match="parts stage is not done .*missing .*parts/labels"):
        setup_embeddings(root, str(tmp_path), ["noise"], CONFIG, "h", 32)


def test_setup_split_plan_and_refusals(parts_store):
    store, corpus = parts_store
    root = open_store(store, "r+")
    counts = np.asarray(root["parts/category_pixels"][:])
    del root["parts/category_pixels"]                              # a store painted before issue 20
    plan = setup_embeddings(root, corpus, ["noise", "attention"], CONFIG, "h", 32, store=store)
    np.testing.assert_array_equal(root["parts/category_pixels"][:], counts)   # counted once and kept
    held = np.asarray(root["embeddings/held_out"][:])
    assert plan["held_out"] == held.sum() == 4 and plan["split"].startswith("seeded")  # a folder: seeded half
    assert {(p["loss"], p["category"]) for p in plan["plan"]} == {(l, c) for l in ("noise", "attention") for c in (1, 2)}
    assert root["embeddings/noise/vectors"].metadata.dimension_names == ("category", "vector", "channel")
    assert root["embeddings/noise/vectors"].shape == (3, 1, 32)
    with pytest.raises(ValueError, match=r"categories \[3\] are not part categories"):
        setup_embeddings(root, corpus, ["noise"], CONFIG, "h", 32, categories=[3])
    root["embeddings/held_out"][:] = True                          # every image held out
    with pytest.raises(ValueError, match=r"part categories \[1\] have no training images"):
        setup_embeddings(root, corpus, ["noise"], CONFIG, "h", 32, categories=[1])


def test_train_a_category_writes_files_rows_and_marker(parts_store, tiny_pipeline):
    store, corpus = parts_store
    root = open_store(store, "r+")
    setup_embeddings(root, corpus, ["noise"], CONFIG, "h", 32, store=store)
    row = train_category(root, store, corpus, _model(tiny_pipeline), 1, CONFIG, model_hash="h")
    assert row["token"] == "<part-1>" and row["steps"] == 3 and row["file"] == "part-1.safetensors"
    assert root["embeddings/noise/done"][:].tolist() == [False, True, False]
    assert np.abs(root["embeddings/noise/vectors"][1]).sum() > 0
    held = np.asarray(root["embeddings/held_out"][:])
    assert held.sum() > 0                                            # training read none of these
    index = finish_index(store, ["noise"], [row])
    rows = json.loads(Path(index[0]).read_text())
    assert [r["category"] for r in rows] == [1] and rows[0]["model_hash"] == "h"
    assert embedding_summary(root, ["noise"])[0]["category"] == 1
    plan = setup_embeddings(root, corpus, ["noise"], CONFIG, "h", 32, store=store)
    assert [p["category"] for p in plan["plan"]] == [2]                # the finished one is skipped
    redo = setup_embeddings(root, corpus, ["noise"], CONFIG, "other-model", 32, store=store)
    assert redo["resets"] and len(redo["plan"]) == 2                   # another model: redone
    assert not (Path(index[0]).parent / "part-1.safetensors").exists()  # and its stale files gone


def test_measures_have_every_kind(parts_store, tiny_pipeline):
    from diffparts.inversion.evaluate import MeasureConfig

    store, corpus = parts_store
    root = open_store(store, "r+")
    setup_embeddings(root, corpus, ["noise"], CONFIG, "h", 32, store=store)
    rows = [train_category(root, store, corpus, _model(tiny_pipeline), c, CONFIG) for c in (1, 2)]
    finish_index(store, ["noise"], rows)
    out = measure_embeddings(root, store, corpus, _model(tiny_pipeline), ["noise"], CONFIG,
                             MeasureConfig(timesteps=(300,), n_generate=1, generate_steps=2))
    kinds = {m["kind"] for m in out["means"]}
    assert kinds == {"empty", "class", "initializer", "noise"}
    noise = [r for r in out["rows"] if r["kind"] == "noise"]
    assert all(0 <= r["iou_discovered"] <= 1 for r in noise)
    assert all(np.isnan(r["iou_gt"]) for r in noise)                  # a folder corpus has no part masks
    # ... so no judge applies: "generates the part" is n/a, never the position-biased re-assignment
    assert all(r["generated_with_part"] is None and r["generated_part_share"] is None for r in noise)
    assert next(m for m in out["means"] if m["kind"] == "noise")["generated_with_part"] is None


@pytest.mark.flow
def test_flow_trains_resumes_and_publishes(prefect_server, parts_store, tiny_pipeline):
    from flows.embeddings import train_part_embeddings

    store, corpus = parts_store
    first = train_part_embeddings(store, model=_model(tiny_pipeline), corpus=corpus, loss="noise", steps=2,
                                  config={"batch_size": 2}, max_workers=1)
    assert not first["failed"] and sorted(r["category"] for r in first["trained"]) == [1, 2]
    assert Path(first["pictures"]["noise"][1]).is_file()
    again = train_part_embeddings(store, model=_model(tiny_pipeline), corpus=corpus, loss="noise", steps=2,
                                  config={"batch_size": 2}, pictures=False)
    assert again["trained"] == [] and len(again["summary"]) == 2


def test_cli_refuses_a_store_without_parts(tmp_path, capsys):
    from diffparts.cli import main
    from diffparts.parts.synthetic import make_part_store

    make_part_store(tmp_path / "s.zarr", n_images=2)
    assert main(["embed", "--store", str(tmp_path / "s.zarr"), "--model", str(tmp_path)]) == 2
    assert "parts stage is not done" in capsys.readouterr().err


def test_cli_help_lists_the_losses(capsys):
    from diffparts.cli import main

    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = capsys.readouterr().out
    assert "noise-unmasked" in text and "--categories" in text and "load_textual_inversion" in text
