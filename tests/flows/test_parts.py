"""The discover-parts flow, its tasks and the CLI (flows/parts.py, tasks/parts.py, cli/parts.py)."""

import json

import numpy as np
import pytest

from diffparts.cli import main as cli_main
from diffparts.parts.synthetic import make_part_store
from diffparts.store import mark_done, open_store


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store.zarr"
    make_part_store(path, n_images=6, seed=1)
    return str(path)


def test_tasks_refuse_unfinished_segmentation(store):
    from tasks.parts import require_segments

    mark_done(open_store(store, "r+"), "segments", 4, False)
    with pytest.raises(ValueError, match="segmentation has not finished for 1 of 6 images"):
        require_segments.fn(store)


def test_tasks_run_the_stage(store, tmp_path):
    from tasks.parts import build_descriptors, cluster_parts, paint_part_labels, save_store_pictures

    indices = [0, 1, 2, 3, 4, 5]
    summary = build_descriptors.fn(store, None, {"level": 0}, indices)
    assert summary["segments"] == 30
    clusters = cluster_parts.fn(store, {"n_clusters": 3, "k_range": [2, 4]})
    assert clusters["k"] == 3 and sum(clusters["counts"]) == clusters["segments"]
    painted = paint_part_labels.fn(store)
    assert painted["images"] == 6 and len(painted["prevalence"]) == 4
    pictures = save_store_pictures.fn(store, None, str(tmp_path / "pics"))
    assert pictures["overlays"][0].endswith("overlays.png")


@pytest.mark.flow
def test_flow_end_to_end(prefect_server, store, tmp_path):
    from flows.parts import discover_parts

    result = discover_parts(store, k=3, out_dir=str(tmp_path / "pics"))
    assert result["clusters"]["k"] == 3 and result["images"] == 6
    assert result["prevalence"][0] == 1.0          # background in every image
    assert result["scores"] is None                # no corpus: no keypoints to score
    root = open_store(store)
    assert root["parts/done"][:].all()
    labels = root["parts/labels"][:]
    assert labels.shape == (6, 16, 16) and labels.min() == 0 and labels.max() == 3
    assert (tmp_path / "pics" / "gallery.png").is_file()


@pytest.mark.flow
def test_flow_refuses_before_segmentation(prefect_server, store):
    from flows.parts import discover_parts

    mark_done(open_store(store, "r+"), "segments", 0, False)
    with pytest.raises(ValueError, match="segmentation has not finished"):
        discover_parts(store, k=3)


def test_cli_help_and_errors(store, capsys):
    for cmd in ("parts", "transfer"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main([cmd, "--help"])
        assert exit_info.value.code == 0
    assert "--store" in capsys.readouterr().out
    # transfer before the parts stage: a clear error, exit code 2
    assert cli_main(["transfer", "--store", store, "--source", "1", "--target", "2"]) == 2
    assert "source image 1 has no keypoints" in capsys.readouterr().err


def test_transfer_by_features_refuses_a_store_without_features(store, capsys):
    for method in ("features", "features-part"):
        assert cli_main(["transfer", "--store", store, "--source", "1", "--target", "2", "--method", method]) == 2
        err = capsys.readouterr().err
        assert f"--method {method} matches UNet features, but the store has no features/ group" in err
        assert "diffparts extract --features" in err
