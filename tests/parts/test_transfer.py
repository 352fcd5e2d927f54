"""Keypoint transfer and its evaluation (diffparts.parts.transfer, diffparts.parts.evaluate)."""

import numpy as np
import pytest

from diffparts.parts.evaluate import evaluate_parts
from diffparts.parts.synthetic import draw_object
from diffparts.parts.transfer import part_boxes, relative_flip, transfer_points


def _parts(box, size=16, flip=False):
    seg = draw_object(size, box, flip=flip)
    return np.select([seg == 2, seg == 3, seg == 4], [1, 2, 3], 0)


def test_transfer_by_relative_position_in_the_part():
    src, tgt = _parts((2, 2, 8, 8)), _parts((6, 4, 8, 10))
    # source head: map x 2..4, y 2..4 -> centre (3.5, 3.5) map = (7, 7) image (32 px for 16)
    pred, used = transfer_points(src, tgt, [[7.0, 7.0]], (4, 4, 16, 16), (12, 8, 16, 20), (32, 32), (32, 32))
    # target head: x 6..8, y 4..7 -> centre (7.5, 6) map = (15, 12) image
    np.testing.assert_allclose(pred[0], [15.0, 12.0])
    assert used[0] == 1


def test_background_and_missing_parts_use_the_object_box():
    src = _parts((2, 2, 8, 8))
    tgt = _parts((4, 4, 8, 8))
    tgt[tgt == 3] = 1                               # target has no body category
    pred, used = transfer_points(src, tgt, [[6.0, 8.0], [1.0, 1.0]], (2, 2, 8, 8), (4, 4, 8, 8), (16, 16),
                                 (16, 16), flip=False)
    np.testing.assert_allclose(pred, [[8.0, 10.0], [3.0, 3.0]])   # shifted with the box
    assert used.tolist() == [0, 0]


def test_flip_mirrors_within_the_part():
    src, tgt = _parts((2, 2, 8, 8)), _parts((2, 2, 8, 8))
    pred, _ = transfer_points(src, tgt, [[2.5, 2.5]], (2, 2, 8, 8), (2, 2, 8, 8), (16, 16), (16, 16),
                              flip=True, snap=False)
    np.testing.assert_allclose(pred[0], [4.5, 2.5])     # head box x 2..5: u 1/6 -> 5/6


def test_relative_flip_from_the_layout():
    a, b = _parts((2, 2, 8, 8)), _parts((3, 1, 10, 9), flip=True)
    assert relative_flip(a, b, (2, 2, 10, 10), (3, 1, 13, 10))
    assert not relative_flip(a, _parts((3, 1, 10, 9)), (2, 2, 10, 10), (3, 1, 13, 10))
    # auto: the source head's left edge lands on the mirrored head's right edge
    pred, used = transfer_points(a, b, [[2.5, 3.5]], (2, 2, 8, 8), (3, 1, 10, 9), (16, 16), (16, 16), snap=False)
    hb = part_boxes(b)[1]
    assert used[0] == 1
    np.testing.assert_allclose(pred[0], [hb[2] - (0.5 / 3) * (hb[2] - hb[0]), hb[1] + 1.5 / 3 * (hb[3] - hb[1])])


def test_part_boxes():
    boxes = part_boxes(_parts((2, 2, 8, 8)))
    np.testing.assert_allclose(boxes[1], [2, 2, 5, 5])
    np.testing.assert_allclose(boxes[3], [2, 2, 8, 10])


def _kps(part_map):
    """Keypoints at the centre of each part's box (+ one invisible), in map pixels."""
    boxes = part_boxes(part_map)
    rows = [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 1] for b in (boxes[1], boxes[2], boxes[3])]
    return np.array(rows + [[0, 0, 0]], np.float32)


def test_evaluate_known_answers():
    boxes = [(2, 2, 8, 8), (4, 3, 10, 8), (1, 5, 12, 9), (3, 3, 6, 6)]
    maps = [_parts(b, flip=i == 3) for i, b in enumerate(boxes)]
    kps = [_kps(m) for m in maps]
    out = evaluate_parts(lambda i: maps[i], kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2])
    assert out["nmi"] == pytest.approx(1.0) and out["ari"] == pytest.approx(1.0)
    assert out["pck@0.05"] == 1.0 and out["pck@0.1"] == 1.0      # pair (2, 3) is mirrored
    assert out["n_pairs"] == 4 and out["n_pair_keypoints"] == 12 and out["n_keypoints"] == 12
    # Swap head and tail categories in image 0: its keypoints' labels disagree with the others
    # (NMI < 1) and transfers from/to image 0 land in the wrong part.
    bad = [m.copy() for m in maps]
    bad[0] = np.select([maps[0] == 1, maps[0] == 2], [2, 1], maps[0])
    out = evaluate_parts(lambda i: bad[i], kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2], flips=[False] * 4)
    assert out["nmi"] < 1.0 and out["ari"] < 1.0
    # pairs (0,1) and (1,0) lose head and tail: 4 of 12 keypoints wrong
    assert out["pck@0.1"] == pytest.approx(8 / 12)
    # One constant map: every keypoint gets the same label -> NMI 0 for that set
    out = evaluate_parts(lambda i: np.zeros((16, 16), int), kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2])
    assert out["nmi"] == pytest.approx(0.0) and out["ari"] == pytest.approx(0.0)


def test_within_box_ignores_the_parts():
    src, tgt = _parts((2, 2, 8, 8)), _parts((6, 4, 8, 10))
    pred, used = transfer_points(src, tgt, [[7.0, 7.0]], (4, 4, 16, 16), (12, 8, 16, 20), (32, 32), (32, 32),
                                 within="box", flip=False)
    # relative place in the object box: (7 - 4) / 16 -> 12 + 3 = 15; (7 - 4) / 16 * 20 + 8 = 11.75
    np.testing.assert_allclose(pred[0], [15.0, 11.75])
    assert used[0] == 0
    with pytest.raises(ValueError, match="within"):
        transfer_points(src, tgt, [[7.0, 7.0]], (4, 4, 16, 16), (12, 8, 16, 20), (32, 32), (32, 32), within="x")
