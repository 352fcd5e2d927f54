"""The appearance detector: does a category's region look like bird at all, and is it grainy
where no part is?

Constructed birds where the answer is known: 16 x 16, a textured sky (diagonal stripes), head
(category 1) with an eye at the top left, a barred body (2) and a chequered tail (3): a red
head, a brown body and a blue tail, each bird in its own shade; the classifier is trained on them with the categories as labels (what the
parts stage gives), cross-fitted, so every calibration value is that of an unseen bird.
"""

import numpy as np
import pytest
import zarr

from diffparts.occlusion import appearance as app
from diffparts.occlusion import split
from diffparts.occlusion.appearance import (AppearanceConfig, AppearanceReference, appearance_evidence,
                                            appearance_reference, grain_evidence, grain_map,
                                            train_classifier)
from diffparts.occlusion.calibrate import detector_regions, image_evidence, min_spread
from diffparts.occlusion.detect import DetectConfig, rank_evidence
from diffparts.occlusion.evidence import Calibrations, calibrate, family_threshold, leave_one_out_maxima
from diffparts.occlusion.layout import layout_prior
from diffparts.occlusion.occluders import GREY

K1 = 4
CONFIG = AppearanceConfig(receptive=5, width=16, steps=150, batch=8, lr=1e-2, folds=2, balanced=False, size=16)
DETECT = DetectConfig(method="appearance", appearance=CONFIG)


def _bird(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    labels = np.zeros((16, 16), np.int16)
    labels[2:7, 2:7] = 1
    labels[7:13, 4:12] = 2
    labels[9:14, 12:16] = 3
    image = np.empty((16, 16, 3), np.int32)
    image[:] = (150, 190, 220)
    image[(yy + xx) % 4 < 2] -= 30                                  # the sky's stripes
    head, body, tail = (np.array(c) + rng.integers(-20, 21, 3) for c in ((200, 50, 50), (140, 100, 60), (50, 60, 160)))
    image[labels == 1] = head
    image[3:5, 4:6] = 15                                            # the eye
    image[labels == 2] = body
    image[7:13:2, 4:12] = body + 50                                 # pale bars
    image[labels == 3] = tail
    image[(labels == 3) & ((yy + xx) % 2 == 0)] = 240              # chequer
    image += rng.integers(-16, 17, image.shape)                     # pixel noise: no bird is read perfectly
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _trained(n: int = 12):
    birds = [_bird(s) for s in range(n)]
    images = np.stack([b[0] for b in birds])
    labels = np.stack([b[1] for b in birds])
    fold = np.arange(n) % 2
    nets = tuple(train_classifier(images[fold != f], labels[fold != f], K1, CONFIG, seed=f) for f in range(2))
    return AppearanceReference(np.arange(n), fold, nets, K1, CONFIG), birds


def _evidence(image, labels, ref, exclude=None) -> dict:
    return {"grain": grain_evidence(image, labels, K1),
            "appearance": appearance_evidence(image, labels, K1, ref, exclude=exclude)}


@pytest.fixture(scope="module")
def trained():
    ref, birds = _trained()
    rows, pixels = {k: [] for k in DETECT.kinds}, {k: [] for k in DETECT.kinds}
    for i, (img, lab) in enumerate(birds):
        for kind, (values, dmap) in _evidence(img, lab, ref, exclude=i).items():
            rows[kind].append(values)
            pixels[kind].append(dmap[lab > 0])
    floors = [min_spread(k) for k in DETECT.kinds]
    cals = tuple((k, calibrate(rows[k], np.concatenate(pixels[k]), 0.95, range(len(birds)), f))
                 for k, f in zip(DETECT.kinds, floors))
    maxima = leave_one_out_maxima([np.asarray(rows[k]) for k in DETECT.kinds], floors)
    return ref, birds, Calibrations(cals, family_threshold(maxima, 0.1), 0.1)


def test_the_classifier_reads_unseen_birds_at_its_own_size():
    ref, _ = _trained(8)
    image, labels = _bird(100)
    p = ref.probabilities(image)
    assert p.shape == (K1, 16, 16) and np.allclose(p.sum(0), 1, atol=1e-5)
    assert (p.argmax(0) == labels).mean() > 0.8
    big = np.repeat(np.repeat(image, 2, 0), 2, 1)                   # the same bird at 32 px: read at 16, sized back
    q = ref.probabilities(big)
    assert q.shape == (K1, 32, 32) and np.allclose(q.sum(0), 1, atol=1e-5)
    assert (q.argmax(0) == np.repeat(np.repeat(labels, 2, 0), 2, 1)).mean() > 0.75


def test_a_grey_box_where_the_head_belongs_is_not_the_head(trained):
    ref, _, cals = trained
    image, labels = _bird(200)
    occluded = image.copy()
    occluded[labels == 1] = GREY                                    # position still says "head"
    det = rank_evidence(labels, _evidence(occluded, labels, ref), cals, DETECT)
    assert det.missing == (1,)
    assert det.occlusion_map[labels == 1].mean() > 0.5 and det.occlusion_map[labels > 1].mean() < 0.2
    assert rank_evidence(labels, _evidence(image, labels, ref), cals, DETECT).missing == ()


def test_noise_where_the_body_belongs_is_missing_by_its_texture(trained):
    ref, _, cals = trained
    image, labels = _bird(202)
    occluded = image.copy()
    occluded[labels == 2] = np.random.default_rng(0).integers(0, 256, ((labels == 2).sum(), 3))
    evidence = _evidence(occluded, labels, ref)
    det = rank_evidence(labels, evidence, cals, DETECT)
    assert det.missing == (2,)
    assert evidence["grain"][0][2] > 1.0 + grain_evidence(image, labels, K1)[0][2]     # noise: grain in every direction
    assert det.occlusion_map[labels == 2].mean() > 0.5
    by_kind = [rank_evidence(labels, evidence, cals, DetectConfig(method="appearance", map_kind=k)).occlusion_map
               for k in DETECT.kinds]
    assert np.array_equal(det.occlusion_map, by_kind[0] | by_kind[1])     # the default map: either kind's pixels


def test_a_tail_the_assignment_calls_background_is_looked_for_where_tails_lie(trained):
    import dataclasses

    ref, birds, cals = trained
    ref = dataclasses.replace(ref, layout=layout_prior([lab for _, lab in birds], K1))
    image, labels = _bird(203)
    tail = labels == 3
    occluded = image.copy()
    occluded[tail] = np.random.default_rng(1).integers(0, 256, (tail.sum(), 3))
    assigned = np.where(tail, 0, labels).astype(np.int16)          # the assignment called the noise background
    plain = rank_evidence(assigned, _evidence(occluded, assigned, ref), cals, DETECT)
    assert 3 not in plain.missing and plain.scores[3] == 0          # no region, no evidence
    regions, p = detector_regions(occluded, assigned, {"appearance": ref}, DETECT)
    assert np.array_equal(p, ref.probabilities(occluded))          # read once, handed on to the evidence
    assert np.array_equal(appearance_evidence(occluded, regions, K1, ref, probabilities=p)[0],
                          appearance_evidence(occluded, regions, K1, ref)[0], equal_nan=True)
    from scipy.ndimage import binary_dilation

    changed = regions != assigned
    assert (regions[tail] == 3).mean() > 0.5 and (regions[changed] == 3).all()
    assert not (changed & ~binary_dilation(tail, iterations=2)).any()   # at the tail's place, the classifier's view
    assert np.array_equal(regions[assigned > 0], assigned[assigned > 0])   # no bird pixel changes
    det = rank_evidence(regions, _evidence(occluded, regions, ref), cals, DETECT, assignment=assigned)
    assert det.missing == (3,) and np.array_equal(det.assigned, assigned)      # the plain assignment is kept
    assert np.array_equal(detector_regions(image, labels, {"appearance": ref}, DETECT)[0], labels)   # nothing lost
    other, none = detector_regions(occluded, assigned, {"appearance": ref}, DetectConfig(method="colour"))
    assert np.array_equal(other, assigned) and none is None        # other methods: as assigned


def test_an_occluder_on_the_background_raises_no_alarm(trained):
    ref, _, cals = trained
    image, labels = _bird(201)
    occluded = image.copy()
    occluded[0:2, 9:16] = GREY
    occluded[14:16, 0:4] = (64, 136, 54)                            # a leaf's green
    evidence = _evidence(occluded, labels, ref)
    assert rank_evidence(labels, evidence, cals, DETECT).missing == ()
    assert not evidence["appearance"][1][labels == 0].any() and not evidence["grain"][1][labels == 0].any()


def test_grain_is_texture_without_a_direction():
    yy, xx = np.mgrid[:24, :24]
    flat = np.full((24, 24, 3), 90, np.uint8)
    shaded = np.clip(np.stack([40 + 5 * xx + 3 * yy] * 3, -1), 0, 255).astype(np.uint8)      # a linear ramp
    edge = np.where((xx > 11)[..., None], 230, 20).astype(np.uint8) * np.ones(3, np.uint8)  # a sharp outline
    stripes = np.where(((xx + yy) % 4 < 2)[..., None], 200, 40).astype(np.uint8) * np.ones(3, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (24, 24, 3)).astype(np.uint8)
    assert grain_map(flat).max() == 0 and grain_map(shaded)[2:-2, 2:-2].max() < 1e-5
    assert grain_map(edge).max() < 1e-5 and grain_map(stripes)[2:-2, 2:-2].max() < 1e-5   # constant along itself
    assert np.median(grain_map(noise)) > 0.5                                  # changes in every direction
    beside = flat.copy()
    beside[:, 12:] = noise[:, 12:]                                            # noise from column 12 on
    labels = (xx >= 12).astype(np.int16)
    own, any_direction = grain_map(beside, 1, labels), grain_map(beside, 1)
    assert (own >= any_direction).all() and (own[:, 12] > any_direction[:, 12]).sum() >= 12   # the border column:
    assert np.array_equal(own[:, 14:], any_direction[:, 14:])                 # across it, flat made noise smoother
    assert np.array_equal(own[:, :11], any_direction[:, :11])                 # away from the border: the same
    dots = flat.copy()
    dots[::6, ::6] = 250                                                      # isolated specks are grain too
    assert grain_map(dots)[6, 6] > 0.1 and grain_map(dots).shape == (24, 24)


def test_a_calibrated_image_is_read_by_the_fold_that_never_saw_it(trained):
    ref, birds, _ = trained
    image = birds[3][0]
    only = ref.probabilities(image, exclude=3)
    unseen = ref.nets[int(ref.fold[3])]
    import torch

    with torch.no_grad():
        expected = unseen(app._tensor(image[None])).softmax(1)[0].numpy()
    assert np.allclose(only, expected, atol=1e-6)
    assert not np.allclose(only, ref.probabilities(image), atol=1e-4)           # the mean of both folds
    assert np.isnan(appearance_evidence(image, birds[3][1], K1, ref)[0][0])     # background has no evidence


def test_appearance_reference_from_a_store_is_cached(tmp_path, monkeypatch):
    import dataclasses

    birds = [_bird(s) for s in range(8)]
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    root["parts/labels"] = np.stack([lab for _, lab in birds])
    root["parts/prevalence"] = np.ones(K1, np.float32)
    root["parts/centers"] = np.zeros((K1 - 1, 2), np.float32)    # the parts fit the cache is keyed on
    monkeypatch.setattr(split, "training_images", lambda r: np.array([0, 1, 2, 4, 5, 6]))     # 3, 7 held out
    loads = []
    config = AppearanceConfig(receptive=3, width=8, steps=5, folds=2, images=5, size=16)

    def load(i):
        loads.append(i)
        return birds[i][0]

    ref = appearance_reference(root, load, config, seed=1)
    assert len(ref.images) == 5 and set(ref.images) <= {0, 1, 2, 4, 5, 6} and sorted(set(ref.fold)) == [0, 1]
    assert len(ref.nets) == 2 and ref.n_categories == K1
    assert ref.layout is not None and ref.layout.images == 5                                  # the same images' maps
    assert appearance_reference(root, load, config, seed=1) is ref and len(loads) == 5       # trained once
    assert appearance_reference(root, load, config, seed=2) is not ref
    values, dmap = image_evidence("appearance", *birds[int(ref.images[0])], K1, {"appearance": ref}, DETECT,
                                  index=int(ref.images[0]))
    assert values.shape == (K1,) and dmap.shape == (16, 16) and np.isfinite(values[1:]).all()
    values, dmap = image_evidence("grain", *birds[0], K1, {}, DETECT)                    # no model needed
    assert np.allclose(values, grain_evidence(*birds[0], K1)[0], equal_nan=True)
    with pytest.raises(ValueError, match="appearance reference"):
        image_evidence("appearance", *birds[0], K1, {}, DETECT)
    assert appearance_reference(root, load, dataclasses.replace(config, lost_background=None), seed=1).layout is None
    monkeypatch.setattr(split, "training_images", lambda r: np.array([0, 1, 2]))    # fewer images than folds
    assert len(appearance_reference(root, load, AppearanceConfig(steps=2, folds=4, size=16), seed=3).nets) == 3
    monkeypatch.setattr(split, "training_images", lambda r: np.array([5]))    # one: trained on it, not cross-fitted
    one = appearance_reference(root, load, AppearanceConfig(steps=2, folds=2, size=16), seed=3)
    assert len(one.nets) == 1 and list(one.images) == [5]
    assert np.allclose(one.probabilities(birds[5][0], exclude=5), one.probabilities(birds[5][0]))
    monkeypatch.setattr(split, "training_images", lambda r: np.array([], int))
    with pytest.raises(ValueError, match="needs a training image"):
        appearance_reference(root, load, AppearanceConfig(folds=2), seed=4)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="receptive"):
        AppearanceConfig(receptive=4)
    with pytest.raises(ValueError, match="folds"):
        AppearanceConfig(folds=1)
    with pytest.raises(ValueError, match="size"):
        AppearanceConfig(size=3)
    with pytest.raises(ValueError, match="unknown appearance statistic"):
        AppearanceConfig(statistic="colour")
    with pytest.raises(ValueError, match="unknown detection method"):
        DetectConfig(method="looks")
    with pytest.raises(ValueError, match="map_kind"):
        DetectConfig(method="appearance", map_kind="repaint")
    with pytest.raises(ValueError, match="grain_quantile"):
        AppearanceConfig(grain_quantile=1.0)
    with pytest.raises(ValueError, match="grain_offset"):
        AppearanceConfig(grain_offset=-1.0)
    with pytest.raises(ValueError, match="lost_background"):
        AppearanceConfig(lost_background=0.0)
    with pytest.raises(ValueError, match="lost_share"):
        AppearanceConfig(lost_share=2.0)
    assert DetectConfig(method="appearance").kinds == ("grain", "appearance")
    from diffparts.occlusion.calibrate import pixel_quantile
    assert pixel_quantile("grain", DetectConfig()) == 0.99 and pixel_quantile("appearance", DetectConfig()) == 0.95
    assert DetectConfig(method="appearance", appearance={"receptive": 7}).appearance.receptive == 7
