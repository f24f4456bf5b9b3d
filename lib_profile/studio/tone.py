"""Colour looks ("tones"): warm, cool and neutral presets, user presets, and the final colour grade.

A tone is a prompt fragment, the sampler the seed team found best for it (cool: Euler a or DPM++ 2M
Karras; warm: Euler or DPM++ SDE Karras), and a colour grade applied to the finished portrait: white
balance (temperature, tint), split toning (a colour pushed into shadows and into highlights) and
saturation, blended with the original at a strength the user sets. Shipped presets live in
``models/tones/``; users add or override them with JSON files in ``<data folder>/tones/``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lib_profile import paths
from lib_profile.hosts.diffusers import samplers
from lib_profile.hosts.base import HostError

SHIPPED = paths.EXTENSION_ROOT / "models" / "tones"


@dataclass
class Grade:
    temperature: float = 0.0  # -1 (blue) .. +1 (amber)
    tint: float = 0.0  # -1 (green) .. +1 (magenta)
    shadows: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # RGB push into dark areas
    highlights: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # RGB push into bright areas
    saturation: float = 1.0

    def is_identity(self) -> bool:
        return (self.temperature == 0 and self.tint == 0 and not any(self.shadows) and not any(self.highlights)
                and self.saturation == 1.0)


@dataclass
class Tone:
    name: str
    title: str
    description: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = "DPM++ 2M"
    scheduler: str = "Karras"
    alternatives: list[str] = field(default_factory=list)
    grade: Grade = field(default_factory=Grade)
    strength: float = 0.6
    source: str = "shipped"

    def to_dict(self) -> dict:
        return asdict(self)


def _parse(data: dict, source: str) -> Tone:
    try:
        grade = Grade(**(data.get("grade") or {}))
        tone = Tone(**{**{k: v for k, v in data.items() if k != "grade"}, "grade": grade, "source": source})
    except TypeError as exc:
        raise HostError(f"Tone preset {source} has an unknown or missing field: {exc}") from exc
    if not tone.name.isidentifier():
        raise HostError(f"Tone preset {source}: name must be a simple word, not {tone.name!r}")
    if not 0.0 <= tone.strength <= 1.0:
        raise HostError(f"Tone preset {tone.name}: strength must be within 0..1, not {tone.strength}")
    if len(tone.grade.shadows) != 3 or len(tone.grade.highlights) != 3:
        raise HostError(f"Tone preset {tone.name}: shadows and highlights are [R, G, B] lists")
    samplers.resolve(tone.sampler, tone.scheduler)  # an unknown sampler is named now, not at generation time
    return tone


def _read(path: Path, source: str) -> Tone:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise HostError(f"Cannot read tone preset {path}: {exc}") from exc
    return _parse(data, source)


def list_tones(data_dir: str | Path | None = None) -> list[Tone]:
    """Shipped presets, then the user's (``<data>/tones/*.json``; a user preset may replace a shipped one)."""
    tones = {p.stem: _read(p, "shipped") for p in sorted(SHIPPED.glob("*.json"))}
    user = paths.data_dir(data_dir) / "tones"
    for p in sorted(user.glob("*.json")) if user.is_dir() else []:
        tone = _read(p, str(p))
        tones[tone.name] = tone
    order = ["warm", "cool", "neutral"]
    return sorted(tones.values(), key=lambda t: (order.index(t.name) if t.name in order else 3, t.name))


def get_tone(name: str, data_dir: str | Path | None = None) -> Tone:
    tones = {t.name: t for t in list_tones(data_dir)}
    if name not in tones:
        raise HostError(f"Unknown tone {name!r}; choose one of: {', '.join(tones)}")
    return tones[name]


def apply_grade(image: Image.Image, grade: Grade, strength: float) -> Image.Image:
    """The colour grade at ``strength`` (0 = untouched, 1 = full), on an RGB image."""
    if strength <= 0 or grade.is_identity():
        return image.copy()
    x = np.asarray(image.convert("RGB"), np.float32) / 255.0
    # white balance: temperature moves red against blue, tint moves green against magenta
    t, m = grade.temperature, grade.tint
    gains = np.array([1 + 0.12 * t + 0.03 * m, 1 - 0.06 * m, 1 - 0.12 * t + 0.03 * m], np.float32)
    y = x * gains
    # split toning, weighted by luminance: shadows get one colour, highlights another
    lum = (y * [0.299, 0.587, 0.114]).sum(-1, keepdims=True).clip(0, 1)
    y = y + (1 - lum) ** 2 * np.array(grade.shadows, np.float32) + lum ** 2 * np.array(grade.highlights, np.float32)
    # saturation around the luminance
    lum = (y * [0.299, 0.587, 0.114]).sum(-1, keepdims=True)
    y = lum + (y - lum) * grade.saturation
    out = (1 - strength) * x + strength * y
    return Image.fromarray((out.clip(0, 1) * 255 + 0.5).astype(np.uint8))


def grade_image(image: Image.Image, tone: Tone, strength: Optional[float] = None) -> Image.Image:
    s = tone.strength if strength is None else strength
    if not 0.0 <= s <= 1.0:
        raise HostError(f"grade strength must be within 0..1, not {s}")
    return apply_grade(image, tone.grade, s)
