"""The tiny SDXL-shaped checkpoint (SGM single-file layout): exact round trip through diffusers' own converters,
family detection on it and on ``tiny``, and the family message when it meets SD1.5-only code."""

from __future__ import annotations

import pytest
import torch

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers import tiny_sdxl


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    path = tiny_sdxl.ensure_tiny_sdxl(cache)
    from safetensors.torch import load_file

    return path, load_file(str(path)), tiny_sdxl.build_modules()


def _same(expected, got):
    expected = {k: v for k, v in expected.items() if not k.endswith("position_ids")}
    got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
    assert sorted(got) == sorted(expected)
    bad = [k for k in expected if got[k].shape != expected[k].shape or not torch.equal(got[k], expected[k])]
    assert not bad, bad[:5]


def test_sgm_layout_names(built):
    path, sd, _ = built
    prefixes = ("model.diffusion_model.", "conditioner.embedders.0.transformer.text_model.",
                "conditioner.embedders.1.model.", "first_stage_model.")
    assert all(k.startswith(prefixes) for k in sd)
    assert all(any(k.startswith(p) for k in sd) for p in prefixes)
    assert "model.diffusion_model.label_emb.0.0.weight" in sd  # SDXL's size/crop conditioning
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in sd
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in sd  # the upsampler after an attention level
    assert "model.diffusion_model.input_blocks.7.1.transformer_blocks.2.attn2.to_k.weight" in sd
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    assert infer_diffusers_model_type(sd) == "xl_base"


def test_round_trip_through_diffusers_converters_is_exact(built):
    """SGM -> diffusers with the converters ``from_single_file`` uses gives back every weight bit for bit."""
    from diffusers.loaders import single_file_utils as sfu

    _path, sd, (unet, vae, text, text_2) = built
    _same(unet.state_dict(), sfu.convert_ldm_unet_checkpoint(sd, dict(unet.config)))
    _same(vae.state_dict(), sfu.convert_ldm_vae_checkpoint(sd, dict(vae.config)))
    _same(text.state_dict(), sfu.convert_ldm_clip_checkpoint(
        {k: v for k, v in sd.items() if k.startswith("conditioner.embedders.0.")}))
    _same(text_2.state_dict(), sfu.convert_open_clip_checkpoint(text_2, sd, prefix="conditioner.embedders.1.model."))


def test_deterministic_and_cached(built, tmp_path):
    path, sd, _ = built
    assert tiny_sdxl.ensure_tiny_sdxl(path.parent.parent) == path  # cached: not rebuilt
    from safetensors.torch import load_file

    again = load_file(str(tiny_sdxl.ensure_tiny_sdxl(tmp_path)))
    assert sorted(again) == sorted(sd) and all(torch.equal(again[k], sd[k]) for k in sd)


def test_family_of_tiny_and_tiny_sdxl(built, tiny_checkpoint):
    from lib_profile.safetensors_header import checkpoint_file_family

    path, sd, _ = built
    assert families.checkpoint_family(sd) == "SDXL" and checkpoint_file_family(path) == "SDXL"
    assert checkpoint_file_family(tiny_checkpoint) == "SD1.5"


def test_sd15_lora_offered_with_tiny_sdxl_gets_the_family_message(built, tiny_checkpoint):
    """An SD1.5 LoRA (kohya names) against the SDXL checkpoint: the one check names both and what to do."""
    path, sd, _ = built
    lora_keys = ["lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
                 "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"]
    message = families.check_compatible(families.checkpoint_family(sd), lora_family=families.lora_family(lora_keys),
                                        lora_name="face_sd15.safetensors")
    assert message == ("LoRA face_sd15.safetensors is for SD1.5 and the checkpoint is SDXL: use a LoRA made for "
                       "SDXL, or load an SD1.5 checkpoint.")


def test_sd15_loader_refuses_tiny_sdxl_with_the_family_message(tmp_path):
    """The SD1.5-only paths (the trainer loads with ``load_sd15``) name the family; the diffusers host generates with
    it (tests/test_sdxl_generate.py)."""
    from lib_profile.hosts.diffusers.checkpoint import load_sd15
    from lib_profile.hosts.diffusers.host import resolve_checkpoint

    path = resolve_checkpoint("tiny-sdxl", tmp_path)
    assert path.name == tiny_sdxl.CHECKPOINT and path.is_file()
    with pytest.raises(HostError, match="This is an SDXL checkpoint.*explains and edits.*inverts photos.*in A1111 "
                                        "and Forge; this part .* is not there yet on SDXL.*pick an SD1.5 model"):
        load_sd15(path, tmp_path / "tokenizer")
