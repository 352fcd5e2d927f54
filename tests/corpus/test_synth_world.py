"""The part world (corpus.synth_world): captions name every visible part, close-ups show their
part, scenes have no bird, shape variants change the masks, and the default birds are unchanged."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffparts.cli import main
from diffparts.corpus import PART_NAMES, SynthConfig, generate_birds, open_corpus
from diffparts.corpus.synth_caption import PART_WORLD_WORDS
from diffparts.corpus.synth_render import _render_bird
from diffparts.corpus.synth_species import PART_INDEX, SHAPE_VARIANTS, _draw_shape
from diffparts.corpus.synth_world import PartWorldConfig, _visible_parts, read_image_kinds, render_item

SMALL = SynthConfig(image_size=64, n_classes=4)
WORLD = PartWorldConfig(closeup_share=0.4, scene_share=0.15)

# Decoded pixels and metadata of generate_birds(6 images, seed 5, SMALL), as the default birds
# were before the part world existed (commit 41dd9cb): the default corpus must not move.
DEFAULT_DIGEST = "59071e876673229a65de738ea3f0402d12f61b6642fbac787285698ba44dc3fa"


def _pixel_digest(root):
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return generate_birds(tmp_path_factory.mktemp("world"), 30, 0, SMALL, WORLD)


def _records(root):
    kinds = read_image_kinds(root)
    for rec in open_corpus(root):
        mask = np.asarray(Image.open(rec.part_mask_path))
        yield rec, kinds[rec.image_id], mask


def test_default_birds_unchanged(tmp_path):
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        root = generate_birds(d, 6, 5, SMALL)
        assert not (root / "image_kinds.txt").exists()
        assert _pixel_digest(root) == DEFAULT_DIGEST


def test_every_kind_is_written_and_read(world):
    kinds = read_image_kinds(world)
    assert {k for k, _ in kinds.values()} == {"bird", "closeup", "scene"}
    ds = open_corpus(world)
    assert len(ds) == 30 == len(kinds)
    assert ds.class_names[5] == "005.No_bird"
    assert len(open_corpus(world, split="train")) + len(open_corpus(world, split="test")) == 30
    for rec, (kind, part), mask in _records(world):
        assert (rec.class_name == "005.No_bird") == (kind == "scene")
        fg = np.asarray(Image.open(rec.mask_path))
        np.testing.assert_array_equal(fg > 0, mask > 0)
        assert mask.shape == (64, 64) and np.asarray(Image.open(rec.path)).shape == (64, 64, 3)
        vis = rec.keypoints[:, 2] == 1
        assert (rec.keypoints[~vis] == 0).all()
        assert ((rec.keypoints[vis, :2] >= 0) & (rec.keypoints[vis, :2] < 64)).all()
        xi, yi = rec.keypoints[vis, :2].astype(int).T
        assert (mask[yi, xi] > 0).all()          # a visible keypoint lies on the bird
        assert set(re.findall(r"[a-z]+", rec.caption)) <= set(PART_WORLD_WORDS)


def test_bird_captions_name_every_visible_part(world):
    n = 0
    for rec, (kind, _), mask in _records(world):
        if kind != "bird":
            continue
        n += 1
        words = set(re.findall(r"[a-z]+", rec.caption))
        visible = _visible_parts(mask, WORLD)
        assert len(visible) >= 5
        for name in PART_NAMES:
            # named exactly when visible (a part of a few pixels is neither named nor needed)
            assert (name in words) == (name in visible), (name, rec.caption)
        # a beak is named with its shape, a tail too
        if "beak" in visible:
            assert re.search(r"\b(short|long|hooked) (\w+ )?\w+ beak\b", rec.caption), rec.caption
        if "tail" in visible:
            assert re.search(r"\b(fanned|forked) ", rec.caption), rec.caption
    assert n >= 10


def test_closeups_show_their_part(world):
    n = 0
    for rec, (kind, part), mask in _records(world):
        if kind != "closeup":
            continue
        n += 1
        assert rec.caption.startswith("a close-up of ") and rec.caption.endswith(f" bird {part}")
        counts = np.bincount(mask.ravel(), minlength=len(PART_NAMES) + 1)
        counts[0] = 0
        assert counts.argmax() == PART_INDEX[part]             # the part is the largest part
        assert counts[PART_INDEX[part]] >= 0.1 * mask.size     # and fills a good share of the frame
        x, y, w, h = rec.bbox
        assert w > 0 and h > 0
    assert n >= 5


def test_scenes_have_no_bird(world):
    n = 0
    for rec, (kind, _), mask in _records(world):
        if kind != "scene":
            continue
        n += 1
        assert not mask.any() and not rec.keypoints.any()
        assert rec.bbox == (0.0, 0.0, 64.0, 64.0)
        assert "bird" not in rec.caption and rec.caption.startswith("a photo of ")
    assert n >= 2


def test_closeup_mask_is_the_zoomed_part():
    # the close-up of image i is the same bird as a whole render of the same draws: its part
    # seen at the crop's zoom has (zoom^2 times) the part's pixels of the whole render
    cfg = SynthConfig(image_size=64, n_classes=4, crop_prob=0.0)
    for i in range(12):
        rng = np.random.default_rng((3, i))
        state = rng.bit_generator.state
        img, mask, kp, caption, kind, part = render_item(rng, i % 4, "closeup", i % 8, cfg, WORLD)
        if kind != "closeup":
            continue
        rng.bit_generator.state = state
        shape = _draw_shape(rng, i % 4, WORLD.shape_swap_prob)
        _, whole, _, _ = _render_bird(rng, i % 4, cfg, shape)
        # the close-up's part pixels are at most the whole part's, zoomed (at most 6x)
        small = (whole == PART_INDEX[part]).sum()
        big = (mask == PART_INDEX[part]).sum()
        assert 0 < big <= 36 * small * 1.2 + 20
        assert big > 1.5 * small        # it is zoomed in
        return
    pytest.fail("no close-up among 12 draws")


@pytest.mark.parametrize("kind,more,less,label", [
    ("beak", "long", "short", "beak"),
    ("crest", "crest", "none", "head"),
    ("tail", "fan", "fork", "tail"),
])
def test_shape_variants_change_the_mask(kind, more, less, label):
    cfg = SynthConfig(image_size=64, crop_prob=0.0)
    base = {"beak": "short", "tail": "fan", "crest": "none"}
    for seed in range(4):
        masks = {}
        for variant in (more, less):
            rng = np.random.default_rng((7, seed))
            _, masks[variant], _, _ = _render_bird(rng, seed, cfg, {**base, kind: variant})
        a, b = (masks[v] == PART_INDEX[label] for v in (more, less))
        assert a.sum() > b.sum(), (seed, a.sum(), b.sum())
        # the same pose: the parts away from the varied one are the same (but for a few pixels
        # where the supersample majority at a shared border tips the other way)
        for other in ("head", "beak", "wing") if kind == "tail" else ("breast", "belly", "legs", "tail"):
            diff = (masks[more] == PART_INDEX[other]) != (masks[less] == PART_INDEX[other])
            assert diff.sum() <= 4, (other, diff.sum())
    assert set(SHAPE_VARIANTS[kind]) >= {more, less}


def test_same_seed_same_world_and_prefix_stable(tmp_path):
    a = generate_birds(tmp_path / "a", 5, 2, SMALL, WORLD)
    b = generate_birds(tmp_path / "b", 5, 2, SMALL, WORLD)
    c = generate_birds(tmp_path / "c", 9, 2, SMALL, WORLD)
    assert _pixel_digest(a) == _pixel_digest(b)
    first = (a / "images.txt").read_text().splitlines()[0].split()[1]
    assert (a / "images" / first).read_bytes() == (c / "images" / first).read_bytes()


def test_bad_config_and_kinds_file(tmp_path):
    with pytest.raises(ValueError, match="closeup_share"):
        PartWorldConfig(closeup_share=0.8, scene_share=0.5)
    with pytest.raises(ValueError, match="closeup_parts"):
        PartWorldConfig(closeup_parts=("tentacle",))
    with pytest.raises(FileNotFoundError, match="image_kinds.txt"):
        read_image_kinds(tmp_path)
    (tmp_path / "image_kinds.txt").write_text("1 bird -\n2 closeup -\n")
    with pytest.raises(ValueError, match="line 2"):
        read_image_kinds(tmp_path)


def test_cli_world_parts(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["corpus", "synth", "--out", str(out), "--n", "6", "--size", "32", "--classes", "2",
                 "--world", "parts", "--scene-share", "0.5"]) == 0
    assert "wrote 6 part-world images" in capsys.readouterr().out
    kinds = read_image_kinds(out)
    assert len(kinds) == 6 and any(k == "scene" for k, _ in kinds.values())
    assert main(["corpus", "synth", "--out", str(tmp_path / "x"), "--n", "2", "--scene-share", "0.5"]) == 2
    assert "--world parts" in capsys.readouterr().err


def test_plain_closeup_captions_keep_the_images(tmp_path):
    # plain_share only changes close-ups' captions ("a close-up of a bird head"): same pixels,
    # same kinds; every other caption is the same
    plain = PartWorldConfig(closeup_share=0.6, scene_share=0.1, plain_share=0.5)
    rich = PartWorldConfig(closeup_share=0.6, scene_share=0.1)
    a = generate_birds(tmp_path / "a", 16, 4, SMALL, plain)
    b = generate_birds(tmp_path / "b", 16, 4, SMALL, rich)
    for sub in ("images", "part_segmentations"):
        for p in sorted((b / sub).rglob("*.png")):
            assert (a / sub / p.relative_to(b / sub)).read_bytes() == p.read_bytes()
    assert read_image_kinds(a) == read_image_kinds(b)
    kinds = read_image_kinds(a)
    caps = {rec.image_id: rec.caption for rec in open_corpus(a)}
    rich_caps = {rec.image_id: rec.caption for rec in open_corpus(b)}
    n_plain = 0
    for image_id, (kind, part) in kinds.items():
        if caps[image_id] == rich_caps[image_id]:
            continue
        assert kind == "closeup"
        assert caps[image_id] == (f"a close-up of bird {part}" if part == "legs" else f"a close-up of a bird {part}")
        n_plain += 1
    assert 0 < n_plain < sum(k == "closeup" for k, _ in kinds.values())
    with pytest.raises(ValueError, match="plain_share"):
        PartWorldConfig(plain_share=1.5)


def test_cli_plain_share_needs_the_part_world(tmp_path, capsys):
    assert main(["corpus", "synth", "--out", str(tmp_path / "c"), "--n", "2", "--plain-share", "0.3"]) == 2
    assert "--plain-share need --world parts" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
