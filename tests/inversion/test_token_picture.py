"""The token picture's rows are equally wide: the images from the token's prompt fill their row
(issue 21: two thumbnails beside a wide empty area)."""

import numpy as np

from diffparts.inversion.pictures import token_picture


def test_generated_row_fills_the_width():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (2, 64, 64)).astype(np.float32)
    maps = rng.random((2, 16, 16)).astype(np.float32)
    generated = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    picture = token_picture(images, masks, maps, generated, 1, 3, tile=32)
    assert picture.shape == (32 + 4 + 64, 4 * 32, 3)              # pairs row, gap, generated row at 2 x tile
    bottom = picture[36:]
    assert not (bottom == 255).all(axis=(0, 2)).any()              # no white column: nothing left empty
