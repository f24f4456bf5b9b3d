"""What a user does with a real photo: restyle it (Plug-and-Play), edit it by editing a prompt (Prompt-to-Prompt), or
explain it (DAAM). Each inverts the photo first (``inversion.methods``) on the host's own model (``Host.denoiser``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from lib_profile.hosts.base import Host, HostError, LoraRef, RunControl
from lib_profile.infotext import infotext
from lib_profile.inversion.sampling import METHODS, Progress, invert, sample, total_steps

ASPECTS = ((2, 3), (1, 1), (3, 2))  # width : height the photo is cropped to (the nearest of these)


@dataclass
class PhotoSettings:
    """How a photo is inverted and sampled again. ``method``: ``direct`` (Direct Inversion, Ju et al., ICLR 2024:
    exact, no optimisation; the default), ``null-text`` (Mokady et al., CVPR 2023: per-step negative-prompt embeddings
    optimised, up to ``null_text_iterations`` Adam steps a step) or ``ddim`` (plain DDIM inversion, Song et al. 2021;
    drifts at a CFG above 1). ``size``: the short side in px the photo is cropped and scaled to (multiples of 64,
    2:3 or 3:2 or square, the nearest to the photo's aspect); None: the model family's (:func:`photo_size`: the short
    side of its 2:3 portrait, 512 on SD1.5, 832 on SDXL)."""

    method: str = "direct"
    steps: int = 50
    cfg_scale: float = 7.5
    negative_prompt: str = ""
    clip_skip: int = 1
    size: Optional[int] = None
    null_text_iterations: int = 10

    def validate(self) -> None:
        if self.method not in METHODS:
            raise HostError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if not 2 <= self.steps <= 200:
            raise HostError(f"steps must be within 2..200, not {self.steps}")
        if not 1.0 <= self.cfg_scale <= 30.0:
            raise HostError(f"cfg_scale must be within 1..30, not {self.cfg_scale}")
        if not 1 <= self.clip_skip <= 12:
            raise HostError(f"clip_skip must be within 1..12, not {self.clip_skip}")
        if self.size is not None and (self.size % 64 or not 64 <= self.size <= 1024):
            raise HostError(f"size must be a multiple of 64 within 64..1024, not {self.size}")
        if not 1 <= self.null_text_iterations <= 50:
            raise HostError(f"null_text_iterations must be within 1..50, not {self.null_text_iterations}")


@dataclass
class PhotoResult:
    """``images``: ``photo`` (the photo as cropped and scaled), ``reconstruction`` (it inverted and sampled back with
    its source prompt), and ``edited`` (restyle, edit) - as named. ``params``: what ran (for the infotext)."""

    images: dict[str, Image.Image]
    params: dict[str, Any]
    infotext: str = ""
    notes: list[str] = field(default_factory=list)


def photo_size(settings: PhotoSettings, host: Host) -> int:
    """The short side a photo is fitted to: ``settings.size``, else the host's model family's (the short side of its
    2:3 portrait: 512 on SD1.5, 832 on SDXL; SDXL sampled at SD1.5's size loses detail)."""
    from lib_profile.families import family

    return settings.size or family(host.model_family).portrait[0]


def fit_photo(image: Image.Image, size: int = 512) -> Image.Image:
    """``image`` (any mode, EXIF rotation already applied by the reader) centre-cropped to the nearest of 2:3, 1:1 and
    3:2 and scaled (Lanczos) so its short side is ``size`` px: 512 -> 512x768, 512x512 or 768x512."""
    import math

    image = image.convert("RGB")
    ratio = image.width / image.height
    w, h = min(ASPECTS, key=lambda a: abs(math.log(ratio * a[1] / a[0])))
    if image.width * h > image.height * w:  # too wide: cut the sides
        crop_w = round(image.height * w / h)
        left = (image.width - crop_w) // 2
        image = image.crop((left, 0, left + crop_w, image.height))
    else:
        crop_h = round(image.width * h / w)
        top = (image.height - crop_h) // 2
        image = image.crop((0, top, image.width, top + crop_h))
    short = min(w, h)
    return image.resize((size * w // short, size * h // short), Image.LANCZOS)


def _check_prompts(*texts: str) -> None:
    from lib_profile.prompts.schedule import refuse_scheduled

    for text in texts:  # the conditioning of every step is the same in an inversion
        refuse_scheduled(text, "Photo inversion")


def _params(den, settings: PhotoSettings, image: Image.Image, prompt: str, progress: Progress) -> dict[str, Any]:
    info = den.info or {}
    return {"prompt": prompt, "negative_prompt": settings.negative_prompt, "steps": settings.steps,
            "sampler": "DDIM", "cfg_scale": settings.cfg_scale, "width": image.width, "height": image.height,
            "clip_skip": settings.clip_skip, "model": info.get("model"), "model_hash": info.get("model_hash"),
            "loras": info.get("loras") or [], "lora_notes": info.get("lora_notes") or [], "kind": "photo",
            "inversion": settings.method, "progress_steps": progress.total}


def _extra(settings: PhotoSettings) -> dict[str, Any]:
    extra = {"Inversion": settings.method}
    if settings.method == "null-text":
        extra["Null-text iterations"] = settings.null_text_iterations
    return extra


def _run(host: Host, photo: Image.Image, source_prompt: str, prompts: list[str], settings: PhotoSettings,
         loras, control, make_controller):
    """Invert ``photo`` under ``source_prompt`` and sample ``prompts`` (the first the source's) from it, with what
    ``make_controller(den)`` gives: ``(an attention controller or None, a UNet feature hook or None)``. Returns (the
    fitted photo, the latents' images, the denoiser's params, the controller)."""
    settings.validate()
    _check_prompts(source_prompt, *prompts, settings.negative_prompt)
    image = fit_photo(photo, photo_size(settings, host))
    progress = Progress(control, total_steps(settings.method, settings.steps))
    with host.denoiser(list(dict.fromkeys([source_prompt, *prompts])), loras, settings.clip_skip) as den:
        chunks = max(den.chunks(p) for p in (source_prompt, *prompts, settings.negative_prompt))
        inv = invert(den, den.encode(image), source_prompt, settings.negative_prompt, settings.method, settings.steps,
                     settings.cfg_scale, chunks, settings.null_text_iterations, progress)
        controller, features = make_controller(den)
        images = den.decode(sample(den, inv, prompts, controller, features, progress))
        return image, images, _params(den, settings, image, prompts[-1], progress), controller


def restyle(host: Host, photo: Image.Image, source_prompt: str, target_prompt: str, settings: PhotoSettings,
            feature_injection: float = 0.8, attention_injection: float = 0.5, loras: Optional[list[LoraRef]] = None,
            control: Optional[RunControl] = None) -> PhotoResult:
    """Plug-and-Play (Tumanyan et al., CVPR 2023): ``photo`` translated to ``target_prompt`` keeping its layout
    (``inversion.pnp``): the source's decoder features for the first ``feature_injection`` of the steps, its decoder
    self-attention for the first ``attention_injection``. 0 and 0: the target prompt's own picture from the photo's
    noise; 1 and 1 with the source prompt: the photo back. HostError for a bad setting or a host that cannot."""
    from lib_profile.inversion.pnp import PlugAndPlay

    for name, value in (("feature_injection", feature_injection), ("attention_injection", attention_injection)):
        if not 0.0 <= value <= 1.0:
            raise HostError(f"{name} must be within 0..1 (a fraction of the steps), not {value}")
    host.check_attention_control("Restyle (Plug-and-Play)")

    def plug_and_play(den):
        pnp = PlugAndPlay(feature_injection, attention_injection)
        return pnp, pnp.features

    image, (recon, edited), params, pnp = _run(
        host, photo, source_prompt, [source_prompt, target_prompt], settings, loras, control, plug_and_play)
    params.update(feature_injection=feature_injection, attention_injection=attention_injection,
                  source_prompt=source_prompt, injected=pnp.summary())
    text = infotext(params, {**_extra(settings), "Plug-and-Play": f"{pnp.summary()} (tau_f {feature_injection:g}, "
                                                                  f"tau_A {attention_injection:g})"})
    return PhotoResult({"photo": image, "reconstruction": recon, "edited": edited}, params, text,
                       list(params["lora_notes"]))


def edit_photo(host: Host, photo: Image.Image, edit, settings: PhotoSettings, loras: Optional[list[LoraRef]] = None,
               control: Optional[RunControl] = None) -> PhotoResult:
    """Prompt-to-Prompt on a real photo: ``edit`` (``attention.p2p.Edit``; its ``source``: the photo's prompt, a caption
    the user gives) with the same modes and whole-word rules as on a portrait; the photo is inverted under the source
    prompt. ``edited`` and ``reconstruction`` (the source row) come back."""
    from lib_profile.attention.explain import tokenizer
    from lib_profile.attention.p2p import PromptToPrompt
    from lib_profile.attention.daam import TokenMap

    host.check_attention_control("Prompt-to-Prompt on a photo")
    edit.validate()
    tok = tokenizer()

    def controller(den):
        chunks = max(den.chunks(p) for p in (edit.source, edit.edited_prompt, settings.negative_prompt))
        return PromptToPrompt(tok, edit, chunks, lambda prompt: TokenMap.for_host(host, tok, prompt)), None

    image, (recon, edited), params, p2p = _run(host, photo, edit.source, [edit.source, edit.edited_prompt],
                                               settings, loras, control, controller)
    params.update(source_prompt=edit.source, mode=edit.mode, injected=p2p.injected())
    text = infotext(params, {**_extra(settings), "Prompt-to-Prompt": f"{edit.mode}, {p2p.summary()} "
                                                                     f"(tau {edit.cross_steps:g}, self {edit.self_steps:g})"})
    return PhotoResult({"photo": image, "reconstruction": recon, "edited": edited}, params, text,
                       list(params["lora_notes"]))


def explain_photo(host: Host, photo: Image.Image, prompt: str, words: list[str], settings: PhotoSettings,
                  layers=None, steps=None, loras: Optional[list[LoraRef]] = None,
                  control: Optional[RunControl] = None):
    """DAAM word maps (Tang et al., ACL 2023) of a real photo under ``prompt`` (its caption): the photo is inverted
    under ``prompt`` and sampled back with the maps recorded; an ``attention.explain.Explanation`` whose image is the
    reconstruction."""
    from lib_profile.attention.explain import Explanation, recording

    host.check_attention_control("Explain a photo (DAAM word maps)")
    tokens, wanted, recorder = recording(host, prompt, words, layers, steps)
    image, (recon,), params, _ = _run(host, photo, prompt, [prompt], settings, loras, control,
                                   lambda den: (recorder, None))
    maps = {w: recorder.word_map(ps, recon.size) for w, ps in wanted.items()}
    return Explanation(recon, maps, tokens.words(), 0, "photo", infotext(params, _extra(settings)),
                       recorder.summed(), list(params["lora_notes"]))
