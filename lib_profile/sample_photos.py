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


def _shifted(dx: float, dy: float, zoom: float = 1.0):
    """A re-framed shot: the view moved by (dx, dy) of the size and zoomed in by ``zoom``."""
    def fn(im: Image.Image) -> Image.Image:
        w, h = im.size
        cw, ch = int(w / zoom), int(h / zoom)
        x = int(np.clip((w - cw) / 2 + dx * w, 0, w - cw))
        y = int(np.clip((h - ch) / 2 + dy * h, 0, h - ch))
        return im.crop((x, y, x + cw, y + ch))
    return fn


def _then(*fns):
    def fn(im: Image.Image) -> Image.Image:
        for f in fns:
            im = f(im)
        return im
    return fn


# Every variant is framed differently (as separate shots are), so none is a near-copy of another.
AUGMENTS: list[tuple[str, Callable[[Image.Image], Image.Image]]] = [
    ("original", lambda im: im.copy()),
    ("flip", ImageOps.mirror),
    ("closer", _shifted(0.0, -0.04, 1.25)),
    ("brighter", _then(_shifted(0.04, 0.0, 1.1), lambda im: ImageEnhance.Brightness(im).enhance(1.2))),
    ("darker", _then(_shifted(-0.04, 0.02, 1.1), lambda im: ImageEnhance.Brightness(im).enhance(0.8))),
    ("warm", _then(_shifted(0.03, 0.03, 1.15), lambda im: Image.fromarray(
        np.clip(np.asarray(im, dtype=np.float32) * [1.08, 1.0, 0.9], 0, 255).astype(np.uint8)))),
    ("jpeg_q40", _then(_shifted(-0.03, -0.03, 1.15), lambda im: _jpeg(im, 40))),
    ("small", _then(_shifted(0.05, 0.05, 1.05), lambda im: im.resize((im.width * 3 // 4, im.height * 3 // 4),
                                                                     Image.LANCZOS))),
    ("contrast", _then(_shifted(-0.05, 0.0, 1.2), lambda im: ImageEnhance.Contrast(im).enhance(1.2))),
    ("rotate_5", _then(_shifted(0.0, 0.05, 1.1), lambda im: im.rotate(5, resample=Image.BICUBIC, fillcolor=(128, 128, 128)))),
]


def selfies(person: Callable[[], Image.Image] = astronaut, n: int = 10) -> list[tuple[str, Image.Image]]:
    """``n`` everyday-photo variants of one person (name, image)."""
    base = person()
    return [(name, fn(base)) for name, fn in (AUGMENTS * (n // len(AUGMENTS) + 1))[:n]]
