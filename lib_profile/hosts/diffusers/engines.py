"""What the diffusers host does differently per model family, as data: how a checkpoint loads, which diffusers
pipelines run it, how prompts become conditioning, what a pass adds to a pipeline call, and which features are not
there yet on that family. The host picks an :class:`Engine` by the checkpoint's family
(:func:`lib_profile.families.checkpoint_family`) and asks it; it never tests the family itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from lib_profile import families, paths
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers import tiny, tiny_sdxl

#: the features an engine may lack, with the words a refusal names them by
FEATURES = {
    "attention": "Attention control (Explain word maps, Prompt-to-Prompt edits)",
    "inversion": "Inverting a photo (restyle, edit or explain a photo)",  # as the service and Host.denoiser say
    "controlnet": "ControlNet",
}


@dataclass(frozen=True)
class Engine:
    """One family on the diffusers host.

    ``load(path, tokenizer_dir, state_dict)`` -> the model (``checkpoint.SD15``/``sdxl_checkpoint.SDXL``);
    ``pipelines``: diffusers class names by (kind, with ControlNet); ``parts(model)``: the pipelines' constructor
    arguments; ``prompt_encoder(model, clip_skip)``: the :mod:`.scheduled_embeds` encoder; ``pass_args(width,
    height)``: what each pipeline call adds for a pass at that size; ``lacks``: :data:`FEATURES` not on this family
    yet; ``text_encoders(model)``: ``(text_encoder, text_encoder_2 or None)`` for LoRA merging."""

    family: str
    load: Callable[[Path, Path, Mapping[str, Any]], Any]
    pipelines: Mapping[tuple[str, bool], str]
    parts: Callable[[Any], dict[str, Any]]
    prompt_encoder: Callable[[Any, int], Any]
    pass_args: Callable[[int, int], dict[str, Any]]
    text_encoders: Callable[[Any], tuple[Any, Any]]
    lacks: tuple[str, ...] = ()
    extra_step_inputs: tuple[str, ...] = ()  # the callback tensors a scheduled prompt replaces besides prompt_embeds

    def has(self, feature: str) -> bool:
        return feature not in self.lacks

    def refusal(self, what: str) -> HostError:
        """The error for ``what`` asked of a feature this family lacks on the diffusers host."""
        return HostError(f"{what} is not there yet on {self.family} checkpoints (the diffusers host runs it on "
                         f"{families.SD15.name} checkpoints): load an {families.SD15.name} checkpoint for it.")


def _load_sd15(path, tokenizer_dir, sd):
    from lib_profile.hosts.diffusers.checkpoint import load_sd15

    return load_sd15(path, tokenizer_dir, sd)


def _load_sdxl(path, tokenizer_dir, sd):
    from lib_profile.hosts.diffusers.sdxl_checkpoint import load_sdxl

    return load_sdxl(path, tokenizer_dir, sd)


def _sd15_parts(model) -> dict[str, Any]:
    return dict(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer, unet=model.unet,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _sdxl_parts(model) -> dict[str, Any]:
    return dict(vae=model.vae, text_encoder=model.text_encoder, text_encoder_2=model.text_encoder_2,
                tokenizer=model.tokenizer, tokenizer_2=model.tokenizer_2, unet=model.unet,
                force_zeros_for_empty_prompt=True, add_watermarker=False)


def _sd15_encoder(model, clip_skip: int):
    from lib_profile.hosts.diffusers.scheduled_embeds import ClipPromptEncoder

    return ClipPromptEncoder(model.text_encoder, model.tokenizer, clip_skip)


def _sdxl_encoder(model, clip_skip: int):
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    return SdxlPromptEncoder(model, clip_skip)


def _sdxl_size(width: int, height: int) -> dict[str, Any]:
    """SDXL's size and crop conditioning for a pass at ``width`` x ``height``: original = target = the pass's size,
    no crop, as A1111 conditions each pass (``sd_models_xl.get_learned_conditioning``)."""
    return dict(original_size=(height, width), target_size=(height, width), crops_coords_top_left=(0, 0))


SD15 = Engine(
    family=families.SD15.name, load=_load_sd15,
    pipelines={("txt2img", False): "StableDiffusionPipeline", ("img2img", False): "StableDiffusionImg2ImgPipeline",
               ("inpaint", False): "StableDiffusionInpaintPipeline",
               ("txt2img", True): "StableDiffusionControlNetPipeline",
               ("img2img", True): "StableDiffusionControlNetImg2ImgPipeline",
               ("inpaint", True): "StableDiffusionControlNetInpaintPipeline"},
    parts=_sd15_parts, prompt_encoder=_sd15_encoder, pass_args=lambda width, height: {},
    text_encoders=lambda model: (model.text_encoder, None),
)

SDXL = Engine(
    family=families.SDXL.name, load=_load_sdxl,
    pipelines={("txt2img", False): "StableDiffusionXLPipeline", ("img2img", False): "StableDiffusionXLImg2ImgPipeline",
               ("inpaint", False): "StableDiffusionXLInpaintPipeline",
               ("txt2img", True): "StableDiffusionXLControlNetPipeline",
               ("img2img", True): "StableDiffusionXLControlNetImg2ImgPipeline",
               ("inpaint", True): "StableDiffusionXLControlNetInpaintPipeline"},
    parts=_sdxl_parts, prompt_encoder=_sdxl_encoder, pass_args=_sdxl_size,
    text_encoders=lambda model: (model.text_encoder, model.text_encoder_2),
    extra_step_inputs=("add_text_embeds",),
)

ENGINES: dict[str, Engine] = {e.family: e for e in (SD15, SDXL)}


def resolve_checkpoint(checkpoint: str | Path, data_dir: str | Path | None = None) -> Path:
    """``"tiny"`` / ``"tiny-sdxl"`` -> the cached tiny test model / SDXL-shaped one (built on first use); anything
    else must be a file."""
    if str(checkpoint) == "tiny":
        return tiny.ensure_tiny(paths.cache_dir(data_dir)) / tiny.CHECKPOINT
    if str(checkpoint) == tiny_sdxl.NAME:
        return tiny_sdxl.ensure_tiny_sdxl(paths.cache_dir(data_dir))
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise HostError(f"Checkpoint not found: {path}. Give an SD1.5 or SDXL .safetensors/.ckpt file, or 'tiny' / "
                        "'tiny-sdxl' for the built-in test models (they draw noise).")
    return path


def tiny_controlnet(data_dir: str | Path | None = None, checkpoint: str | Path = "tiny") -> Path:
    """The tiny test ControlNet for the tiny model ``checkpoint`` names (``"tiny"``: SD1.5's, original layout;
    ``"tiny-sdxl"``: SDXL's, diffusers layout), built on first use."""
    if str(checkpoint) == tiny_sdxl.NAME:
        return tiny_sdxl.ensure_tiny_sdxl(paths.cache_dir(data_dir)).parent / tiny_sdxl.CONTROLNET
    return tiny.ensure_tiny(paths.cache_dir(data_dir)) / tiny.CONTROLNET


def checkpoint_engine(path: str | Path) -> Engine:
    """The engine for a single-file checkpoint, from its tensor names (a .safetensors header; a pickle's names with
    its tensors memory-mapped, not read). A family without one (SD2, SD3, Flux) gets SD1.5's, whose loader refuses it naming the family;
    HostError for a file that is missing, empty or not a model."""
    from lib_profile.hosts.diffusers.checkpoint import read_state_dict
    from lib_profile.safetensors_header import tensor_names

    keys = tensor_names(path)
    if keys is None:
        keys = list(read_state_dict(path, mmap=True))  # the names only: the tensors stay in the file
    return ENGINES.get(families.checkpoint_family(keys) or families.SD15.name, SD15)
