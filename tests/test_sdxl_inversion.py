"""Photo inversion on SDXL (the standalone host, tiny-sdxl): test_inversion.py's oracles run again on the SDXL host
(each once, at its cheapest settings), and what is SDXL's own: the conditioning carries the pooled
vector (its last row), the size numbers follow the photo, Plug-and-Play's layers on SDXL's decoder, a photo's edit
and explain, and the studio's photo jobs."""

from __future__ import annotations

import pytest
import torch

from lib_profile.inversion import photo
from lib_profile.inversion.photo import PhotoSettings

from tests import test_inversion as sd15
from tests.test_inversion import max_diff


@pytest.fixture(scope="module")
def host(data_dir):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir)


@pytest.fixture(scope="module")
def sharp(data_dir):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    from tests.conftest import peak_attention

    return peak_attention(DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir))


def test_the_host_lends_an_sdxl_denoiser_whose_conditioning_carries_the_pooled_vector(host):
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    assert host.photo_inversion and host.model_family == "SDXL"
    with host.denoiser(["a photo of a person"]) as den:
        cond = den.conditioning("a photo of a person", 2)
        context, pooled = SdxlPromptEncoder(host.model).encode("a photo of a person", 2)
        assert cond.shape == (1, 2 * 77 + 1, context.shape[-1])
        assert torch.equal(cond[:, :-1], context.to(cond)) and torch.equal(cond[:, -1, :pooled.shape[-1]], pooled)
        assert not cond[:, -1, pooled.shape[-1]:].any()
        assert not den.conditioning("", 1).any()  # an empty negative prompt: all zeros, states and pooled
        latent = torch.randn(1, 4, 8, 12)
        eps = den.eps(latent, 501, cond)
        other = cond.clone()
        other[:, -1] = 0  # the pooled vector reaches the UNet
        assert eps.shape == latent.shape and not torch.equal(eps, den.eps(latent, 501, other))


def test_plug_and_play_on_sdxl_injects_the_families_block_and_all_decoder_self_attention_but_the_first(sharp,
                                                                                                         portrait):
    from lib_profile.families import SDXL
    from lib_profile.hosts.diffusers.denoiser import feature_block
    from lib_profile.inversion.pnp import attention_module

    assert feature_block(sharp.model.unet, SDXL.pnp_feature_block) is sharp.model.unet.up_blocks[0].resnets[1]
    settings = PhotoSettings(method="direct", steps=2, size=64)
    result, changed = sd15.restyle_seen(sharp, portrait, "a photo of a person", "a painting of a person", settings,
                                        1.0, 1.0)
    seen = [name for name, step in changed if step == 0]
    up_self = [n for n, _m in sharp.model.unet.named_modules() if n.startswith("up_blocks") and n.endswith("attn1")]
    first = attention_module(up_self[0])
    assert sorted(set(seen)) == sorted(n for n in up_self if attention_module(n) != first)
    assert result.params["injected"] == "features 2/2, attention 2/2"


def test_null_text_inversion_on_sdxl_is_closer_than_ddim(host, astronaut):
    """Null-text inversion (its negative states and pooled vector optimised) samples the photo's latent back closer
    than plain DDIM inversion at CFG 7.5 (measured 1.7x at 10 steps and 10 iterations, 1.1x at the 3 and 3 run here:
    random weights, see test_inversion's SD1.5 test); Direct Inversion gives it back exactly."""
    from lib_profile.inversion import sampling

    image = photo.fit_photo(astronaut, 64)
    errors = {}
    with host.denoiser(["a photo of a person"]) as den:
        z0 = den.encode(image)
        for method in ("ddim", "null-text", "direct"):
            inv = sampling.invert(den, z0, "a photo of a person", "", method, 3, 7.5, 1, 3)
            errors[method] = float(((sampling.sample(den, inv, ["a photo of a person"]) - z0) ** 2).mean())
    assert errors["null-text"] < errors["ddim"] and errors["direct"] < 1e-10


def test_a_restyle_on_sdxl_keeps_the_photos_size_and_says_so_in_its_infotext(host, portrait):
    settings = PhotoSettings(method="direct", steps=2, size=64)
    result = photo.restyle(host, portrait, "a photo of a person", "a painting of a person", settings)
    assert result.images["edited"].size == result.images["photo"].size == (64, 96)
    assert max_diff(result.images["edited"], result.images["reconstruction"]) > 0
    assert "Inversion: direct" in result.infotext and "Plug-and-Play" in result.infotext


# ---------------------------------------------------------------- test_inversion.py's oracles on SDXL

def test_direct_inversion_gives_the_vae_round_trip_back(host, astronaut, portrait):
    sd15.test_direct_inversion_gives_the_vae_round_trip_back(host, astronaut, portrait, 7.5, 2)


@pytest.mark.parametrize("method", ["direct", "null-text"])
def test_plug_and_play_with_the_source_prompt_and_full_injection_is_the_reconstruction(sharp, portrait, method):
    sd15.test_plug_and_play_with_the_source_prompt_and_full_injection_is_the_reconstruction(sharp, portrait, method)


def test_plug_and_play_with_no_injection_is_a_plain_generation_from_the_inverted_noise(host, portrait):
    sd15.test_plug_and_play_with_no_injection_is_a_plain_generation_from_the_inverted_noise(host, portrait, "direct")


def test_prompt_to_prompt_reweight_by_1_on_a_photo_gives_the_reconstruction(host, portrait):
    sd15.test_prompt_to_prompt_reweight_by_1_on_a_photo_gives_the_reconstruction(host, portrait)


def test_explain_a_photo_maps_each_word_on_the_reconstruction(host, portrait):
    sd15.test_explain_a_photo_maps_each_word_on_the_reconstruction(host, portrait)


@pytest.mark.parametrize("family, given, expected", [("SD1.5", None, 512), ("SDXL", None, 832), ("SD1.5", 256, 256),
                                                     ("SDXL", 256, 256), ("SDXL", 1024, 1024)])
def test_the_photo_size_defaults_to_the_familys_and_a_given_one_wins(family, given, expected):
    """The photo's short side when the user gives none: the family's 2:3 portrait's (SDXL sampled at SD1.5's 512
    loses detail; it was 512 for every family), in every front: the API and CLI leave it unset, and the tab's slider
    at 0 sends none."""
    from types import SimpleNamespace

    from PIL import Image

    from lib_profile.inversion.photo import PhotoSettings, fit_photo, photo_size
    from lib_profile.ui.restyle_section import AUTO_SIZE, inversion_size, photo_source

    settings = PhotoSettings(size=given)
    settings.validate()
    assert photo_size(settings, SimpleNamespace(model_family=family)) == expected
    assert fit_photo(Image.new("RGB", (600, 900)), expected).size == (expected, expected * 3 // 2)
    assert inversion_size(AUTO_SIZE) == {} and inversion_size(given or 0) == ({"size": given} if given else {})
    assert photo_source("photo", "a.jpg", "", 10, AUTO_SIZE)["inversion"] == {"steps": 10}
