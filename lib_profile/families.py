"""Stable Diffusion model families as data: what the code must know of SD1.5 and SDXL, and how a checkpoint, a LoRA
and a ControlNet model show which family they belong to.

Profile Studio generates, trains, explains, edits and inverts photos on SD1.5 and SDXL, in every host (the standalone
diffusers host with SDXL ControlNets of its own);
every other family is recognised so that a file made for it is refused with a clear message (:func:`check_compatible`,
:func:`unsupported_checkpoint_message`) instead of failing deep inside a matrix product.

Sources for the numbers below:

* UNet layouts: diffusers' configs ``runwayml/stable-diffusion-v1-5/unet/config.json`` (``block_out_channels``
  [320, 640, 1280, 1280], ``cross_attention_dim`` 768, one transformer block per attention) and
  ``stabilityai/stable-diffusion-xl-base-1.0/unet/config.json`` (``down_block_types`` [DownBlock2D,
  CrossAttnDownBlock2D, CrossAttnDownBlock2D], ``transformer_layers_per_block`` [1, 2, 10], ``cross_attention_dim``
  2048, ``addition_embed_type`` "text_time", ``projection_class_embeddings_input_dim`` 2816 = 1280 + 6 x 256).
* Text encoders: SD1.5 ``CLIPTextModel`` (OpenAI CLIP ViT-L/14, 768 wide); SDXL ``text_encoder`` (the same CLIP
  ViT-L/14, 768) and ``text_encoder_2`` (``CLIPTextModelWithProjection``, OpenCLIP ViT-bigG/14, 1280 wide, pooled
  1280), concatenated to a 2048-wide context (diffusers ``StableDiffusionXLPipeline.encode_prompt``; SGM's
  ``conditioner.embedders.0``/``.1`` with ``layer: penultimate``).
* LoRA keys: kohya sd-scripts ``networks/lora.py`` (``LORA_PREFIX_UNET = "lora_unet"``, ``LORA_PREFIX_TEXT_ENCODER
  = "lora_te"``, ``"lora_te1"``/``"lora_te2"`` for SDXL's two encoders; SDXL UNet names are the SGM ones,
  ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``) and ``library/sai_model_spec.py`` /
  ``train_util.py`` (``ss_base_model_version``: ``sd_v1``, ``sd_v2``, ``sd_v2_v``, ``sdxl_base_v1-0``;
  ``modelspec.architecture``: ``stable-diffusion-v1``, ``stable-diffusion-xl-v1-base``).
* ControlNet file names: lllyasviel's ControlNet 1.1 release (``control_v11p_sd15_openpose``,
  ``control_v11f1e_sd15_tile``) and the SDXL models the ControlNet extension and Forge users install (thibaud's
  ``thibaud_xl_openpose``/``OpenPoseXL2``, xinsir's ``controlnet-openpose-sdxl-1.0`` and ``controlnet-tile-sdxl-1.0``,
  TTPlanet's ``TTPLANET_Controlnet_Tile_realistic_v2``). The names are hints; a file's tensors decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder: ``name`` in the field's terms, hidden ``width`` (features per token), ``pooled`` width of
    its projected pooled output when the model uses it (SDXL's bigG), else None."""

    name: str
    width: int
    pooled: Optional[int] = None


@dataclass(frozen=True)
class ModelFamily:
    """What the code must know of one model family. Empty fields: not known/used for a family Profile Studio only
    recognises (SD2, SD3, Flux).

    ``text_encoders``: in conditioning order; ``context_width``: the UNet's cross-attention key/value width (the
    encoders' widths concatenated); ``transformer_depths``: transformer blocks per attention of each UNet down level
    (0 = no attention at that level); ``cross_attention_layers``: transformer blocks in the whole UNet (down, mid, up),
    one cross-attention each; ``lora_prefixes``: kohya key prefixes; ``base_versions``: ``ss_base_model_version``
    values kohya writes; ``native_size``: training side in pixels; ``portrait``: the 2:3 default (width, height);
    ``clip_skip``: the default CLIP skip (1 = last layer as the WebUI counts; SDXL's conditioner already reads the
    penultimate layer); ``controlnets``: usual ControlNet file stems by kind (``pose``, ``tile``);
    ``vae_scaling_factor``: latents = VAE mean x this; ``head_width``: features per attention head of the UNet and the
    text encoders (SGM's ``num_head_channels``), when the family's configs fix it by width rather than by count;
    ``pnp_feature_block``: the decoder residual block whose output Plug-and-Play injects (SGM/LDM name; Tumanyan et
    al., CVPR 2023, section 4: "decoder layer 4", the first decoder level with attention, at latent/4)."""

    name: str
    checkpoint_markers: tuple[str, ...] = ()   # a single-file checkpoint tensor name containing one of these
    text_encoders: tuple[TextEncoder, ...] = ()
    context_width: Optional[int] = None
    transformer_depths: tuple[int, ...] = ()
    cross_attention_layers: int = 0
    lora_prefixes: tuple[str, ...] = ()
    base_versions: tuple[str, ...] = ()
    metadata_markers: tuple[str, ...] = ()     # lowercase parts of ss_base_model_version / modelspec.architecture
    native_size: Optional[int] = None
    portrait: Optional[tuple[int, int]] = None
    clip_skip: int = 1
    controlnets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    webui_flags: tuple[str, ...] = ()          # attributes A1111 and Forge set True on the loaded model
    webui_classes: tuple[str, ...] = ()        # parts of Forge's engine class names
    vae_scaling_factor: Optional[float] = None
    head_width: Optional[int] = None
    pnp_feature_block: Optional[str] = None

    def controlnet_files(self, kind: str) -> tuple[str, ...]:
        """The usual ControlNet file stems of ``kind`` (``"pose"``/``"tile"``) for this family, best first."""
        return dict(self.controlnets).get(kind, ())


CLIP_L = TextEncoder("CLIP ViT-L/14", 768)
OPENCLIP_BIGG = TextEncoder("OpenCLIP ViT-bigG/14", 1280, pooled=1280)

SD15 = ModelFamily(
    name="SD1.5",
    checkpoint_markers=("cond_stage_model.transformer.",),
    text_encoders=(CLIP_L,),
    context_width=768,
    transformer_depths=(1, 1, 1, 0),  # 16 = down 2x3 + mid 1 + up 3x3
    cross_attention_layers=16,
    lora_prefixes=("lora_unet_", "lora_te_"),
    base_versions=("sd_v1",),
    metadata_markers=("sd_v1", "stable-diffusion-v1"),
    native_size=512,
    portrait=(512, 768),
    controlnets=(("pose", ("control_v11p_sd15_openpose", "control_sd15_openpose")),
                 ("tile", ("control_v11f1e_sd15_tile", "control_v11u_sd15_tile"))),
    vae_scaling_factor=0.18215,
    pnp_feature_block="output_blocks.4.0",  # (batch, 1280, h/16, w/16): 16x16 at 512 px (diffusers up_blocks.1.resnets.1)
)

SDXL = ModelFamily(
    name="SDXL",
    checkpoint_markers=("conditioner.embedders.",),  # SGM's conditioner (base and refiner)
    text_encoders=(CLIP_L, OPENCLIP_BIGG),
    context_width=2048,
    transformer_depths=(0, 2, 10),  # 70 = down 2x2 + 2x10, mid 10, up 3x10 + 3x2
    cross_attention_layers=70,
    lora_prefixes=("lora_unet_", "lora_te1_", "lora_te2_"),
    base_versions=("sdxl_base_v1-0", "sdxl_base_v0-9", "sdxl_refiner_v1-0"),
    metadata_markers=("sdxl", "stable-diffusion-xl"),
    native_size=1024,
    portrait=(832, 1216),
    controlnets=(("pose", ("controlnet-openpose-sdxl-1.0", "thibaud_xl_openpose", "thibaud_xl_openpose_256lora",
                           "OpenPoseXL2", "control-lora-openposeXL2-rank256")),
                 ("tile", ("controlnet-tile-sdxl-1.0", "TTPLANET_Controlnet_Tile_realistic_v2", "xinsir_tile_sdxl"))),
    webui_flags=("is_sdxl", "is_ssd"),  # SSD-1B is a distilled SDXL: same encoders and widths
    webui_classes=("XL",),
    vae_scaling_factor=0.13025,  # sd_xl_base.yaml scale_factor
    head_width=64,  # sd_xl_base.yaml num_head_channels; bigG 1280/20 heads, CLIP-L 768/12
    pnp_feature_block="output_blocks.1.0",  # SDXL's decoder starts at latent/4 (1280 ch., 32x32 at 1024 px): its
    # second residual block, as SD1.5's is the second of its latent/4 level (diffusers up_blocks.0.resnets.1)
)

SD2 = ModelFamily(name="SD2", checkpoint_markers=("cond_stage_model.model.",),  # OpenCLIP ViT-H
                  context_width=1024, lora_prefixes=("lora_unet_", "lora_te_"), base_versions=("sd_v2", "sd_v2_v"),
                  metadata_markers=("sd_v2", "stable-diffusion-v2"), native_size=768, webui_flags=("is_sd2",))
SD3 = ModelFamily(name="SD3", checkpoint_markers=("joint_blocks.",),  # MMDiT
                  metadata_markers=("sd3", "stable-diffusion-3"), webui_flags=("is_sd3",),
                  webui_classes=("StableDiffusion3",))
FLUX = ModelFamily(name="Flux", checkpoint_markers=("double_blocks.",),  # Flux and Chroma
                   metadata_markers=("flux",), webui_classes=("Flux", "Chroma"))

#: every family, in the order markers are tried (SDXL before SD1.5: an SDXL file also holds CLIP-L names)
FAMILIES: tuple[ModelFamily, ...] = (SDXL, SD2, SD3, FLUX, SD15)
#: the families Profile Studio generates and trains with today
SUPPORTED: tuple[ModelFamily, ...] = (SD15,)
_BY_NAME = {f.name: f for f in FAMILIES}
UNET_PREFIX = "model.diffusion_model."


def family(name: str) -> ModelFamily:
    """The family called ``name`` (``"SD1.5"``, ``"SDXL"``, ``"SD2"``, ``"SD3"``, ``"Flux"``); KeyError else."""
    return _BY_NAME[name]


def family_by_context_width(width: int) -> Optional[str]:
    """The family whose UNet cross-attention reads ``width``-wide text (768 SD1.5, 1024 SD2, 2048 SDXL; 1280, the
    width of SDXL's second encoder alone, also says SDXL); None for other widths."""
    if width == OPENCLIP_BIGG.width:
        return SDXL.name
    return next((f.name for f in FAMILIES if f.context_width == width), None)


# ---------------------------------------------------------------- checkpoints

def family_from_keys(keys: Iterable[str]) -> Optional[str]:
    """The family of a single-file checkpoint (original/SGM layout) from its tensor names, when it is not SD1.5:
    ``"SDXL"``, ``"SD2"``, ``"SD3"`` or ``"Flux"``; None for SD1.5 and for names that tell nothing apart."""
    keys = list(keys)
    return next((f.name for f in FAMILIES if f is not SD15
                 and any(part in key for part in f.checkpoint_markers for key in keys)), None)


def checkpoint_family(keys: Iterable[str]) -> Optional[str]:
    """The family of a single-file checkpoint from its tensor names: :func:`family_from_keys`, or ``"SD1.5"`` for a
    UNet (``model.diffusion_model.*``) with SD1's CLIP text encoder; None when the names show no known model."""
    keys = list(keys)
    other = family_from_keys(keys)
    if other is not None:
        return other
    if any(k.startswith(UNET_PREFIX) for k in keys) and any(SD15.checkpoint_markers[0] in k for k in keys):
        return SD15.name
    return None


def unsupported_checkpoint_message(found: str, what: str = "Profile Studio") -> str:
    """The message for a checkpoint of family ``found`` that is not one of :data:`SUPPORTED`."""
    names = " or ".join(f.name for f in SUPPORTED)
    sdxl = (" (SDXL generates, trains face LoRAs, explains and edits (DAAM word maps, Prompt-to-Prompt) and "
            "inverts photos (restyle, a photo's edit and explain), with SDXL ControlNets, on the standalone diffusers "
            "host and in A1111 and Forge; this part of Profile Studio is not there yet on SDXL)")
    return (f"This is {_a(found)} checkpoint. {what} works with {names} checkpoints"
            + (sdxl if found == SDXL.name else "")
            + f": pick {_a(names)} model.")


# ---------------------------------------------------------------- LoRAs

def lora_family_from_metadata(meta: Mapping[str, str]) -> Optional[str]:
    """The family a kohya/sd-scripts LoRA says it is for (``ss_base_model_version``, ``modelspec.architecture``)."""
    text = f"{meta.get('ss_base_model_version', '')} {meta.get('modelspec.architecture', '')}".lower()
    return next((f.name for f in FAMILIES if any(marker in text for marker in f.metadata_markers)), None)


_SGM_DEEP = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_\d+(_\d+)?_transformer_blocks_[1-9]")


def lora_family(keys: Iterable[str], meta: Optional[Mapping[str, str]] = None,
                context_widths: Sequence[int] = ()) -> Optional[str]:
    """The family a LoRA is for, from (in this order) its metadata, its key names (``lora_te1_``/``lora_te2_``:
    SDXL's two encoders; a second transformer block in one attention: SDXL's UNet) and ``context_widths``, the
    input widths of its ``attn2_to_k``/``attn2_to_v`` modules (:func:`family_by_context_width`); ``"SD1.5"`` for
    kohya's SD1 names (``lora_te_``, diffusers-named ``lora_unet_down_blocks_``) with nothing else saying
    otherwise; None when nothing tells."""
    said = lora_family_from_metadata(meta or {})
    if said is not None:
        return said
    keys = [k.split(".", 1)[0] for k in keys]
    if any(k.startswith(("lora_te1_", "lora_te2_")) or _SGM_DEEP.match(k) for k in keys):
        return SDXL.name
    for width in context_widths:
        found = family_by_context_width(int(width))
        if found is not None:
            return found
    if any(k.startswith(("lora_te_", "lora_unet_down_blocks_", "lora_unet_up_blocks_", "lora_unet_mid_block_"))
           for k in keys):
        return SD15.name
    return None


# ---------------------------------------------------------------- ControlNet models

def controlnet_family(shapes: Mapping[str, Sequence[int]]) -> Optional[str]:
    """The family of a ControlNet model from its tensor ``shapes`` (name -> shape; original ``control_model.*``,
    bare or diffusers names): the cross-attention key input width (768 SD1.5, 1024 SD2, 2048 SDXL), or an SDXL
    ``label_emb``/``add_embedding`` (SDXL's size conditioning) when it has no attention or a width no family has;
    None when nothing tells."""
    for name, shape in shapes.items():
        if name.endswith("attn2.to_k.weight") and len(shape) == 2:
            found = family_by_context_width(int(shape[1]))
            if found:
                return found
            break
    if any("label_emb." in name or name.startswith("add_embedding.") for name in shapes):
        return SDXL.name
    return None


def controlnet_family_from_name(name: str) -> Optional[str]:
    """A hint from a ControlNet model's file name (the WebUI lists names, not tensors): ``"SDXL"`` for names with
    ``xl``/``sdxl`` as a word part (``thibaud_xl_openpose``, ``OpenPoseXL2``) and for the usual names in the family
    data, ``"SD1.5"`` for ``sd15``/``v11``, ``"SD2"`` for ``sd21``; None otherwise."""
    stem = re.sub(r"\.(safetensors|pth|ckpt|bin)$", "", name.split("[")[0].strip().lower())
    for fam in FAMILIES:  # a usual file name of a family first (TTPlanet's tile name says nothing of XL)
        if any(stem == n.lower() for _kind, names in fam.controlnets for n in names):
            return fam.name
    parts = re.split(r"[^a-z0-9]+", stem)
    if any(p in ("xl", "sdxl") or p.endswith("xl") or "xl2" in p for p in parts):
        return SDXL.name
    if any(p in ("sd15", "v11", "sd1", "v11p", "v11f1e", "v11u", "v11e") for p in parts):
        return SD15.name
    if any(p in ("sd21", "sd2") for p in parts):
        return SD2.name
    return None


# ---------------------------------------------------------------- the one check

def _a(name: str) -> str:
    """``name`` with its article as read aloud ("an SDXL", "a Flux")."""
    return f"{'an' if name[:1] in 'AEFHILMNORSX' and name[:2] != 'Fl' else 'a'} {name}"


def check_compatible(checkpoint_family: str, lora_family: Optional[str] = None,
                     controlnet_family: Optional[str] = None, *, lora_name: str = "",
                     controlnet_name: str = "") -> Optional[str]:
    """None when the LoRA and the ControlNet model (each when given and of known family) belong with a
    ``checkpoint_family`` checkpoint; else the message to show: the file, its family, the checkpoint's family, and
    what to do (use a file made for the checkpoint's family, or load a checkpoint of the file's family)."""
    problems = []
    if lora_family and lora_family != checkpoint_family:
        problems.append(f"LoRA {lora_name or '(unnamed)'} is for {lora_family} and the checkpoint is "
                        f"{checkpoint_family}: use a LoRA made for {checkpoint_family}, or load {_a(lora_family)} "
                        "checkpoint")
    if controlnet_family and controlnet_family != checkpoint_family:
        known = checkpoint_family in _BY_NAME
        example = (family(checkpoint_family).controlnet_files("pose") or ("",))[0] if known else ""
        problems.append(f"ControlNet model {controlnet_name or '(unnamed)'} is for {controlnet_family} and the "
                        f"checkpoint is {checkpoint_family}: use {_a(checkpoint_family)} ControlNet model"
                        + (f" such as {example}" if example else "")
                        + f", or load {_a(controlnet_family)} checkpoint")
    return "; ".join(problems) + "." if problems else None
