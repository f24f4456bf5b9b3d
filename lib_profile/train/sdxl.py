"""The face trainer on SDXL: the loaded components it trains (:class:`SDXLModel`, the loader's seam) and SDXL's
conditioning (:class:`SDXLConditioning`).

SDXL's UNet reads, besides the noisy latents and the timestep (diffusers ``StableDiffusionXLPipeline``, SGM's
``conditioner``):

* ``encoder_hidden_states`` ``(batch, 77, 2048)``: the penultimate hidden states of CLIP ViT-L (768) and of OpenCLIP
  bigG (1280), concatenated per token. Both encoders read the same token ids, except that the second pads with ``!``
  (id 0) after the end token.
* ``added_cond_kwargs["text_embeds"]`` ``(batch, 1280)``: bigG's projected pooled output (its end token).
* ``added_cond_kwargs["time_ids"]`` ``(batch, 6)``: original height and width, crop top and left, target height and
  width, in pixels. A training image's original size is its intake crop's size before resizing, its crop (0, 0) (the
  whole crop is used), its target the training resolution; kohya's sd-scripts does the same.

Both are cached: the caption conditioning per distinct caption, the size numbers per image. Training the text
encoders (off by default) encodes the captions at each step instead; their LoRA keys are ``lora_te1_``/``lora_te2_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.lora import keys
from lib_profile.train.conditioning import SD15Conditioning


def _scheduler_config() -> dict[str, Any]:
    from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG

    return dict(SCHEDULER_CONFIG)  # SDXL base trains with SD1.5's schedule (scaled linear 0.00085..0.012, 1000 steps)


@dataclass
class SDXLModel:
    """A loaded SDXL model as the trainer takes it: diffusers ``UNet2DConditionModel`` (``addition_embed_type``
    ``"text_time"``), ``AutoencoderKL``, ``CLIPTextModel`` (CLIP ViT-L), ``CLIPTextModelWithProjection`` (OpenCLIP
    bigG), their tokenizers (``tokenizer_2`` pads with ``!``), where it came from, the noise schedule."""

    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    path: Path
    scheduler_config: dict[str, Any] = field(default_factory=_scheduler_config)
    family = families.SDXL.name

    @property
    def name(self) -> str:
        return self.path.stem


def sdxl_model(unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2=None, path: str | Path = "sdxl",
               scheduler_config: dict[str, Any] | None = None) -> SDXLModel:
    """The seam between an SDXL loader and the trainer: loaded diffusers/transformers components -> the
    :class:`SDXLModel` to pass as ``Trainer(checkpoint=...)``. ``tokenizer_2`` None: ``tokenizer`` padding with id 0
    (``!``). ``path``: the checkpoint file (its name goes into the LoRA's metadata)."""
    return SDXLModel(unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, Path(path),
                     dict(scheduler_config or _scheduler_config()))


def load_sdxl_checkpoint(path: Path, data_dir) -> SDXLModel:
    """Load an SDXL single-file checkpoint for training, with the diffusers host's SDXL loader
    (``lib_profile.hosts.diffusers.sdxl_checkpoint.load_sdxl(path, tokenizer_dir)``, whose model has the fields of
    :class:`SDXLModel`); HostError for a file that is not a complete SDXL model."""
    from lib_profile import paths

    from lib_profile.hosts.diffusers.sdxl_checkpoint import load_sdxl

    m = load_sdxl(path, paths.tokenizer_dir(data_dir))
    return sdxl_model(m.unet, m.vae, m.text_encoder, m.text_encoder_2, m.tokenizer, m.tokenizer_2, m.path,
                      getattr(m, "scheduler_config", None))


def is_sdxl(model) -> bool:
    """Whether a loaded model is SDXL-shaped: a second text encoder, or a UNet with SDXL's ``text_time``
    embedding."""
    unet_config = getattr(getattr(model, "unet", None), "config", None) or {}
    return (getattr(model, "text_encoder_2", None) is not None
            or dict(unet_config).get("addition_embed_type") == "text_time")


class SDXLConditioning(SD15Conditioning):
    """SDXL: two text encoders' caption conditioning, pooled text and size/crop numbers (see the module)."""

    family = families.SDXL
    needs_gb = 11.0  # the UNet in bf16 (5.2 GB) + checkpointed activations at 1024 px; the low-memory mode
    checkpointing_below_gb = 24.0

    def __init__(self, model, cfg, device):
        if getattr(model, "text_encoder_2", None) is None:
            raise HostError("This SDXL model has no second text encoder (OpenCLIP bigG); load a complete SDXL "
                            "base-architecture checkpoint.")
        super().__init__(model, cfg, device)

    def text_encoders(self) -> list[tuple[Any, Callable[[str], str]]]:
        return [(self.model.text_encoder, keys.te1_module_key), (self.model.text_encoder_2, keys.te2_module_key)]

    def unet_key(self) -> Callable[[str], str]:
        config = dict(self.model.unet.config)
        return lambda name: keys.sdxl_unet_module_key(name, config)

    def cache(self, captions: list[str], sizes: list[tuple[int, int]], resolution: int) -> None:
        import torch

        super().cache(captions, sizes, resolution)
        self.time_ids = torch.tensor([[h, w, 0, 0, resolution, resolution] for h, w in sizes], dtype=torch.float32,
                                     device=self.device)

    def _encode_all(self, captions: list[str]):
        """``((n, 77 * chunks, 2048), (n, 1280))`` on the device: each caption's context and pooled text."""
        import torch

        pairs = [self.encode(c) for c in captions]
        return (torch.cat([p[0] for p in pairs]).to(self.device), torch.cat([p[1] for p in pairs]).to(self.device))

    def encode(self, text: str, min_chunks: int = 1):
        """``(context (1, 77 * chunks, width 1 + width 2), pooled (1, pooled width))`` of ``text`` (padded with
        empty chunks to ``min_chunks``), encoded as the diffusers host encodes SDXL prompts
        (:class:`lib_profile.hosts.diffusers.sdxl_prompts.SdxlPromptEncoder`: both encoders' penultimate states,
        the second's pooled output of the first chunk); with gradients when the text encoders train."""
        from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

        return SdxlPromptEncoder(self.model, grad=bool(self.cfg.train_text_encoder)).encode(text, min_chunks)

    def __call__(self, idx) -> tuple[Any, dict[str, Any]]:
        """``(context (batch, 77, 2048), {"added_cond_kwargs": {"text_embeds", "time_ids"}})`` of images ``idx``."""
        idx = idx.to(self.caption_index.device)
        index = self.caption_index[idx]
        if self.text_cache is not None:
            context, pooled = self.text_cache[0][index], self.text_cache[1][index]
        else:
            context, pooled = self._encode_all([self.unique_captions[i] for i in index.tolist()])
        return context, {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": self.time_ids[idx]}}

    def validation_pipeline(self, scheduler):
        from diffusers import StableDiffusionXLPipeline

        m = self.model
        tokenizer_2 = m.tokenizer if m.tokenizer_2 is None else m.tokenizer_2
        return StableDiffusionXLPipeline(vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2,
                                         tokenizer=m.tokenizer, tokenizer_2=tokenizer_2, unet=m.unet,
                                         scheduler=scheduler, add_watermarker=False)

    def validation_inputs(self, prompts: list[str], negative: str) -> dict[str, Any]:
        """Prompt and negative conditioning, pooled text included (the negative padded to the prompt's chunks)."""
        import torch

        from lib_profile.prompts import parse

        tok = self.model.tokenizer
        chunks = max(parse.chunk_count(tok, t) for t in [*prompts, negative])
        with torch.no_grad():
            cond = [self.encode(p, chunks) for p in prompts]
            neg = self.encode(negative, chunks)
        n = len(prompts)
        return {"prompt_embeds": torch.cat([c[0] for c in cond]).to(self.device),
                "pooled_prompt_embeds": torch.cat([c[1] for c in cond]).to(self.device),
                "negative_prompt_embeds": neg[0].expand(n, -1, -1).to(self.device),
                "negative_pooled_prompt_embeds": neg[1].expand(n, -1).to(self.device)}

    def metadata(self, resolution: int) -> dict[str, str]:
        """kohya sd-scripts' SDXL fields (``sdxl_train_network.py``; ``sai_model_spec.py``: architecture
        ``stable-diffusion-xl-v1-base/lora``, implementation Stability's ``generative-models``)."""
        return {"ss_base_model_version": "sdxl_base_v1-0", "ss_v2": "False",
                "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
                "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
                "modelspec.resolution": f"{resolution}x{resolution}", "modelspec.prediction_type": "epsilon"}
