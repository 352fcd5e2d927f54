"""The report and the pictures a new user reads (issue 21): each measure once, a long per-image
table summarised and folded, the header's seconds those of the terminal, a palette that keeps
K part colours distinct, the segment stage's picture."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from diffparts.parts.gallery import overlay_grid, palette
from diffparts.report import render_report
from diffparts.report.document import folded_table, unique_measures
from diffparts.report.images import decode_data_uri, png_data_uri


def _measure_names(html: str) -> list[list[str]]:
    """The first column of every 'measures' table of a report."""
    out = []
    for table in re.findall(r"<table><caption>measures</caption>(.*?)</table>", html):
        out.append(re.findall(r"<tr><td>([^<]*)</td>", table))
    return out


def test_each_measure_shows_once():
    # what the pipeline's records held: the headline (K, detection AUC, images) and the stage's own
    measures = [{"measure": "K", "value": 8}, {"measure": "images", "value": 48},
                {"measure": "detection AUC", "value": 0.393}, {"measure": "k", "value": 8},
                {"measure": "done", "value": 48}, {"measure": "roc_auc", "value": 0.393},
                {"measure": "skipped", "value": 0}, {"measure": "images", "value": 48},
                {"measure": "detection roc_auc", "value": 0.393}]
    names = [m["measure"] for m in unique_measures(measures)]
    assert names == ["K", "images", "detection AUC", "skipped"]
    # a different quantity under a related name stays
    assert [m["measure"] for m in unique_measures([{"measure": "images", "value": 48},
                                                  {"measure": "done", "value": 0}])] == ["images", "done"]
    run = {"stages": [{"name": "parts", "status": "done", "seconds": 1.0, "report": {"measures": measures}}]}
    for names in _measure_names(render_report(run)):
        assert len({n.lower() for n in names}) == len(names), names


def test_a_long_table_is_summarised_and_folded():
    rows = [{"name": f"bird_{i}.png", "miou": i / 48, "segments": 20 + i % 5} for i in range(48)]
    html = folded_table(rows, "segments per image")
    summary, _, folded = html.partition("<details>")
    assert "48 rows, summarised" in summary and "bird_0.png" not in summary
    assert "<td>miou</td>" in summary and "0.4896" in summary           # the mean of i/48 over 48 rows
    assert folded.count("<tr>") == 49 and not folded.startswith(" open")  # closed, every row inside
    assert "<details>" not in folded_table(rows[:5], "short")


def test_header_seconds_are_the_terminals():
    from diffparts.pipeline import summary_lines

    stages = [{"name": "extract", "status": "done", "seconds": 6.5, "summary": {"images": 4}},
              {"name": "segment", "status": "done", "seconds": 4.1, "summary": {}}]
    result = {"stages": stages, "seconds": 10.6, "wall_seconds": 12.25, "report": "r.html"}
    terminal = "\n".join(summary_lines(result))
    html = render_report({"seconds": 10.6, "wall_seconds": 12.25, "stages": stages})
    assert re.search(r"^total +10\.6  s in stages \(12\.[23] s in the flow\)$", terminal, re.M)
    assert "<th>seconds in stages</th><td>10.6</td>" in html
    assert re.search(r"<th>seconds in the flow</th><td>12\.[23]</td>", html)


def _overlay_sheet(k: int) -> Image.Image:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(16)]   # photos: many colours
    part_map = np.zeros((16, 16), int)
    for c in range(1, k):
        part_map[(c - 1) * 2:(c - 1) * 2 + 2, 2:14] = c
    return overlay_grid(images, [part_map] * 16, k)


def test_palette_keeps_k_distinct_part_colours():
    k = 9
    sheet = _overlay_sheet(k)
    uri = png_data_uri(sheet, max_bytes=300_000)                           # too big in full colour: palette
    png = Image.open(io.BytesIO(decode_data_uri(uri)))
    assert png.mode == "P"
    colours = {tuple(c) for c in np.asarray(png.convert("RGB")).reshape(-1, 3)}
    expected = [tuple(int(v) for v in c) for c in palette(k)]
    assert len(set(expected)) == k
    assert all(c in colours for c in expected)                             # each legend colour exact: K distinct


def test_segment_picture_draws_each_image():
    from diffparts.report.segments import segment_grid, segment_tile

    labels = np.tile(np.arange(4), (4, 1))                                 # 4 vertical segments
    image = np.full((32, 32, 3), 100, np.uint8)
    tile = np.asarray(segment_tile(image, labels, cell=64))
    assert tile.shape == (64, 64, 3)
    assert (tile[:, 16] == 255).all() and not (tile[:, 8] == 255).all()    # a white boundary between segments
    assert len({tuple(tile[32, x]) for x in (4, 20, 36, 52)}) == 4         # neighbours coloured apart
    grid = segment_grid([image] * 5, [labels] * 5, columns=4, cell=64)
    assert grid.size == (256, 128)
