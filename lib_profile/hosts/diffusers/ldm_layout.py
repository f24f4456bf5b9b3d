"""The original (LDM / "CompVis") key layout of SD1.x single-file checkpoints, and its diffusers twin.

WebUI users hold single ``.safetensors``/``.ckpt`` files in the original layout
(``model.diffusion_model.input_blocks.1.1...``); diffusers names the same tensors differently
(``down_blocks.0.attentions.0...``). One set of rules maps each diffusers parameter name to its LDM
name; loading walks a diffusers model's own parameters and looks each up in the checkpoint, and
saving does the reverse. The same rules give the WebUI module names that kohya-format LoRA keys
must hit. The configs are read off the tensor shapes, so fine-tunes and small test models load
through the same path as a real SD1.5 file.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from lib_profile.families import family_from_keys, unsupported_checkpoint_message
from lib_profile.hosts.base import HostError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
CONTROL_PREFIX = "control_model."

_RESNET_UNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    head, _, param = rest.partition(".")
    return f"{_RESNET_UNET[head]}.{param}"


def unet_key(key: str, cfg: Mapping[str, Any]) -> str:
    """diffusers UNet2DConditionModel / ControlNetModel parameter name -> LDM name (no prefix)."""
    per = cfg["layers_per_block"] + 1
    simple = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "add_embedding.linear_1.": "label_emb.0.0.",  # SDXL's size/crop + pooled-text embedding (SGM)
        "add_embedding.linear_2.": "label_emb.0.2.",
    }
    for src, dst in simple.items():
        if key.startswith(src):
            return dst + key[len(src):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"input_blocks.{1 + i * per + j}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"input_blocks.{1 + i * per + j}.1.{rest}"
        return f"input_blocks.{(i + 1) * per}.0.op.{rest.removeprefix('conv.')}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{0 if m[2] == '0' else 2}.{_resnet(m[3])}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "resnets":
            return f"output_blocks.{i * per + j}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"output_blocks.{i * per + j}.1.{rest}"
        has_attn = cfg["up_block_types"][i].startswith("CrossAttn")
        return f"output_blocks.{i * per + per - 1}.{2 if has_attn else 1}.{rest}"
    # ControlNet-only parts
    m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.+)", key)
    if m:
        n_blocks = 2 * (len(cfg["conditioning_embedding_out_channels"]) - 1)
        index = 0 if m[1] == "conv_in" else 2 * (n_blocks + 1) if m[1] == "conv_out" else 2 * (int(m[2]) + 1)
        return f"input_hint_block.{index}.{m[3]}"
    m = re.match(r"controlnet_down_blocks\.(\d+)\.(.+)", key)
    if m:
        return f"zero_convs.{m[1]}.0.{m[2]}"
    if key.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + key[len("controlnet_mid_block."):]
    raise KeyError(f"no LDM name for UNet parameter {key}")


def vae_key(key: str, cfg: Mapping[str, Any]) -> str:
    """diffusers AutoencoderKL parameter name -> LDM name (no prefix)."""
    levels = len(cfg["block_out_channels"])
    for part in ("encoder", "decoder"):
        if not key.startswith(part + "."):
            continue
        rest = key[len(part) + 1:]
        if rest.startswith("conv_norm_out."):
            return f"{part}.norm_out.{rest[len('conv_norm_out.'):]}"
        if rest.startswith(("conv_in.", "conv_out.")):
            return key
        m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)", rest)
        if m:
            level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
            tail = m[5].replace("conv_shortcut", "nin_shortcut")
            if m[3] == "resnets":
                return f"{part}.{m[1]}.{level}.block.{m[4]}.{tail}"
            return f"{part}.{m[1]}.{level}.{m[1]}sample.{tail}"
        m = re.match(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
        if m:
            return f"{part}.mid.block_{int(m[1]) + 1}.{m[2].replace('conv_shortcut', 'nin_shortcut')}"
        m = re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)", rest)
        if m:
            return f"{part}.mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    raise KeyError(f"no LDM name for VAE parameter {key}")


def text_key(key: str, cfg: Mapping[str, Any] | None = None) -> str:
    """transformers CLIPTextModel parameter name -> LDM name (no prefix): the same, for SD1.x."""
    return key


def _is_vae_attn_linear(key: str) -> bool:
    return ".mid.attn_1." in key and key.endswith(".weight") and ".norm." not in key


# ---------------------------------------------------------------- reading configs off shapes

def _require(sd: Mapping[str, Any], key: str, what: str):
    if key not in sd:
        raise HostError(f"This file is not an SD1.x checkpoint in the original layout ({what} missing: {key}).")
    return sd[key]


def check_sd1(sd: Mapping[str, Any]) -> None:
    """Refuse what is not an SD1.x checkpoint, naming what it is."""
    keys = sd.keys()
    family = family_from_keys(keys)
    if family is not None:
        raise HostError(unsupported_checkpoint_message(family))
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        if any(k.startswith(("down_blocks.", "unet.")) for k in keys):
            raise HostError("This file is in the diffusers layout; Profile Studio expects a single-file SD1.5 checkpoint "
                            "(.safetensors or .ckpt as the WebUI uses).")
        raise HostError("This file holds no Stable Diffusion UNet (no 'model.diffusion_model.*' keys); "
                        "it is not an SD1.5 checkpoint.")


def _encoder(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """What the input (down) half of a UNet or ControlNet tells: levels, channels, attention, widths."""
    conv_in = _require(sd, prefix + "input_blocks.0.0.weight", "UNet input conv")
    blocks = sorted({int(m[1]) for k in sd if (m := re.match(re.escape(prefix) + r"input_blocks\.(\d+)\.", k))})
    downs = [b for b in blocks if prefix + f"input_blocks.{b}.0.op.weight" in sd]
    per = downs[0] if downs else len(blocks)  # blocks per level incl. the downsampler
    levels = (blocks[-1] + 1) // per
    chans, down_types = [], []
    for i in range(levels):
        first = 1 + i * per
        chans.append(int(_require(sd, prefix + f"input_blocks.{first}.0.in_layers.2.weight", "resnet").shape[0]))
        attn = prefix + f"input_blocks.{first}.1.proj_in.weight" in sd
        down_types.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
    to_k = next((v for k, v in sd.items() if k.startswith(prefix) and k.endswith("attn2.to_k.weight")), None)
    if to_k is None:
        raise HostError("This model has no cross-attention layers; it is not an SD1.x model.")
    proj_in = next(v for k, v in sd.items() if k.startswith(prefix) and k.endswith(".proj_in.weight"))
    return {
        "in_channels": int(conv_in.shape[1]),
        "down_block_types": down_types,
        "block_out_channels": chans,
        "layers_per_block": per - 1,
        "cross_attention_dim": int(to_k.shape[1]),
        "attention_head_dim": 8,
        "use_linear_projection": proj_in.ndim == 2,
        "norm_num_groups": 32,
    }


def infer_unet_config(sd: Mapping[str, Any], prefix: str = UNET_PREFIX) -> dict[str, Any]:
    enc = _encoder(sd, prefix)
    per = enc["layers_per_block"] + 1
    up_types = ["CrossAttnUpBlock2D" if prefix + f"output_blocks.{i * per}.1.proj_in.weight" in sd else "UpBlock2D"
                for i in range(len(enc["block_out_channels"]))]
    depth = len({m[1] for k in sd if (m := re.match(re.escape(prefix) + r"input_blocks\.1\.1\.transformer_blocks\.(\d+)\.", k))}) or 1
    cfg = {
        "sample_size": 64,
        **enc,
        "out_channels": int(sd[prefix + "out.2.weight"].shape[0]) if prefix + "out.2.weight" in sd else 4,
        "up_block_types": up_types,
        "transformer_layers_per_block": depth,
    }
    if cfg["cross_attention_dim"] != 768 and cfg["block_out_channels"][0] >= 320:
        raise HostError(f"This checkpoint's text conditioning is {cfg['cross_attention_dim']}-wide (SD1.5 uses 768): "
                        "it is not an SD1.5 model.")
    if cfg["in_channels"] != 4:
        raise HostError(f"This checkpoint's UNet takes {cfg['in_channels']} input channels (an inpainting or "
                        "instruct model); use a regular SD1.5 checkpoint.")
    return cfg


def infer_controlnet_config(sd: Mapping[str, Any], prefix: str = CONTROL_PREFIX) -> dict[str, Any]:
    cfg = _encoder(sd, prefix)  # ControlNet files hold only the encoder half of a UNet
    hint = sorted({int(m[1]) for k in sd if (m := re.match(re.escape(prefix) + r"input_hint_block\.(\d+)\.weight", k))})
    if not hint:
        raise HostError("This file is not a ControlNet model in the original layout (no input_hint_block).")
    # conv_in, then pairs of (conv, strided conv) per extra channel step, then conv_out
    outs = [int(sd[prefix + f"input_hint_block.{i}.weight"].shape[0]) for i in hint[:-1]]
    cfg["conditioning_embedding_out_channels"] = [outs[0]] + [outs[k] for k in range(2, len(outs), 2)]
    cfg["conditioning_channels"] = int(sd[prefix + "input_hint_block.0.weight"].shape[1])
    return cfg


def infer_vae_config(sd: Mapping[str, Any], prefix: str = VAE_PREFIX) -> dict[str, Any]:
    _require(sd, prefix + "encoder.conv_in.weight", "VAE encoder")
    levels = len({m[1] for k in sd if (m := re.match(re.escape(prefix) + r"encoder\.down\.(\d+)\.", k))})
    chans = [int(sd[prefix + f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(levels)]
    per = len({m[1] for k in sd if (m := re.match(re.escape(prefix) + r"encoder\.down\.0\.block\.(\d+)\.", k))})
    return {
        "in_channels": int(sd[prefix + "encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd[prefix + "decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": chans,
        "layers_per_block": per,
        "latent_channels": int(sd[prefix + "post_quant_conv.weight"].shape[0]),
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def infer_text_config(sd: Mapping[str, Any], prefix: str = TEXT_PREFIX) -> dict[str, Any]:
    emb = _require(sd, prefix + "text_model.embeddings.token_embedding.weight", "CLIP text encoder")
    vocab, hidden = (int(x) for x in emb.shape)
    layers = len({m[1] for k in sd if (m := re.match(re.escape(prefix) + r"text_model\.encoder\.layers\.(\d+)\.", k))})
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(sd[prefix + "text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "num_hidden_layers": layers,
        "num_attention_heads": 12 if hidden == 768 else max(1, hidden // 64),
        "max_position_embeddings": int(sd[prefix + "text_model.embeddings.position_embedding.weight"].shape[0]),
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": 768,
        # the original CLIP config values: pooled output taken at the highest token id (EOS)
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


# ---------------------------------------------------------------- moving tensors between layouts

def to_ldm(state_dict: Mapping[str, Any], mapper, cfg, prefix: str) -> dict[str, Any]:
    """A diffusers/transformers state dict -> LDM-named tensors under ``prefix``."""
    out = {}
    for key, tensor in state_dict.items():
        if key.endswith("position_ids"):
            continue
        name = prefix + mapper(key, cfg)
        if mapper is vae_key and _is_vae_attn_linear(name) and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[name] = tensor
    return out


def from_ldm(ckpt: Mapping[str, Any], model_keys: Mapping[str, Any], mapper, cfg, prefix: str) -> dict[str, Any]:
    """Pick a diffusers model's tensors out of an LDM checkpoint (shapes adapted), by its own key list."""
    out, missing = {}, []
    for key, ref in model_keys.items():
        if key.endswith("position_ids"):
            continue
        name = prefix + mapper(key, cfg)
        if name not in ckpt:
            missing.append(name)
            continue
        tensor = ckpt[name]
        if tuple(tensor.shape) != tuple(ref.shape):
            if tensor.numel() == ref.numel():
                tensor = tensor.reshape(ref.shape)
            else:
                raise HostError(f"Checkpoint tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}: "
                                "the file is not an SD1.5 model this loader understands.")
        out[key] = tensor
    if missing:
        shown = ", ".join(missing[:3])
        raise HostError(f"The checkpoint lacks {len(missing)} tensors the model needs (e.g. {shown}); the file is "
                        "incomplete or not an SD1.5 checkpoint.")
    return out
