"""What a real-photo job (restyle, edit or explain a photo) is run with: the inversion settings as one typed model
for the API, the tab and the command line, the restyle strength as Plug-and-Play's two thresholds, and the default
caption of a photo.

``InversionSettings`` mirrors :class:`lib_profile.inversion.photo.PhotoSettings` field by field (every field optional:
unset or null is PhotoSettings' default); :func:`photo_settings` checks a dict against it (a 400 naming the field and
its range, ``inversion.steps``) and gives the PhotoSettings.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

from pydantic import BaseModel, Field, confloat, conint, constr

from lib_profile.hosts.base import HostError

MAX_CAPTION = 1000  # characters of a photo's caption (its source prompt)
DEFAULT_STRENGTH = 0.2  # the paper's thresholds: features 0.8, attention 0.5


class InversionSettings(BaseModel, extra="forbid"):
    """How the photo is inverted and sampled again; each field unset = the default."""

    method: Optional[Literal["direct", "null-text", "ddim"]] = Field(
        None, description="direct (Direct Inversion: exact, the default), null-text (null-text inversion: "
                          "optimised, slower) or ddim (plain DDIM inversion: drifts at a CFG above 1).")
    steps: Optional[conint(strict=True, ge=2, le=200)] = Field(None, description="DDIM steps, 2..200 (default 50).")
    cfg_scale: Optional[confloat(ge=1, le=30)] = Field(None, description="CFG scale, 1..30 (default 7.5).")
    negative_prompt: Optional[constr(strict=True, max_length=5000)] = Field(None, description="Negative prompt "
                                                                                            "(default none).")
    clip_skip: Optional[conint(strict=True, ge=1, le=12)] = Field(None, description="CLIP skip, 1..12 (default 1).")
    size: Optional[conint(strict=True, ge=64, le=1024, multiple_of=64)] = Field(
        None, description="The photo's short side in px after cropping to 2:3, 1:1 or 3:2: a multiple of 64 within "
                          "64..1024 (default: the checkpoint family's, 512 on SD1.5, 832 on SDXL).")
    null_text_iterations: Optional[conint(strict=True, ge=1, le=50)] = Field(
        None, description="null-text only: optimiser steps per sampling step, 1..50 (default 10).")


def photo_settings(data: Any, prefix: str = "inversion"):
    """``data`` (a dict, an :class:`InversionSettings` or None) as a checked
    :class:`~lib_profile.inversion.photo.PhotoSettings`; a :class:`~lib_profile.studio.settings.SettingsError`
    (HostError, HTTP 400) names each bad field (``inversion.steps``) and what it allows."""
    from lib_profile.inversion.photo import PhotoSettings
    from lib_profile.studio.settings import check

    settings = PhotoSettings(**check(InversionSettings, data, prefix))
    settings.validate()
    return settings


def settings_dict(settings) -> dict[str, Any]:
    """A PhotoSettings as the plain dict a job's parameters keep (and :func:`photo_settings` reads back)."""
    import dataclasses

    return dataclasses.asdict(settings)


def injection(strength: float) -> tuple[float, float]:
    """Restyle ``strength`` s in [0, 1] as Plug-and-Play's (feature injection, attention injection) thresholds:
    ``(1 - s, 0.625 * (1 - s))``, the fractions of the sampling steps whose decoder features and self-attention come
    from the photo. 0.2 (the default) gives the paper's 0.8 and 0.5; 0 injects throughout (the photo comes back);
    1 injects nothing (the target prompt alone, from the photo's noise). HostError outside [0, 1]."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise HostError(f"strength must be a number within 0..1, not {strength!r}")
    return 1.0 - strength, 0.625 * (1.0 - strength)


def check_caption(caption: Optional[str], what: str = "caption") -> Optional[str]:
    """A user's caption stripped (None when empty); HostError when over ``MAX_CAPTION`` characters."""
    if caption is None:
        return None
    if not isinstance(caption, str):
        raise HostError(f"{what} must be text")
    caption = caption.strip()
    if len(caption) > MAX_CAPTION:
        raise HostError(f"{what} may have at most {MAX_CAPTION} characters")
    return caption or None


def default_caption(class_word: str, activation: Optional[str] = None) -> str:
    """The caption of a photo the user gave none for: ``"a photo of ohwx woman"`` with the person's LoRA in use
    (``activation``: its activation text), else ``"a photo of a woman"`` (``class_word``: woman, man or person)."""
    return f"a photo of {activation}" if activation else f"a photo of a {class_word or 'person'}"


def activation_text(lora_path: Optional[str]) -> Optional[str]:
    """The activation text a Profile Studio LoRA file records (``"ohwx woman"``); None without one."""
    if not lora_path:
        return None
    from lib_profile.lora.apply import read_metadata

    return read_metadata(lora_path).get("profile_studio_activation_text") or None


def restyle_params(strength: float, settings, feature: float, attention: float) -> Mapping[str, str]:
    """The infotext fields a restyle adds: what ran, so a reader sees the strength and the thresholds."""
    return {"Restyle": f"Plug-and-Play, strength {strength:g} (features {feature:g}, attention {attention:g})",
            "Inversion": f"{settings.method}, {settings.steps} steps, CFG {settings.cfg_scale:g}"}
