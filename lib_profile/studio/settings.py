"""The generation settings a user may set, as one typed model for the API, the tab and the command line.

``PlanSettings``: what a studio plan's first pass is made with (size, steps, CFG, sampler, schedule, clip skip,
negative prompt). ``GenerateSettings`` adds the ControlNet models of a portrait set; ``SourceSettings`` (explain and
edit of a new prompt) adds the WebUI's hires fix. Every field is optional (unset or null: the plan's or the tone's default; a ControlNet set to null: none),
typed and ranged; unknown fields are refused. :func:`check` gives the settings as a dict of the fields set, or
raises :class:`SettingsError` (a :class:`HostError`, so a 400) naming each bad field and its allowed range.

The settings a portrait was made with are written into its PNG infotext (``Profile Studio settings: {...}``, beside
the WebUI's own ``Steps``, ``Size``, ...) and read back by :func:`from_infotext`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Type

from pydantic import BaseModel, Field, confloat, conint, constr

from lib_profile import validation
from lib_profile.hosts.base import HostError

INFOTEXT_KEY = "Profile Studio settings"
Size = conint(strict=True, ge=64, le=4096, multiple_of=8)
Name = constr(strict=True, min_length=1, max_length=100)
NULL_IS_NONE = ("controlnet_pose", "controlnet_tile")  # null: no ControlNet (elsewhere null is the default)


class SettingsError(HostError):
    """Settings refused; the message names each bad field (``settings.steps``) and what it allows."""

    def __init__(self, message: str, fields=()):
        super().__init__(message)
        self.fields = list(fields)


class PlanSettings(BaseModel, extra="forbid"):
    """The first pass of a plan: each field unset = the plan's default (512x768, 25 steps, CFG 6.5, the tone's
    sampler and schedule, clip skip 2)."""

    width: Optional[Size] = Field(None, description="Image width in pixels: a multiple of 8 within 64..4096.")
    height: Optional[Size] = Field(None, description="Image height in pixels: a multiple of 8 within 64..4096.")
    steps: Optional[conint(strict=True, ge=1, le=500)] = Field(None, description="Sampling steps, 1..500.")
    cfg_scale: Optional[confloat(ge=0, le=50)] = Field(None, description="CFG scale, 0..50.")
    sampler: Optional[Name] = Field(None, description="A sampler the host has (GET /sdapi/v1/samplers in the "
                                    "WebUI), e.g. 'DPM++ 2M'; default: the tone's.")
    scheduler: Optional[Name] = Field(None, description="Schedule type, e.g. Automatic, Karras, Exponential; "
                                      "default: the tone's.")
    clip_skip: Optional[conint(strict=True, ge=1, le=12)] = Field(None, description="CLIP skip, 1..12.")
    negative_prompt: Optional[constr(strict=True, max_length=5000)] = Field(
        None, description="Replaces the plan's negative prompt (default: a studio negative prompt and the tone's).")


class GenerateSettings(PlanSettings, extra="forbid"):
    """A portrait set's settings: the plan's, and which ControlNet models to use."""

    controlnet_pose: Optional[constr(strict=True, max_length=300)] = Field(
        None, description="The pose ControlNet model (default: the host's; null or empty: none, pose by prompt only).")
    controlnet_tile: Optional[constr(strict=True, max_length=300)] = Field(
        None, description="The tile ControlNet model of the upscale (default: the host's; null or empty: none).")


class SourceSettings(PlanSettings, extra="forbid"):
    """A new prompt to explain or edit: the plan's settings and the WebUI's hires fix."""

    hires_scale: Optional[confloat(ge=1, le=4)] = Field(None, description="Hires fix: a second pass at this "
                                                        "scale, 1..4 (1 = off).")
    hires_steps: Optional[conint(strict=True, ge=0, le=500)] = Field(None, description="Hires fix steps, 0..500 "
                                                                     "(0 = as many as steps).")
    hires_denoising: Optional[confloat(gt=0, le=1)] = Field(None, description="Hires fix denoising strength, "
                                                            "within (0, 1].")
    hires_upscaler: Optional[Name] = Field(None, description="Hires fix upscaler: Latent, Latent (nearest), "
                                           "Lanczos, ... (one the host has).")


def check(model: Type[PlanSettings], data: Any, prefix: str = "settings") -> dict[str, Any]:
    """``data`` (a dict, a settings model or None) checked against ``model``: the fields it sets, as a dict.
    Raises :class:`SettingsError` naming each bad field as ``settings.NAME`` with its allowed range."""
    try:
        parsed = validation.dump(validation.parse(model, data, prefix))
        # null: the default, as if unset; but a ControlNet set to null is none
        return {k: v for k, v in parsed.items() if v is not None or k in NULL_IS_NONE}
    except validation.Invalid as exc:
        raise SettingsError(str(exc), exc.fields) from None


def check_sampler(host, settings: Mapping[str, Any]) -> None:
    """The sampler is one the host has (or one with a schedule suffix, 'DPM++ 2M Karras', as the WebUI takes);
    else a :class:`SettingsError` listing them."""
    name = settings.get("sampler")
    if name is None:
        return
    have = list(host.samplers())
    lower = {s.lower() for s in have}
    head = name.rpartition(" ")[0]
    if name.lower() in lower or (head and head.lower() in lower):
        return
    raise SettingsError(f"settings.sampler: {json.dumps(name)} is not a sampler of this "
                        f"{host.name} host; allowed: {', '.join(have)}", ["settings.sampler"])


def plan_settings(plan) -> dict[str, Any]:
    """The settings a plan's first pass is made with (all of them, defaults included; not the negative prompt,
    which the infotext has on its own line)."""
    return {name: getattr(plan, name) for name in _fields(PlanSettings) if name != "negative_prompt"}


def infotext_field(settings: Mapping[str, Any]) -> dict[str, str]:
    """The infotext field that records the settings used: ``{"Profile Studio settings": "{...}"}``."""
    used = {k: v for k, v in settings.items() if v is not None}
    return {INFOTEXT_KEY: json.dumps(used, sort_keys=True, separators=(",", ":"))}


# the WebUI's infotext: ``Name: value`` pairs, a value quoted (JSON-style) when it holds a comma or colon
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_WEBUI_FIELDS = {"Steps": ("steps", int), "CFG scale": ("cfg_scale", float), "Sampler": ("sampler", str),
                 "Schedule type": ("scheduler", str), "Clip skip": ("clip_skip", int),
                 "Hires upscale": ("hires_scale", float), "Hires steps": ("hires_steps", int),
                 "Hires upscaler": ("hires_upscaler", str)}


def infotext_pairs(text: str) -> dict[str, str]:
    """The ``Name: value`` pairs of an infotext's last line (quoted values unquoted)."""
    line = (text or "").strip().split("\n")[-1]
    out = {}
    for key, value in _PAIR.findall(line):
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def from_infotext(text: str, model: Type[PlanSettings] = SourceSettings) -> dict[str, Any]:
    """The settings an image was made with, read back from its infotext: the ``Profile Studio settings`` record
    when there is one, else the WebUI's own fields (Steps, Size, CFG scale, Sampler, ...). Checked against
    ``model``; raises :class:`SettingsError` when they do not fit it."""
    pairs = infotext_pairs(text)
    if INFOTEXT_KEY in pairs:
        try:
            data = json.loads(pairs[INFOTEXT_KEY])
        except ValueError:
            raise SettingsError(f"{INFOTEXT_KEY} in the infotext is not JSON") from None
        return check(model, data)
    data: dict[str, Any] = {}
    for key, (name, kind) in _WEBUI_FIELDS.items():
        if key in pairs and name in _fields(model):
            try:
                data[name] = kind(pairs[key])
            except ValueError:
                raise SettingsError(f"{key} in the infotext is not a {kind.__name__}: {pairs[key]!r}") from None
    if "Size" in pairs:
        w, _, h = pairs["Size"].partition("x")
        if w.isdigit() and h.isdigit():
            data["width"], data["height"] = int(w), int(h)
    if data.get("hires_scale") and "Denoising strength" in pairs and "hires_denoising" in _fields(model):
        data["hires_denoising"] = float(pairs["Denoising strength"])
    return check(model, data)


def add_arguments(parser, model: Type[PlanSettings]) -> None:
    """Command-line options for the model's fields (``--cfg-scale`` for ``cfg_scale``; unset: the default), and
    ``--settings JSON`` with any of them as a JSON object (the options win). Read back by :func:`from_arguments`."""
    kinds = {"integer": int, "number": float}
    for name, node in validation.schema(model).get("properties", {}).items():
        kind = next((n.get("type") for n in [node, *node.get("anyOf", ())] if n.get("type") not in (None, "null")),
                    "string")
        parser.add_argument(f"--{name.replace('_', '-')}", type=kinds.get(kind, str), default=None,
                            help=node.get("description"))
    parser.add_argument("--settings", metavar="JSON", help="settings as a JSON object, e.g. "
                        "'{\"width\": 512, \"steps\": 20}' (the same as the API's; options win)")


def from_arguments(args, model: Type[PlanSettings]) -> dict[str, Any]:
    """The settings the command line set (``--settings`` JSON, then the options), checked against ``model``;
    raises :class:`SettingsError` naming the bad one."""
    data: dict[str, Any] = {}
    if getattr(args, "settings", None):
        try:
            data = json.loads(args.settings)
        except ValueError as exc:
            raise SettingsError(f"--settings is not valid JSON ({exc}); give an object, e.g. "
                                '\'{"steps": 20}\'') from None
        if not isinstance(data, dict):
            raise SettingsError(f"--settings must be a JSON object, e.g. '{{\"steps\": 20}}', not {args.settings!r}")
    for name in _fields(model):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    return check(model, data)


def _fields(model: Type[BaseModel]) -> list[str]:
    return list(validation.schema(model).get("properties", {}))
