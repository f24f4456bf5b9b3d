"""WebUI sampler names -> diffusers schedulers; every one runs on the tiny model."""

import numpy as np
import pytest

from lib_profile.hosts.diffusers import samplers
from lib_profile.hosts.base import HostError, Txt2ImgRequest


@pytest.mark.parametrize("name", samplers.sampler_names())
def test_every_sampler_runs_and_a_seed_gives_the_same_image(host, name):
    req = Txt2ImgRequest(prompt="portrait photo", width=64, height=64, steps=3, sampler=name, seed=3)
    result = host.txt2img(req)
    assert result.images[0].size == (64, 64)
    assert result.params["sampler"] == name
    assert np.asarray(result.images[0]).std() > 0
    # stochastic samplers too (DPM++ SDE draws from a Brownian tree, seeded per image like the WebUI)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(host.txt2img(req).images[0])), name


@pytest.mark.parametrize("given, sampler, schedule", [
    ("Euler a", "Euler a", "Automatic"),
    ("k_euler_a", "Euler a", "Automatic"),
    ("DPM++ 2M", "DPM++ 2M", "Karras"),
    ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
    ("DPM++ SDE Karras", "DPM++ SDE", "Karras"),
    ("Euler", "Euler", "Automatic"),
    ("DDIM", "DDIM", "Automatic"),
    ("dpm++ 2m karras", "DPM++ 2M", "Karras"),
])
def test_names_resolve_like_the_webui(given, sampler, schedule):
    spec, label = samplers.resolve(given)
    assert (spec.label, label) == (sampler, schedule)


def test_schedule_type_is_applied():
    sched, label, schedule = samplers.make_scheduler("Euler", "Karras", {"num_train_timesteps": 1000})
    assert (label, schedule) == ("Euler", "Karras") and sched.config.use_karras_sigmas
    sched, _, _ = samplers.make_scheduler("DPM++ 2M Karras", None, {})
    assert sched.config.use_karras_sigmas and sched.config.algorithm_type == "dpmsolver++"


def test_unknown_names_list_the_choices():
    with pytest.raises(HostError, match="Unknown sampler 'Fancy'.*Euler a"):
        samplers.resolve("Fancy")
    with pytest.raises(HostError, match="Unknown schedule type"):
        samplers.resolve("Euler", "Wobbly")
