"""Small corpora do not fail the occlusion stage: a seeded share is held out, or it is skipped."""

import numpy as np
import pytest

from diffparts.occlusion.split import held_out_images


class _Rec:
    def __init__(self, name, is_train):
        self.name, self.is_train = name, is_train


def _root(n_labelled, n=None):
    n = n_labelled if n is None else n
    done = np.zeros(n, bool)
    done[:n_labelled] = True
    return {"parts/done": done}


@pytest.fixture(autouse=True)
def _done_mask(monkeypatch):
    import diffparts.store as store

    monkeypatch.setattr(store, "done_mask", lambda r, stage: np.asarray(r[f"{stage}/done"]))


def test_all_training_corpus_holds_out_a_seeded_share():
    root = _root(16)
    names = [f"b{i}" for i in range(16)]
    records = {n: _Rec(n, True) for n in names}              # 16 species of one bird each: all training
    held, rule = held_out_images(root, records, names, seed=6060)
    assert held.sum() == 8 and "the corpus's split holds out none" in rule
    again, _ = held_out_images(root, records, names, seed=6060)
    assert np.array_equal(held, again)                        # seeded


def test_corpus_split_is_used_and_one_image_leaves_nothing():
    root = _root(4)
    names = ["a", "b", "c", "d"]
    records = {n: _Rec(n, n in "ab") for n in names}
    held, rule = held_out_images(root, records, names)
    assert held.tolist() == [False, False, True, True] and "train_test_split" in rule
    one = _root(1, 2)
    held, rule = held_out_images(one, {"a": _Rec("a", True), "b": _Rec("b", True)}, ["a", "b"])
    assert not held.any() and "none can be held out" in rule


def test_synthetic_corpus_of_one_bird_per_species_keeps_a_test_split(tmp_path):
    from diffparts.corpus import SynthConfig, generate_birds

    out = generate_birds(tmp_path / "small", 4, 6060, SynthConfig(image_size=32, n_classes=4))
    split = [int(line.split()[1]) for line in (out / "train_test_split.txt").read_text().split("\n") if line]
    assert split == [1, 0, 1, 0]                             # every other species' bird is held out
    big = generate_birds(tmp_path / "big", 8, 6060, SynthConfig(image_size=32, n_classes=4))
    split = [int(line.split()[1]) for line in (big / "train_test_split.txt").read_text().split("\n") if line]
    assert split == [1, 0, 1, 0, 1, 0, 1, 0]                 # the usual CUB habit, unchanged
