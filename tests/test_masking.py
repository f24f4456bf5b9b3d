"""Inpaint-only-masked geometry: the crop region and the paste-back."""

import numpy as np
from PIL import Image

from lib_profile.hosts.diffusers import masking


def test_crop_region_pads_and_keeps_aspect():
    mask = Image.new("L", (200, 100), 0)
    mask.paste(255, (90, 40, 110, 60))
    x1, y1, x2, y2 = masking.crop_region(mask, padding=10, width=64, height=64)
    assert (x2 - x1) == (y2 - y1) == 40 and x1 <= 80 and x2 >= 120
    x1, y1, x2, y2 = masking.crop_region(mask, padding=10, width=128, height=64)
    assert (x2 - x1) == 2 * (y2 - y1)


def test_crop_region_stays_inside_the_image():
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (0, 0, 10, 10))
    x1, y1, x2, y2 = masking.crop_region(mask, padding=32, width=64, height=64)
    assert x1 >= 0 and y1 >= 0 and x2 <= 100 and y2 <= 100
    assert masking.crop_region(Image.new("L", (10, 10)), 4, 8, 8) is None


def test_paste_back_leaves_unmasked_pixels_exact():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 40, 40))
    region = masking.crop_region(mask, 4, 32, 32)
    out = np.asarray(masking.paste_back(original, Image.new("RGB", (32, 32), (255, 0, 0)), region, mask, blur=2))
    keep = np.ones((64, 64), bool)
    keep[14:46, 14:46] = False
    assert np.array_equal(out[keep], np.asarray(original)[keep])
    assert (out[28:32, 28:32] == [255, 0, 0]).all()
