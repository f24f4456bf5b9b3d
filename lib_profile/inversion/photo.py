"""What a user does with a real photo: restyle it (Plug-and-Play), edit it by editing a prompt (Prompt-to-Prompt), or
explain it (DAAM). Each inverts the photo first (``inversion.methods``) on the host's own model (``Host.denoiser``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from lib_profile.hosts.base import Host, HostError, LoraRef, RunControl

METHODS = ("direct", "null-text", "ddim")


@dataclass
class PhotoSettings:
    """How a photo is inverted and sampled again. ``method``: ``direct`` (Direct Inversion, Ju et al., ICLR 2024:
    exact, no optimisation; the default), ``null-text`` (Mokady et al., CVPR 2023: per-step negative-prompt embeddings
    optimised, up to ``null_text_iterations`` Adam steps a step) or ``ddim`` (plain DDIM inversion, Song et al. 2021;
    drifts at a CFG above 1). ``size``: the short side in px the photo is cropped and scaled to (multiples of 64,
    2:3 or 3:2 or square, the nearest to the photo's aspect)."""

    method: str = "direct"
    steps: int = 50
    cfg_scale: float = 7.5
    negative_prompt: str = ""
    clip_skip: int = 1
    size: int = 512
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
        if self.size % 64 or not 128 <= self.size <= 1024:
            raise HostError(f"size must be a multiple of 64 within 128..1024, not {self.size}")
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


def fit_photo(image: Image.Image, size: int = 512) -> Image.Image:
    """``image`` centre-cropped to the nearest of 2:3, 1:1 and 3:2 and scaled so its short side is ``size`` px."""
    raise NotImplementedError


def restyle(host: Host, photo: Image.Image, source_prompt: str, target_prompt: str, settings: PhotoSettings,
            feature_injection: float = 0.8, attention_injection: float = 0.5, loras: Optional[list[LoraRef]] = None,
            control: Optional[RunControl] = None) -> PhotoResult:
    """Plug-and-Play (Tumanyan et al., CVPR 2023): ``photo`` translated to ``target_prompt`` keeping its layout."""
    raise NotImplementedError


def edit_photo(host: Host, photo: Image.Image, edit, settings: PhotoSettings, loras: Optional[list[LoraRef]] = None,
               control: Optional[RunControl] = None) -> PhotoResult:
    """Prompt-to-Prompt on a real photo: ``edit`` (``attention.p2p.Edit``, its source the photo's prompt)."""
    raise NotImplementedError


def explain_photo(host: Host, photo: Image.Image, prompt: str, words: list[str], settings: PhotoSettings,
                  layers=None, steps=None, loras: Optional[list[LoraRef]] = None,
                  control: Optional[RunControl] = None):
    """DAAM word maps of a real photo under ``prompt`` (an ``attention.explain.Explanation``)."""
    raise NotImplementedError
