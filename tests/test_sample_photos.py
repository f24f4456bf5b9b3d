"""The real photos the tests use ship inside installed packages; selfie sets vary one person."""

import numpy as np

from lib_profile import sample_photos


def test_real_photos_are_there(astronaut, grace_hopper):
    assert astronaut.size == (512, 512) and grace_hopper.size == (512, 600)
    assert sample_photos.coffee().mode == "RGB" and sample_photos.chelsea().mode == "RGB"


def test_selfie_sets_are_distinct_variants(astronaut_selfies):
    assert len(astronaut_selfies) == 10
    names = [n for n, _ in astronaut_selfies]
    assert len(set(names)) == 10
    arrays = [np.asarray(im.resize((64, 64))) for _, im in astronaut_selfies]
    assert all(not np.array_equal(arrays[0], a) for a in arrays[1:])
    hopper = sample_photos.selfies(sample_photos.grace_hopper, 12)
    assert len(hopper) == 12
