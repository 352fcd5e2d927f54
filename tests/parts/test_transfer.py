"""Keypoint transfer and its evaluation (diffparts.parts.transfer)."""

import numpy as np
import pytest

from diffparts.parts.synthetic import draw_object
from diffparts.parts.transfer import evaluate_parts, part_boxes, transfer_points


def _parts(box, size=16):
    seg = draw_object(size, box)
    return np.select([seg == 2, seg == 3, seg == 4], [1, 2, 3], 0)


def test_transfer_by_relative_position_in_the_part():
    src, tgt = _parts((2, 2, 8, 8)), _parts((6, 4, 8, 10))
    # source head is x 2..6, y 2..6 in map px; image = map x 2 -> its centre (4, 4) map = (8, 8) image
    pred, used = transfer_points(src, tgt, [[8.0, 8.0]], (4, 4, 16, 16), (12, 8, 16, 20), (32, 32), (32, 32))
    # target head: x 6..10, y 4..9 -> centre (8, 6.5) map = (16, 13) image
    np.testing.assert_allclose(pred[0], [16.0, 13.0])
    assert used[0] == 1


def test_background_and_missing_parts_use_the_object_box():
    src = _parts((2, 2, 8, 8))
    tgt = _parts((4, 4, 8, 8))
    tgt[tgt == 3] = 1                               # target has no body category
    pred, used = transfer_points(src, tgt, [[6.0, 8.0], [1.0, 1.0]], (2, 2, 8, 8), (4, 4, 8, 8), (16, 16), (16, 16))
    np.testing.assert_allclose(pred, [[8.0, 10.0], [3.0, 3.0]])   # shifted with the box
    assert used.tolist() == [0, 0]


def test_flip_mirrors_within_the_part():
    src, tgt = _parts((2, 2, 8, 8)), _parts((2, 2, 8, 8))
    pred, _ = transfer_points(src, tgt, [[2.5, 2.5]], (2, 2, 8, 8), (2, 2, 8, 8), (16, 16), (16, 16),
                              flip=True, snap=False)
    np.testing.assert_allclose(pred[0], [5.5, 2.5])


def test_part_boxes():
    boxes = part_boxes(_parts((2, 2, 8, 8)))
    np.testing.assert_allclose(boxes[1], [2, 2, 6, 6])
    np.testing.assert_allclose(boxes[3], [2, 6, 10, 10])


def _kps(box):
    x, y, w, h = box
    return np.array([[x + w / 4, y + h / 4, 1], [x + 3 * w / 4, y + h / 4, 1], [x + w / 2, y + 3 * h / 4, 1],
                     [0, 0, 0]], np.float32)


def test_evaluate_known_answers():
    boxes = [(2, 2, 8, 8), (4, 3, 10, 8), (1, 5, 12, 9), (3, 3, 6, 6)]
    maps = [_parts(b) for b in boxes]
    kps = [_kps(b) for b in boxes]
    out = evaluate_parts(lambda i: maps[i], kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2])
    assert out["nmi"] == pytest.approx(1.0) and out["ari"] == pytest.approx(1.0)
    assert out["pck@0.05"] == 1.0 and out["pck@0.1"] == 1.0
    assert out["n_pairs"] == 4 and out["n_pair_keypoints"] == 12 and out["n_keypoints"] == 12
    # Swap head and tail categories in image 0: its keypoints' labels disagree with the others
    # (NMI < 1) and transfers from/to image 0 land on the wrong half of the box.
    bad = [m.copy() for m in maps]
    bad[0] = np.select([maps[0] == 1, maps[0] == 2], [2, 1], maps[0])
    out = evaluate_parts(lambda i: bad[i], kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2])
    assert out["nmi"] < 1.0 and out["ari"] < 1.0
    # pairs (0,1) and (1,0) lose head and tail: 4 of 12 keypoints wrong
    assert out["pck@0.1"] == pytest.approx(8 / 12)
    # One constant map: every keypoint gets the same label -> NMI 0 for that set
    out = evaluate_parts(lambda i: np.zeros((16, 16), int), kps, boxes, [(16, 16)] * 4, [1, 1, 2, 2])
    assert out["nmi"] == pytest.approx(0.0) and out["ari"] == pytest.approx(0.0)
