"""Model families as data (lib_profile.families): every family x every kind of file (checkpoint, LoRA, ControlNet)."""

from __future__ import annotations

import itertools

import pytest

from lib_profile import families

NAMES = ["SD1.5", "SDXL", "SD2", "SD3", "Flux"]


def transformer_blocks(depths, layers_per_block=2):
    """Transformer blocks of a diffusers UNet2DConditionModel: down levels have ``layers_per_block`` attentions,
    up levels one more, the mid block one with the deepest level's depth (diffusers ``unet_2d_blocks``)."""
    down = sum(d * layers_per_block for d in depths)
    up = sum(d * (layers_per_block + 1) for d in depths)
    return down + max(depths) + up


@pytest.mark.parametrize("family, encoders, context, pooled, layers, size, portrait", [
    (families.SD15, [768], 768, None, 16, 512, (512, 768)),
    (families.SDXL, [768, 1280], 2048, 1280, 70, 1024, (832, 1216)),
])
def test_family_data(family, encoders, context, pooled, layers, size, portrait):
    assert [e.width for e in family.text_encoders] == encoders
    assert sum(encoders) == family.context_width == context
    assert family.text_encoders[-1].pooled == pooled
    assert family.cross_attention_layers == transformer_blocks(family.transformer_depths) == layers
    assert family.native_size == size and family.portrait == portrait
    assert portrait[0] * 3 == portrait[1] * 2 or abs(portrait[0] / portrait[1] - 2 / 3) < 0.02
    assert family.clip_skip == 1 and family.base_versions
    assert family.controlnet_files("pose") and family.controlnet_files("tile")
    assert families.family(family.name) is family
    assert families.family_by_context_width(context) == family.name


def test_every_family_is_named_and_known():
    assert [f.name for f in families.FAMILIES if f.name in NAMES] and {f.name for f in families.FAMILIES} == set(NAMES)
    assert [f.name for f in families.SUPPORTED] == ["SD1.5"]


CHECKPOINTS = [
    ("SD1.5", ["model.diffusion_model.input_blocks.0.0.weight",
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]),
    ("SDXL", ["model.diffusion_model.input_blocks.0.0.weight",
              "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
              "conditioner.embedders.1.model.token_embedding.weight"]),
    ("SDXL", ["conditioner.embedders.0.model.token_embedding.weight"]),  # refiner: bigG alone
    ("SD2", ["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.model.token_embedding.weight"]),
    ("SD3", ["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"]),
    ("Flux", ["double_blocks.0.img_attn.qkv.weight"]),
    (None, ["first_stage_model.encoder.conv_in.weight"]),
]


@pytest.mark.parametrize("family, keys", CHECKPOINTS)
def test_checkpoint_family(family, keys):
    assert families.checkpoint_family(keys) == family
    assert families.family_from_keys(keys) == (None if family == "SD1.5" else family)


LORAS = [
    ("SD1.5", ["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
               "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"], {}, ()),
    ("SD1.5", ["lora_unet_x.lora_down.weight"], {"ss_base_model_version": "sd_v1"}, ()),
    ("SD1.5", ["lora_unet_x.lora_down.weight"], {"modelspec.architecture": "stable-diffusion-v1/lora"}, ()),
    ("SD1.5", ["lora_unet_x_attn2_to_k.lora_down.weight"], {}, (768,)),
    ("SDXL", ["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"], {}, ()),
    ("SDXL", ["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"], {}, ()),
    ("SDXL", ["lora_unet_input_blocks_7_1_transformer_blocks_5_attn2_to_k.lora_down.weight"], {}, ()),
    ("SDXL", ["lora_unet_x.lora_down.weight"], {"ss_base_model_version": "sdxl_base_v1-0"}, ()),
    ("SDXL", ["lora_unet_x.lora_down.weight"], {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, ()),
    ("SDXL", ["lora_unet_x_attn2_to_k.lora_down.weight"], {}, (2048,)),
    ("SD2", ["lora_te_x.lora_down.weight"], {"ss_base_model_version": "sd_v2_v"}, ()),
    ("SD2", ["lora_unet_x_attn2_to_k.lora_down.weight"], {}, (1024,)),
    ("SD3", ["transformer.x.lora_A.weight"], {"modelspec.architecture": "stable-diffusion-3-medium/lora"}, ()),
    ("Flux", ["lora_unet_double_blocks_0.lora_down.weight"], {"modelspec.architecture": "flux-1-dev/lora"}, ()),
    (None, ["lora_unet_x.lora_down.weight"], {}, ()),
]


@pytest.mark.parametrize("family, keys, meta, widths", LORAS)
def test_lora_family(family, keys, meta, widths):
    assert families.lora_family(keys, meta, widths) == family


CONTROLNETS = [
    ("SD1.5", {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}),
    ("SDXL", {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048)}),
    ("SDXL", {"control_model.label_emb.0.0.weight": (1280, 2816)}),
    ("SD2", {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}),
    (None, {"control_model.input_hint_block.0.weight": (16, 3, 3, 3)}),
]


@pytest.mark.parametrize("family, shapes", CONTROLNETS)
def test_controlnet_family(family, shapes):
    assert families.controlnet_family(shapes) == family


@pytest.mark.parametrize("family, name", [(f.name, n) for f in (families.SD15, families.SDXL) for kind in ("pose", "tile")
                                          for n in f.controlnet_files(kind)]
                         + [("SDXL", "diffusers_xl_canny_full [abcd1234]"), ("SD2", "control_sd21_openpose"),
                            (None, "my_controlnet"), (None, "xlabs_flux_canny")])
def test_controlnet_family_from_name(family, name):
    """Every usual file name the family data lists is recognised as its own family (and a few others)."""
    assert families.controlnet_family_from_name(name) == family


@pytest.mark.parametrize("checkpoint, lora, controlnet", itertools.product(NAMES, NAMES + [None], NAMES + [None]))
def test_check_compatible_every_pair(checkpoint, lora, controlnet):
    message = families.check_compatible(checkpoint, lora_family=lora, controlnet_family=controlnet,
                                 lora_name="face.safetensors", controlnet_name="pose.pth")
    bad = [(kind, name, fam) for kind, name, fam in (("LoRA", "face.safetensors", lora),
                                                     ("ControlNet model", "pose.pth", controlnet))
           if fam is not None and fam != checkpoint]
    if not bad:
        assert message is None
        return
    for kind, name, fam in bad:
        assert f"{kind} {name} is for {fam} and the checkpoint is {checkpoint}" in message
        assert f"load {'a' if fam == 'Flux' else 'an'} {fam} checkpoint" in message
    assert message.endswith(".")


def test_check_compatible_names_a_controlnet_to_use():
    message = families.check_compatible("SDXL", controlnet_family="SD1.5", controlnet_name="control_v11p_sd15_openpose")
    assert "use an SDXL ControlNet model such as controlnet-openpose-sdxl-1.0" in message


@pytest.mark.parametrize("found", ["SDXL", "SD2", "SD3", "Flux"])
def test_unsupported_checkpoint_message(found):
    message = families.unsupported_checkpoint_message(found)
    assert f"This is {'a' if found == 'Flux' else 'an'} {found} checkpoint" in message and "pick an SD1.5 model" in message
    assert ("not there yet" in message) == (found == "SDXL")


def test_diffusers_host_refuses_an_sdxl_controlnet_file(tmp_path):
    """A ControlNet whose cross-attention reads 2048-wide text (SDXL's) is named, not loaded into SD1.5."""
    import torch
    from diffusers import ControlNetModel

    from lib_profile.hosts.base import HostError
    from lib_profile.hosts.diffusers.controlnet_file import load_controlnet, save_controlnet
    from lib_profile.hosts.diffusers.tiny import tiny_configs

    cfg = dict(tiny_configs()["controlnet"], cross_attention_dim=2048)
    torch.manual_seed(0)
    path = save_controlnet(tmp_path / "xinsir_openpose_xl.safetensors", ControlNetModel(**cfg))
    with pytest.raises(HostError, match="ControlNet model xinsir_openpose_xl.safetensors is for SDXL and the "
                                        "checkpoint is SD1.5: use an SD1.5 ControlNet model such as "
                                        "control_v11p_sd15_openpose"):
        load_controlnet(path)
