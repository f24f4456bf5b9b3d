"""The WebUI's loaded model lent as a :class:`~lib_profile.hosts.denoiser.Denoiser` (photo inversion and editing).

What A1111 and Forge share lives here: the image <-> tensor conversions, conditioning padded as A1111's
``sd_samplers_cfg_denoiser.pad_cond`` pads (the empty prompt's 77-token chunk repeated), the step clock of our
own sampling loop (:class:`LoopState`: the n-th ``eps`` call inside ``controlled`` is step n; rows
``[negative x images, prompt x images]``), the Plug-and-Play feature hook, and the lending itself
(:func:`lent`: the WebUI's queue when the caller holds none, the checkpoint loaded and checked, the prompts' LoRA
tags activated through ``modules.extra_networks`` as ``process_images`` activates them, CLIP skip set through
``opts`` - all undone on exit).

On SDXL the WebUI's ``get_learned_conditioning`` gives a dict: ``crossattn`` (the two encoders' token states,
``(1, 77 * chunks, 2048)``) and ``vector`` (``(1, 2816)``: bigG's pooled output, 1280, then the size conditioning,
sinusoidal embeddings of the original size, crop corner and target size; A1111 ``sd_models_xl.py``, Forge
``backend/diffusion_engine/sdxl.py``). The conditioning here follows the Denoiser protocol's convention: the token
states, then one row holding the pooled vector (zero-padded to 2048), which ``eps`` splits off again and joins to
the size part the WebUI itself computes for the latents' size (original = target = the photo's size, the crop
corner from the WebUI's settings: what its own generation at that size passes). An empty prompt is a negative one
(``SdConditioning.is_negative_prompt``), which both WebUIs condition as zeros on SDXL, as their generation does.

The flavours' parts: :mod:`.a1111_denoiser` (``shared.sd_model``'s ``apply_model``, per-instance attention
forwards) and :mod:`.forge_denoiser` (``forge_objects``, attention-replace patches on a clone of the UNet patcher).
``modules`` is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from typing import Iterator, Optional

from PIL import Image

from lib_profile.families import SD15, SDXL, ModelFamily
from lib_profile.hosts.base import HostError, LoraRef
from lib_profile.hosts.denoiser import Denoiser, FeatureHook
from lib_profile.hosts.webui.attention import StepState
from lib_profile.hosts.webui.options import restoring_opts
from lib_profile.prompts.parse import extract_networks, lora_tags
from lib_profile.prompts.schedule import refuse_composable

CLIP_SKIP_KEY = "CLIP_stop_at_last_layers"
TOKENS_PER_CHUNK = 77
#: the width of SDXL's pooled text vector (OpenCLIP ViT-bigG's projection): the first part of the UNet's ``vector``
POOLED = next(e.pooled for e in SDXL.text_encoders if e.pooled)


class LoopState(StepState):
    """The step clock of our own sampling loop for the WebUI's attention plumbing (``attention.StepState``'s
    surface): :meth:`next_eval` is called by each ``eps`` inside ``controlled``; the n-th is step n (0-based), the
    controller is begun before the first (at the latents' size) and ended on exit. Rows of a batch of
    ``2 * images``: ``0..images-1`` the negative prompt's, ``images..2*images-1`` the prompt's; any other batch is
    all prompt rows."""

    def __init__(self, controller, steps: int, images: int):
        super().__init__(controller, (0, 0), images)
        self.steps, self.step, self.calls = int(steps), -1, 0

    def next_eval(self, latents) -> None:
        if not self.started:
            self.latent_hw = tuple(int(s) for s in latents.shape[-2:])
            self.started = True
            if self.controller is not None:
                self.controller.begin(self.steps, self.latent_hw)
        self.step, self.calls = self.calls, self.calls + 1
        self.evaluation, self.last = 0, True

    def rows(self, batch: int) -> tuple[list[int], list[int]]:
        """``(cond rows, uncond rows)`` of a UNet call's batch."""
        n = self.images
        if batch == 2 * n:
            return list(range(n, 2 * n)), list(range(n))
        return list(range(batch)), []

    def order(self, batch: int) -> list[int]:
        """Forge's ``cond_or_uncond`` for the batch (0 = cond, 1 = uncond, one entry per equal chunk)."""
        return [1, 0] if batch == 2 * self.images else [0]


def image_tensor(image: Image.Image):
    """RGB ``image`` -> ``(1, 3, H, W)`` float32 in -1..1; HostError unless both sides are multiples of 8."""
    import numpy as np
    import torch

    if image.width % 8 or image.height % 8 or not image.width or not image.height:
        raise HostError(f"the photo must be a multiple of 8 px on each side, not {image.width}x{image.height}")
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def tensor_images(x) -> list[Image.Image]:
    """``(n, 3, H, W)`` in -1..1 -> n RGB images (rounded as the WebUI saves them)."""
    import numpy as np
    import torch

    x = torch.clamp((x.detach().float().cpu() + 1.0) / 2.0, 0.0, 1.0)
    arrays = (255.0 * x.permute(0, 2, 3, 1).numpy()).round().astype(np.uint8)  # 255 * x as the WebUI saves
    return [Image.fromarray(a, "RGB") for a in arrays]


class WebUIDenoiser(Denoiser):
    """What both flavours share; a flavour gives ``_encode``, ``_decode``, ``_learned``, ``_empty_chunk``,
    ``_tokenize``, ``_unet`` and ``_attention``. ``diffusion_model``: the LDM/SGM-layout UNet (its
    ``family.pnp_feature_block`` is Plug-and-Play's feature block); ``family``: SD1.5 or SDXL."""

    def __init__(self, sd_model, diffusion_model, alphas_cumprod, device, dtype, family: ModelFamily = SD15):
        import torch

        self.sd_model, self.diffusion_model, self.family = sd_model, diffusion_model, family
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64).clone()
        if self.alphas_cumprod.shape != (1000,):
            raise HostError(f"the WebUI's model has {tuple(self.alphas_cumprod.shape)} timesteps, not 1000; "
                            "photo inversion needs an SD1.5 or SDXL checkpoint")
        self.device, self.dtype = device, dtype
        self._loop: Optional[LoopState] = None
        self._sizes: dict = {}  # SDXL: (height, width) in px -> the size part of the UNet's vector

    # -- the flavour's parts
    def _encode(self, pixels):
        raise NotImplementedError

    def _decode(self, latents):
        raise NotImplementedError

    def _learned(self, batch):
        """The WebUI's ``get_learned_conditioning(batch)`` (a tensor on SD1.5, a dict on SDXL)."""
        raise NotImplementedError

    def _empty_chunk(self):
        """The empty prompt's chunk ``(1, 77, dim)`` that pads a shorter conditioning (a positive prompt: on SDXL
        not zeroed, as A1111's ``cond_stage_model_empty_prompt`` is made)."""
        cond = self._learned([""])
        return cond["crossattn"] if isinstance(cond, dict) else cond

    def _tokenize(self, text: str) -> list:
        raise NotImplementedError

    def _unet(self, latents, t: int, context, vector=None):
        """The noise prediction; ``vector``: SDXL's ``(b, 2816)`` (None on SD1.5)."""
        raise NotImplementedError

    def _attention(self, loop: LoopState):
        raise NotImplementedError

    # -- the protocol
    def encode(self, image: Image.Image):
        import torch

        with torch.no_grad():
            latents = self._encode(image_tensor(image))
        return latents.detach().clone().to(self.device, self.dtype)

    def decode(self, latents) -> list[Image.Image]:
        import torch

        if getattr(latents, "ndim", 0) != 4 or latents.shape[1] != 4:
            raise HostError(f"latents must be (n, 4, h, w), not {tuple(getattr(latents, 'shape', ()))}")
        with torch.no_grad():
            return tensor_images(self._decode(latents.detach()))

    @staticmethod
    def _words(prompt: str) -> str:
        text = extract_networks(prompt)[0]  # the tags were applied when the denoiser was opened
        refuse_composable(text, "Photo inversion")
        return text

    def chunks(self, prompt: str) -> int:
        return max(1, len(self._tokenize(self._words(prompt))))

    @property
    def pooled(self) -> bool:
        """Whether the family's UNet reads a pooled text vector (SDXL), carried as the conditioning's last row."""
        return self.family.name == SDXL.name

    def _batch(self, text: str, width: Optional[int] = None, height: Optional[int] = None):
        """``[text]`` as the WebUI's generation hands a prompt to ``get_learned_conditioning`` on SDXL (a
        ``prompt_parser.SdConditioning``: its size, and an empty prompt marked negative); a plain list on SD1.5."""
        if not self.pooled:
            return [text]
        from modules.prompt_parser import SdConditioning

        return SdConditioning([text], is_negative_prompt=not text.strip(), width=width, height=height)

    def _states(self, text: str):
        """``(token states (1, 77 * chunks, dim), pooled (1, 1280) or None)`` of ``text`` as the WebUI reads it."""
        cond = self._learned(self._batch(text))
        if not isinstance(cond, dict):
            return cond, None
        return cond["crossattn"], (cond["vector"][:, :POOLED] if self.pooled else None)

    def conditioning(self, prompt: str, chunks: int = 1):
        """As the WebUI reads ``prompt`` (its tags removed), padded with the empty prompt's chunk (A1111's
        ``pad_cond``) to ``chunks``; on SDXL one more row, the pooled vector (module docstring). A plain tensor (not
        an inference-mode one), so it may be optimised. HostError for a prompt combined with ``AND``."""
        import torch

        with torch.no_grad():
            cond, pooled = self._states(self._words(prompt))
            own = cond.shape[1] // TOKENS_PER_CHUNK
            if chunks > own:
                empty = self._empty_chunk().to(cond.device, cond.dtype)
                cond = torch.cat([cond, empty.repeat(cond.shape[0], chunks - own, 1)], dim=1)
            if pooled is not None:
                row = torch.nn.functional.pad(pooled.to(cond), (0, cond.shape[-1] - pooled.shape[-1]))
                cond = torch.cat([cond, row[:, None]], dim=1)
        return cond.detach().clone().to(self.device, self.dtype)

    def _size_vector(self, height: int, width: int):
        """SDXL: the size part of the UNet's ``vector`` (1, 1536) for a ``width`` x ``height`` px picture, as the
        WebUI conditions its own generation at that size (computed once per size)."""
        import torch

        if (height, width) not in self._sizes:
            with torch.no_grad():
                vector = self._learned(self._batch("", width=width, height=height))["vector"]
            self._sizes[height, width] = vector[:, POOLED:].detach().clone()
        return self._sizes[height, width]

    def eps(self, latents, t: int, context):
        import torch

        if not 0 <= int(t) <= 999 or int(t) != t:
            raise HostError(f"t must be an integer DDPM timestep 0..999, not {t!r}")
        if context.shape[0] != latents.shape[0]:
            if context.shape[0] != 1:
                raise HostError(f"context batch {context.shape[0]} does not match latents batch {latents.shape[0]}")
            context = context.expand(latents.shape[0], *context.shape[1:])
        if self._loop is not None:
            self._loop.next_eval(latents)
        context, vector = context.to(self.device, self.dtype), None
        if self.pooled:
            height, width = (8 * int(s) for s in latents.shape[-2:])
            sizes = self._size_vector(height, width).to(context).expand(context.shape[0], -1)
            context, vector = context[:, :-1], torch.cat([context[:, -1, :POOLED], sizes], dim=1)
        return self._unet(latents.to(self.device, self.dtype), int(t), context, vector)

    @contextlib.contextmanager
    def controlled(self, controller, steps: int, images: int,
                   features: Optional[FeatureHook] = None) -> Iterator[None]:
        if self._loop is not None:
            raise HostError("this denoiser is already controlled (one controlled run at a time)")
        loop = LoopState(controller, steps, images)
        handle = None
        if features is not None:
            block = self.diffusion_model.get_submodule(self.family.pnp_feature_block)
            handle = block.register_forward_hook(lambda module, args, output: features(loop.step, output))
        self._loop = loop
        try:
            with (self._attention(loop) if controller is not None else contextlib.nullcontext()):
                yield
        finally:
            self._loop = None
            if handle is not None:
                handle.remove()
            if loop.started and controller is not None:
                controller.end()


def tagged_prompts(prompts: list[str], loras: Optional[list[LoraRef]]) -> list[str]:
    """The prompts with ``<lora:stem:weight>`` for each of ``loras`` (as the WebUI host's txt2img adds them)."""
    return [lora_tags(p, list(loras or [])) for p in (prompts or [""])]


@contextlib.contextmanager
def networks_applied(prompts: list[str], before_activate=None) -> Iterator[None]:
    """The prompts' extra networks (``<lora:...>``) activated as ``process_images`` activates them
    (``extra_networks.parse_prompt`` each prompt - their tags merged, the first of a name kept - then ``activate``
    under ``devices.autocast``), deactivated on exit, and a LoRA loaded unloaded again (``activate`` with none, as
    A1111's ``get_empty_cond`` and every later generation do). HostError naming a LoRA the WebUI did not load."""
    from modules import devices, extra_networks, processing

    data: dict = {}
    for prompt in prompts:
        for kind, params in extra_networks.parse_prompt(prompt)[1].items():
            have = data.setdefault(kind, [])
            names = {x.items[0] for x in have if x.items}
            have.extend(x for x in params if x.items and x.items[0] not in names)
    p = processing.StableDiffusionProcessingTxt2Img()
    p.all_prompts = p.prompts = list(prompts)
    if before_activate is not None:
        before_activate()
    with devices.autocast():
        extra_networks.activate(p, data)
    try:
        wanted = [x.items[0] for kind in ("lora", "lyco") for x in data.get(kind, [])]
        networks = sys.modules.get("networks")
        loaded = {getattr(n, "mentioned_name", None) or getattr(n, "name", None)
                  for n in getattr(networks, "loaded_networks", [])}
        missing = [n for n in wanted if n not in loaded]
        if missing:
            raise HostError(f"LoRA {', '.join(missing)} not found in the WebUI's Lora folder; put the file there "
                            "(or remove the tag) and try again")
        yield
    finally:
        extra_networks.deactivate(p, data)
        if any(data.values()):
            blank = processing.StableDiffusionProcessingTxt2Img()
            blank.all_prompts = blank.prompts = [""]
            with devices.autocast():
                extra_networks.activate(blank, {})


@contextlib.contextmanager
def lent(host, prompts: list[str], loras: Optional[list[LoraRef]] = None, clip_skip: int = 1) -> Iterator[Denoiser]:
    """``WebUIHost.denoiser``: the WebUI's queue taken as ``host.job`` takes it unless this thread's job holds it,
    the selected checkpoint loaded (Forge: no ``FakeInitialModel``) and checked to be SD1.5 or SDXL, then the flavour's
    denoiser (``flavour.lend_model``) with the LoRAs and CLIP skip applied; everything undone on exit."""
    if not 1 <= int(clip_skip) <= 12:
        raise HostError(f"clip_skip must be within 1..12, not {clip_skip}")
    ours = host._job_thread == threading.get_ident()
    held = contextlib.nullcontext() if ours else \
        host.job(f"task(profile-studio-{uuid.uuid4().hex[:12]})", 1, "Profile Studio: photo")
    with held:
        host.flavour.load_model()
        host.check_model_family("Inverting a photo (restyle, edit or explain a photo)")
        shared = host._m("shared")
        tagged = tagged_prompts(prompts, [host.publish_lora(x) for x in (loras or [])])
        with restoring_opts(shared.opts, {CLIP_SKIP_KEY: int(clip_skip)}):
            shared.opts.data[CLIP_SKIP_KEY] = int(clip_skip)
            with host.flavour.lend_model(shared.sd_model, tagged, int(clip_skip)) as denoiser:
                denoiser.info = model_info(shared.sd_model, tagged)
                yield denoiser


def model_info(sd_model, prompts: list[str]) -> dict:
    """``Denoiser.info`` for the infotext: the checkpoint as the WebUI's own infotext names it
    (``sd_checkpoint_info.name_for_extra``, ``sd_model_hash``) and the LoRAs the tags applied (their files, as the
    built-in Lora extension lists them)."""
    checkpoint = getattr(sd_model, "sd_checkpoint_info", None)
    available = getattr(sys.modules.get("networks"), "available_networks", {}) or {}
    loras, seen = [], set()
    for prompt in prompts:
        for network in extract_networks(prompt)[1]:
            if network.kind in ("lora", "lyco") and network.name not in seen:
                seen.add(network.name)
                path = getattr(available.get(network.name), "filename", None) or network.name
                loras.append({"path": str(path), "weight": network.weight})
    return {"model": getattr(checkpoint, "name_for_extra", None) or getattr(checkpoint, "model_name", None),
            "model_hash": getattr(sd_model, "sd_model_hash", None) or getattr(checkpoint, "shorthash", None),
            "loras": loras, "lora_notes": []}
