"""One step clock: attention control counts the sampler's steps, whatever the number of model evaluations per step,
for every sampler the diffusers host has (the WebUI hosts' clock: tests/test_webui_attention.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from lib_profile.attention.clock import check_supported, evaluations, pattern_of, tick
from lib_profile.attention.control import Controller
from lib_profile.hosts.diffusers import samplers
from lib_profile.hosts.base import HostError, Img2ImgRequest, RunControl, Txt2ImgRequest


class Clockwork(Controller):
    """Records the step of every cross-attention call, and the steps ``step_end`` is called at."""

    def __init__(self):
        self.seen, self.ends, self.begun = Counter(), [], []

    def begin(self, steps, latent_hw):
        self.begun.append(steps)

    def needs_probs(self, site, step, queries):
        if site.cross and site.index == 1:  # one module: one record per model evaluation
            self.seen[step] += 1
        return False

    def step_end(self, step, latents):
        self.ends.append(step)
        return latents


@pytest.mark.parametrize("pattern, steps", [("one", 5), ("two", 5), ("plms", 5), ("two", 1), ("plms", 1)])
def test_ticks_cover_each_step_once_per_evaluation_and_end_each_step_once(pattern, steps):
    ticks = [tick(e, steps, pattern) for e in range(evaluations(steps, pattern))]
    assert sorted({t.step for t in ticks}) == list(range(steps))
    assert [t.step for t in ticks if t.last] == list(range(steps))
    assert all(t.evaluation == 0 for t in ticks) == (pattern == "one" or (pattern == "two" and steps == 1))


@pytest.mark.parametrize("name", samplers.sampler_names())
def test_every_sampler_steps_through_its_own_steps(host, name):
    """Second-order samplers (DPM++ SDE, the warm tone's; Heun; DPM2) evaluate the model twice a step: the
    controller still sees steps 0..n-1, every evaluation of a step with the same step, ``step_end`` and the progress
    once per step."""
    steps = 5
    spec = samplers.resolve(name)[0]
    clock, progress = Clockwork(), []
    req = Txt2ImgRequest(prompt="portrait photo", width=64, height=64, steps=steps, sampler=name, seed=3)
    host.txt2img(req, RunControl(on_step=lambda done, total: progress.append((done, total)), attention=clock))
    assert clock.begun == [steps]
    assert sorted(clock.seen) == list(range(steps)), clock.seen
    assert sum(clock.seen.values()) == evaluations(steps, spec.evaluations)  # the table says how many
    assert clock.ends == list(range(steps))
    assert progress == [(i + 1, steps) for i in range(steps)]


@pytest.mark.parametrize("name", ["Heun", "DPM++ SDE", "PLMS", "Euler"])
def test_an_img2img_pass_counts_the_steps_it_runs(host, name):
    steps, strength = 6, 0.5
    clock = Clockwork()
    req = Img2ImgRequest(prompt="portrait photo", width=64, height=64, steps=steps, sampler=name, seed=3,
                         init_image=Image.new("RGB", (64, 64), (90, 60, 40)), denoising_strength=strength)
    host.img2img(req, RunControl(attention=clock))
    run = int(steps * strength)
    assert clock.begun == [run] and sorted(clock.seen) == list(range(run)) and clock.ends == list(range(run))


def test_samplers_with_no_fixed_clock_are_refused_by_name():
    for name in ("Restart", "DPM adaptive", "DPM fast"):
        with pytest.raises(HostError, match="no fixed number of model evaluations"):
            check_supported(name)
    check_supported("DPM++ SDE")
    assert pattern_of("PLMS") == "plms" and pattern_of("Heun", second_order=True) == "two"
    assert pattern_of("DPM++ 2M") == "one"


@pytest.mark.parametrize("name", ["DPM++ SDE", "Heun", "Euler a", "PLMS"])
def test_an_edit_injects_tau_of_the_sampler_steps_and_says_so(host, name):
    """tau 0.8 of 20 steps is 16 steps with the source's cross-attention, also for samplers that evaluate the
    model twice a step (it was 0.8 of the 39 evaluations: 31 evaluations, about 15.5 steps... or 8 of the 20
    steps' first halves, depending on the host)."""
    from lib_profile.attention.p2p import Edit, edit_control, edit_request

    prompt = "portrait photo of a woman in a red sweater"
    req = Txt2ImgRequest(prompt=prompt, width=64, height=64, steps=20, sampler=name, seed=3)
    edit = Edit(source=prompt, target=prompt.replace("red", "blue"), cross_steps=0.8, self_steps=0.4)
    control = edit_control(host, edit, req.negative_prompt)
    host.txt2img(edit_request(req, edit), control)
    assert control.attention.injected() == [{"steps": 20, "cross": 16, "self": 8}]
    assert control.attention.summary() == "cross 16/20, self 8/20"


def test_an_edit_refuses_a_sampler_without_a_fixed_clock(host):
    from lib_profile.attention.p2p import Edit, edit_request

    req = Txt2ImgRequest(prompt="a red cat", width=64, height=64, steps=4, sampler="Restart", seed=3)
    with pytest.raises(HostError, match="Restart has no fixed number"):
        edit_request(req, Edit(source="a red cat", target="a blue cat"))


def test_explain_sums_every_evaluation_of_every_step_and_says_so(host, tmp_path):
    import json

    from lib_profile.attention.explain import explain, save

    req = Txt2ImgRequest(prompt="a red cat on a sofa", width=64, height=64, steps=4, sampler="Heun", seed=3)
    explanation = explain(host, req, ["cat"])
    summed = explanation.summed
    assert (summed["steps"], summed["of_steps"], summed["first_step"], summed["last_step"]) == (4, 4, 0, 3)
    assert summed["evaluations"] == 7 and summed["layers"]  # Heun: 2 x 4 - 1 model evaluations
    assert json.loads((tmp_path / "explain.json").read_text() if save(explanation, tmp_path) else "")["summed"] == summed
