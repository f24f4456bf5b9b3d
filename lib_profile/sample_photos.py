"""Real photos that ship inside installed packages, and "selfie sets" augmented from them.

No download needed: scikit-image carries the astronaut (Eileen Collins, one frontal face) and the
coffee cup and cat (no human face); matplotlib carries Grace Hopper (another person). The selfie
sets are crops, flips, light and JPEG variations of one person, like ten everyday photos.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).convert("RGB")


def grace_hopper() -> Image.Image:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee()).convert("RGB")


def chelsea() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea()).convert("RGB")


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


AUGMENTS: list[tuple[str, Callable[[Image.Image], Image.Image]]] = [
    ("original", lambda im: im.copy()),
    ("flip", ImageOps.mirror),
    ("crop_tight", lambda im: im.crop((im.width // 8, im.height // 16, im.width * 7 // 8, im.height * 15 // 16))),
    ("brighter", lambda im: ImageEnhance.Brightness(im).enhance(1.25)),
    ("darker", lambda im: ImageEnhance.Brightness(im).enhance(0.8)),
    ("warm", lambda im: Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) * [1.08, 1.0, 0.9], 0, 255).astype(np.uint8))),
    ("jpeg_q40", lambda im: _jpeg(im, 40)),
    ("small", lambda im: im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS)),
    ("contrast", lambda im: ImageEnhance.Contrast(im).enhance(1.2)),
    ("rotate_5", lambda im: im.rotate(5, resample=Image.BICUBIC, fillcolor=(128, 128, 128))),
]


def selfies(person: Callable[[], Image.Image] = astronaut, n: int = 10) -> list[tuple[str, Image.Image]]:
    """``n`` everyday-photo variants of one person (name, image)."""
    base = person()
    return [(name, fn(base)) for name, fn in (AUGMENTS * (n // len(AUGMENTS) + 1))[:n]]
