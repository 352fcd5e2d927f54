"""The dashboard's text reads cleanly (issue 21): numbers formatted (no raw floats, no
"PSNR None"), ``pck@0.1`` not an e-mail link, the run summary in narrow tables."""

from __future__ import annotations

import re


def test_cells_format_numbers_and_guard_at_signs():
    from flows.artifacts import cell_text, markdown_table

    assert cell_text(0.3157894736842105, 3) == "0.316" and cell_text(None) == "–"
    assert cell_text("pck@0.1") == "`pck@0.1`" and cell_text("a|b") == "a\\|b"
    assert markdown_table([{"measure": "pck@0.1", "value": 0.84321}], digits=3)[2] == "| `pck@0.1` | 0.843 |"


def test_occlusion_artifact_has_no_raw_numbers():
    from flows.occlusion import _markdown

    summary = {"cases": 8, "detection": {"precision": 0.25, "recall": 0.3157894736842105, "f1": 0.27586206896,
                                         "roc_auc": 0.39285714285714285},
               "table": [{"variant": "occluded", "iou": 0.29133, "hidden_share": 0.1, "assigned": 0.5,
                          "judge_iou": 0.3754321, "judge_hidden_accuracy": None, "psnr": None, "ssim": 0.912345678},
                         {"variant": "class", "iou": 0.2881, "hidden_share": 0.2, "assigned": 0.6,
                          "psnr": 21.73219, "ssim": 0.8}]}
    text = _markdown("/s.zarr", summary, None)
    assert "recall 0.316" in text and "ROC AUC 0.393" in text
    assert "None" not in text and not re.search(r"\d\.\d{5,}", text)
    assert "| occluded | 0.291 | 0.1 | 0.5 | 0.375 | – | – | 0.912 |" in text and "21.7" in text
    assert "judge IoU" in text
    summary["detection"]["roc_auc_interval"] = [0.2104, 0.58]
    assert "ROC AUC 0.393 (95 % interval over the cases 0.21-0.58)" in _markdown("/s.zarr", summary, None)
    summary["detection"]["by_fill"] = {"grey": {"cases": 4, "roc_auc": 0.5, "roc_auc_interval": [0.25, 0.75]},
                                       "noise": {"cases": 4, "roc_auc": None, "roc_auc_interval": [None, None]}}
    text = _markdown("/s.zarr", summary, None)
    assert "| grey | 4 | 0.5 | 0.25-0.75 |" in text and "| noise | 4 | – | – |" in text


def test_run_summary_tables_are_narrow():
    from flows.artifacts import run_summary_markdown

    stage = {"name": "parts", "status": "done", "seconds": 7.1, "message": "K = 8 categories over 48 images",
             "report": {"measures": [{"measure": "K", "value": 8}, {"measure": "pck@0.1", "value": 0.8432}]}}
    text = run_summary_markdown({"title": "bird-parts x", "corpus": "/c", "store": "/s.zarr", "seconds": 7.1,
                                 "wall_seconds": 9.0, "stages": [stage]}, "/tmp/r.html")
    assert "| parts | `pck@0.1` | 0.843 |" in text and "| seconds in stages | 7.1 |" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert max(line.count("|") for line in rows) <= 5            # at most four columns
