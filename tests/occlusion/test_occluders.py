"""Occluders hide exactly the recorded pixels; the record names what was hidden; bad input errors."""

import numpy as np
import pytest

from diffparts.occlusion.occluders import (GREY, OcclusionRecord, hidden_fractions, label_mask, occlude,
                                           random_box, resize_labels)


def _scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gt = np.zeros((16, 16), np.int64)
    gt[2:6, 2:6] = 1            # head, 16 px
    gt[6:14, 4:12] = 4          # breast, 64 px
    cats = np.zeros((8, 8), np.int16)  # a coarser discovered map (half size)
    cats[1:3, 1:3] = 2          # covers gt 1 exactly
    cats[3:7, 2:6] = 5          # covers gt 4
    return image, gt, cats


@pytest.mark.parametrize("fill", ["grey", "noise", "patch"])
def test_occluder_hides_exactly_the_recorded_pixels(fill):
    image, gt, cats = _scene()
    mask = label_mask(gt, [1], (16, 16))
    other = np.full((16, 16, 3), 7, np.uint8)
    out, rec = occlude(image, mask, fill, seed=3, target=[1], gt_labels=gt, categories=cats,
                       patch_source=(other, gt == 0), patch_from=9)
    changed = (out != image).any(-1)
    assert not changed[~rec.mask].any()                        # nothing outside the record moved
    assert np.array_equal(rec.mask, gt == 1) and rec.mask.sum() == 16
    if fill == "grey":
        assert (out[rec.mask] == GREY).all()
    if fill == "patch":
        assert (out[rec.mask] == 7).all() and rec.patch_from == 9
    assert rec.gt_parts == {1: 1.0}                             # head wholly hidden, breast untouched
    assert rec.categories == {2: 1.0}                           # the discovered category under it
    assert rec.fill == fill and rec.seed == 3 and rec.target == (1,)
    again = OcclusionRecord.from_json(rec.to_json(), rec.mask)
    assert again.gt_parts == rec.gt_parts and again.categories == rec.categories and again.fill == fill


def test_noise_is_seeded_and_fractions_are_partial():
    image, gt, cats = _scene()
    mask = np.zeros((16, 16), bool)
    mask[6:10, 4:12] = True                                     # half of the breast
    a, rec = occlude(image, mask, "noise", seed=5, gt_labels=gt, categories=cats)
    b, _ = occlude(image, mask, "noise", seed=5)
    c, _ = occlude(image, mask, "noise", seed=6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert rec.gt_parts == {4: 0.5}
    assert rec.categories == {5: 0.5}
    assert hidden_fractions(None, mask) == {}


def test_random_box_stays_in_the_image_and_touches_the_object():
    _, gt, _ = _scene()
    box = random_box(gt > 0, np.random.default_rng(1))
    assert box.any() and (box & (gt > 0)).any()
    ys, xs = np.nonzero(box)
    assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()   # a filled rectangle


def test_resize_labels_is_nearest():
    lab = np.array([[1, 2], [3, 4]])
    assert resize_labels(lab, (4, 4)).tolist()[0] == [1, 1, 2, 2]
    assert set(np.unique(resize_labels(np.arange(64).reshape(8, 8), (5, 3)))) <= set(range(64))


def test_bad_input_errors():
    image, gt, _ = _scene()
    with pytest.raises(ValueError, match="labels \\[7\\] are not in this image"):
        label_mask(gt, [7], (16, 16))
    with pytest.raises(ValueError, match="0 is background"):
        label_mask(gt, [0], (16, 16))
    with pytest.raises(ValueError, match="unknown fill 'blur'"):
        occlude(image, gt == 1, "blur")
    with pytest.raises(ValueError, match="mask is empty"):
        occlude(image, np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="needs patch_source"):
        occlude(image, gt == 1, "patch")
    with pytest.raises(ValueError, match="mask must be a \\(y, x\\) bool map"):
        occlude(image, np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="object mask is empty"):
        random_box(np.zeros((4, 4), bool), np.random.default_rng(0))


def test_object_fill_is_a_natural_leaf_or_branch_and_bad_fills_are_named():
    from diffparts.occlusion.occluders import fill_region, object_texture

    image, gt, _ = _scene()
    mask = label_mask(gt, [4], (16, 16))
    out = fill_region(image, mask, "object", np.random.default_rng(2))
    assert np.array_equal(out[~mask], image[~mask])
    tex = object_texture((32, 32), np.random.default_rng(5)).astype(int)
    r, g, b = tex[..., 0].mean(), tex[..., 1].mean(), tex[..., 2].mean()
    assert (g > r and g > b) or (r > g > b)                 # leaf green or bark brown
    assert tex.std() > 3                                     # a texture, not a flat fill
    with pytest.raises(ValueError, match="unknown fill 'smoke'"):
        fill_region(image, mask, "smoke", np.random.default_rng(0))


def test_background_control_moves_the_shape_off_the_object():
    from diffparts.occlusion.occluders import move_to_background

    _, gt, _ = _scene()
    shape = label_mask(gt, [1], (16, 16))
    moved = move_to_background(shape, gt > 0, np.random.default_rng(0))
    assert moved.sum() == shape.sum() and not (moved & (gt > 0)).any()
    with pytest.raises(ValueError, match="no background room"):
        move_to_background(shape, np.ones((16, 16), bool), np.random.default_rng(0))


def test_cover_shape_hides_the_part_without_tracing_it():
    """A leaf's outline over a part: it hides at least the asked share of the part, reaches
    beyond it (so its silhouette is not the part's), is pointed at both ends and is seeded."""
    from diffparts.occlusion.occluders import cover_shape

    part = np.zeros((48, 48), bool)
    part[20:28, 10:38] = True                                   # a long bar, 224 px
    shape = cover_shape(part, np.random.default_rng(5))
    assert (shape & part).sum() >= 0.9 * part.sum()
    assert (shape & ~part).sum() > 0.2 * part.sum()              # not the part's outline
    iou = (shape & part).sum() / (shape | part).sum()
    assert iou < 0.8
    assert np.array_equal(shape, cover_shape(part, np.random.default_rng(5)))
    assert not np.array_equal(shape, cover_shape(part, np.random.default_rng(6)))
    ys, xs = np.nonzero(shape)                                  # lies along the bar, pointed at its ends
    assert np.ptp(xs) > 1.5 * np.ptp(ys)
    columns = shape.sum(axis=0)
    ends = columns[[xs.min(), xs.max()]]
    assert ends.max() <= 0.34 * columns.max()
    full = cover_shape(part, np.random.default_rng(5), coverage=1.0)
    assert not (part & ~full).any() and full.sum() > shape.sum()
    dot = np.zeros((16, 16), bool)
    dot[7, 7] = True                                            # one pixel: still a leaf around it
    assert cover_shape(dot, np.random.default_rng(0))[7, 7]
    with pytest.raises(ValueError, match="non-empty"):
        cover_shape(np.zeros((8, 8), bool), np.random.default_rng(0))
    with pytest.raises(ValueError, match="coverage"):
        cover_shape(part, np.random.default_rng(0), coverage=0.0)


def test_occluder_mask_per_kind_of_case():
    """What each kind of case hides, as the stage asks for it (the maps at one size)."""
    from diffparts.occlusion.occluders import occluder_mask

    _, gt, cats = _scene()
    cats = resize_labels(cats, (16, 16))
    part = gt == 1
    assert np.array_equal(occluder_mask("part", [1], 0, gt, cats), part)
    cover = occluder_mask("cover", [1], 0, gt, cats)
    assert (cover & part).sum() >= 0.9 * part.sum() and (cover & ~part).any()
    assert np.array_equal(cover, occluder_mask("cover", [1], 0, gt, cats))          # seeded
    assert np.array_equal(occluder_mask("category", [2], 0, gt, cats), cats == 2)
    moved = occluder_mask("background", [1], 0, gt, cats)
    assert moved.sum() == part.sum() and not (moved & ((gt > 0) | (cats > 0))).any()
    box = occluder_mask("box", [], 0, gt, cats)
    assert box.any() and (box & (gt > 0)).any()
    with pytest.raises(ValueError, match="how='cover' needs the image's ground-truth part map"):
        occluder_mask("cover", [1], 0, None, cats)
    with pytest.raises(ValueError, match="unknown occluder kind 'leaf'"):
        occluder_mask("leaf", [1], 0, gt, cats)
