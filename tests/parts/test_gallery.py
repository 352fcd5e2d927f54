"""Part pictures (diffparts.parts.gallery)."""

import numpy as np
import pytest
from PIL import Image

from diffparts.parts.gallery import overlay, palette, save_pictures
from diffparts.parts.synthetic import draw_object


def _maps(n=5):
    maps = [np.select([s == 2, s == 3, s == 4], [1, 2, 3], 0) for s in
            (draw_object(16, (1 + i, 2, 10, 9)) for i in range(n))]
    images = [np.full((32, 32, 3), 200, np.uint8) for _ in range(n)]
    return images, maps


def test_colours_are_consistent_per_category():
    images, maps = _maps(2)
    a, b = overlay(images[0], maps[0], 4, alpha=1.0), overlay(images[1], maps[1], 4, alpha=1.0)
    pal = palette(4)
    # every pixel of category 2 is drawn in category 2's colour in both images
    for img, lab in ((a, maps[0]), (b, maps[1])):
        up = np.kron(lab, np.ones((2, 2), int))
        assert (img[up == 2] == pal[2]).all()
        assert (img[up == 0] == 120).all()             # background dimmed, not tinted
    assert len({tuple(c) for c in pal}) == 4


def test_save_pictures_writes_pngs(tmp_path):
    images, maps = _maps()
    paths = save_pictures(tmp_path, images, maps, 4, prevalence=[1, 1, 1, 0.5])
    assert [p.name for p in paths["galleries"]] == ["gallery.png", "gallery_part_1.png",
                                                      "gallery_part_2.png", "gallery_part_3.png"]
    with Image.open(paths["overlays"][0]) as im:
        assert im.width == 4 * 128 and im.height > 2 * 128
    with Image.open(tmp_path / "gallery_part_1.png") as im:
        assert im.width == 5 * 67 + 3                    # five crops of 64 px, 3 px apart


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_categories"):
        palette(0)
    with pytest.raises(ValueError, match="category 3"):
        overlay(np.zeros((8, 8, 3), np.uint8), np.full((4, 4), 3), 3)
