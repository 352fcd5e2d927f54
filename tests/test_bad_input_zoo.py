"""The bad-input zoo through the whole CLI pipeline (issue 12, "Done when").

Every hostile or broken image is named with its reason, the others finish every stage, nothing
outside the corpus is opened (an audit hook sees every ``open``), and nothing hangs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from diffparts.cli import main
from diffparts.corpus import SynthConfig, generate_birds
from diffparts.corpus.zoo import make_zoo
from diffparts.store import done_mask, failures, image_table, open_store

pytestmark = pytest.mark.flow

_OPENED: list[str] | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed: it records only while _OPENED is a list


@pytest.mark.timeout(400)
def test_zoo_through_extract_segment_parts(prefect_server, tiny_pipeline, tmp_path, capsys):
    global _OPENED
    birds = generate_birds(tmp_path / "birds", n=6, seed=0, config=SynthConfig(image_size=32))
    outside = tmp_path / "outside"
    expected = make_zoo(birds, outside)
    refused = {name: why for name, why in expected.items() if why}
    store = str(tmp_path / "zoo.zarr")
    _OPENED = []
    try:
        rc_extract = main(["extract", "--corpus", str(birds), "--model", str(tiny_pipeline[0]), "--store", store,
                           "--batch-size", "4", "--no-features"])
        extract_err = capsys.readouterr().err
        rc_segment = main(["segment", "--store", store, "--method", "ncut", "--tau", "0.99", "--max-depth", "3"])
        segment_out = json.loads(capsys.readouterr().out)
        rc_parts = main(["parts", "--store", store, "--k", "2", "--out", str(tmp_path / "pics")])
        parts = capsys.readouterr()
    finally:
        opened, _OPENED = _OPENED, None
    assert (rc_extract, rc_segment, rc_parts) == (1, 0, 0), (extract_err[-2000:], parts.err[-2000:])
    # every refused image is named with its reason, in the store and on the console
    root = open_store(store)
    recorded = {f["name"]: f["reason"] for f in failures(root, "attention")}
    assert set(recorded) == set(refused)
    for name, why in refused.items():
        assert why in recorded[name], (name, recorded[name])
        assert f"failed attention: {name} (image" in extract_err
    # the others finish every stage; the segment and parts stages say how many they left out
    kept = {row["index"] for row in image_table(root) if row["name"] not in refused}
    assert len(kept) == 6 + sum(not why for why in expected.values())
    for stage in ("attention", "segments", "parts"):
        done = done_mask(root, stage)
        assert {int(k) for k in done.nonzero()[0]} == kept, stage
    assert segment_out["left_out"] == len(refused) and segment_out["failed"] == 0
    assert json.loads(parts.out)["left_out"] == len(refused)
    assert f"{len(refused)} images left out" in parts.err
    # nothing outside the corpus was opened, neither the FIFO nor the bomb's pixels
    touched = {Path(p).resolve() for p in opened}
    assert any(p.name == "images.txt" for p in touched)
    forbidden = [outside.resolve(), Path("/etc/hostname").resolve(), Path("/dev/zero")]
    assert not [p for p in touched if any(p == f or p.is_relative_to(f) for f in forbidden)]
    assert (birds / "images" / "zoo" / "fifo.png").resolve() not in touched
