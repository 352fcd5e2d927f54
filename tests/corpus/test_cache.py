"""corpus.cache: a CUB-layout corpus is read once per process while its folder is unchanged."""

from __future__ import annotations

import os

import pytest

from diffparts.corpus import SynthConfig, generate_birds, open_corpus
from diffparts.corpus import cache


@pytest.fixture()
def birds(tmp_path):
    cache.forget()
    yield generate_birds(tmp_path / "birds", n=4, seed=0, config=SynthConfig(image_size=32))
    cache.forget()


def test_an_unchanged_corpus_is_not_checked_again_and_a_changed_one_is(birds, monkeypatch):
    import diffparts.corpus.cub as cub

    monkeypatch.setattr(cache, "SETTLE_NS", -10**12)                    # trust the just-written files
    first = open_corpus(birds)
    calls = []
    real = cub.corpus_file
    monkeypatch.setattr(cub, "corpus_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = open_corpus(birds)
    assert calls == []                                                   # no file checked again
    assert [r.name for r in again] == [r.name for r in first] and again.part_legend == first.part_legend
    again.records[0].keypoints[0, 0] = -1.0                              # a caller's edit stays its own
    assert open_corpus(birds).records[0].keypoints[0, 0] != -1.0
    # an image removed: its folder changed, so the corpus is read again and the image is refused
    gone = first.records[1].path
    os.remove(gone)
    third = open_corpus(birds)
    assert calls and third.records[1].refused and not first.records[1].refused
    # a metadata file edited in place (new box) is read again too
    boxes = birds / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[0] = " ".join(lines[0].split()[:1] + ["1", "2", "3", "4"])
    boxes.write_text("\n".join(lines) + "\n")
    os.utime(boxes, ns=(os.stat(boxes).st_atime_ns, os.stat(boxes).st_mtime_ns + 10**9))
    assert open_corpus(birds).records[0].bbox == (1.0, 2.0, 3.0, 4.0)


def test_a_corpus_written_a_moment_ago_is_read_every_time(birds, monkeypatch):
    """Files younger than SETTLE_NS: a same-size edit within one timestamp tick would not show."""
    import diffparts.corpus.cub as cub

    monkeypatch.setattr(cache, "SETTLE_NS", 10**15)                     # every file counts as just written
    open_corpus(birds)
    calls = []
    real = cub.corpus_file
    monkeypatch.setattr(cub, "corpus_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    open_corpus(birds)
    assert calls
