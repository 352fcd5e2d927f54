"""Pictures as data URIs and the self-contained HTML report (src/diffparts/report)."""

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from diffparts.report import decode_data_uri, png_data_uri, render_report, write_report


def _noise(side: int, seed: int = 0) -> np.ndarray:
    """Incompressible RGB noise: the hardest picture to fit a byte budget."""
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def _png(uri: str) -> Image.Image:
    img = Image.open(io.BytesIO(decode_data_uri(uri)))
    assert img.format == "PNG"
    return img


def test_data_uri_from_array_path_and_image(tmp_path):
    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:, 30:] = (255, 0, 0)
    Image.fromarray(picture).save(tmp_path / "p.png")
    for source in (picture, tmp_path / "p.png", str(tmp_path / "p.png"), Image.fromarray(picture)):
        img = _png(png_data_uri(source))
        assert img.size == (60, 40)                       # small enough: kept as it is
        assert np.array_equal(np.asarray(img.convert("RGB")), picture)


def test_data_uri_downscales_to_max_side():
    img = _png(png_data_uri(np.zeros((300, 900, 3), np.uint8), max_side=90))
    assert img.size == (90, 30)


@pytest.mark.parametrize("budget", [20_000, 60_000, 300_000])
def test_data_uri_respects_the_byte_budget(budget):
    picture = _noise(512)
    full = len(base64.b64encode(np.ascontiguousarray(picture).tobytes()))
    assert full > budget                                  # noise does not fit as it is
    uri = png_data_uri(picture, max_side=512, max_bytes=budget)
    assert len(uri) <= budget
    img = _png(uri)
    assert 16 <= max(img.size) <= 512 and img.size[0] == img.size[1]   # aspect kept


def test_data_uri_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        png_data_uri(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="max_bytes"):
        png_data_uri(np.zeros((4, 4, 3), np.uint8), max_bytes=10)
    with pytest.raises(ValueError, match="not a PNG data URI"):
        decode_data_uri("http://example.com/a.png")


def _run(tmp_path, pictures):
    return {
        "title": "run <b>1</b> & co", "flow_run_id": "abc", "dashboard_url": "http://127.0.0.1:4200/runs/flow-run/abc",
        "corpus": "/data/<corpus>", "store": "s.zarr", "model": "toy", "started": "2026-01-01T00:00:00",
        "seconds": 12.5,
        "stages": [
            {"name": "extract", "status": "done", "seconds": 3.0, "message": "",
             "summary": {"written": 6, "note": "<script>alert(1)</script>"},
             "report": {"measures": [{"measure": "written", "value": 6}, {"measure": "bytes", "value": 1.5e6}],
                        "tables": {}, "pictures": []}},
            {"name": "parts", "status": "done", "seconds": 5.0, "message": "K = 3",
             "summary": {}, "report": {"measures": [{"measure": "nmi", "value": 0.31234}],
                                       "tables": {"prevalence <x>": [{"category": 0, "prevalence": 1.0},
                                                                     {"category": 1, "prevalence": float("nan")}]},
                                       "pictures": pictures}},
            {"name": "embeddings", "status": "not run", "seconds": 0.0, "message": "to_stage=parts", "summary": {},
             "report": {}},
        ],
    }


def test_report_is_self_contained(tmp_path):
    for i in range(2):
        Image.fromarray(_noise(64, i)).save(tmp_path / f"pic{i}.png")
    pictures = [{"title": "overlays", "path": str(tmp_path / "pic0.png")},
                {"title": "gallery", "path": str(tmp_path / "pic1.png")}]
    path = write_report(tmp_path / "out" / "report.html", _run(tmp_path, pictures))
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert 'src="http' not in text and "file://" not in text and "<script" not in text
    assert "<link" not in text and "@import" not in text and "url(" not in text
    sources = re.findall(r'<img[^>]*src="([^"]*)"', text)
    assert len(sources) == 2
    for src in sources:
        assert _png(src).size == (64, 64)                # every picture inline and a real PNG
    assert "0.3123" in text and "1.5e+06" in text        # measures, 4 significant digits
    assert '<a href="http://127.0.0.1:4200/runs/flow-run/abc">' in text


def test_report_escapes_every_string(tmp_path):
    text = render_report(_run(tmp_path, []))
    assert "<b>1</b>" not in text and "run &lt;b&gt;1&lt;/b&gt; &amp; co" in text
    assert "/data/&lt;corpus&gt;" in text and "prevalence &lt;x&gt;" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text


def test_report_notes_a_missing_picture(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    pictures = [{"title": "gone", "path": str(tmp_path / "nope.png")},
                {"title": "broken", "path": str(tmp_path / "broken.png")},
                {"title": "empty", "path": None}]
    text = render_report(_run(tmp_path, pictures))
    assert "gone: picture not found" in text
    assert "broken: picture could not be read" in text
    assert "empty: no picture file given" in text
    assert "<img" not in text


def test_report_of_a_minimal_record(tmp_path):
    path = write_report(tmp_path / "r.html", {"title": "x", "stages": []})
    assert "<h1>x</h1>" in path.read_text()
