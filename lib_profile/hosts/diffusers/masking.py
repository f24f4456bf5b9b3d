"""Inpaint-only-masked geometry for the diffusers host (the WebUI does its own): the crop around a mask and the
soft paste-back. Pure (PIL, numpy), no diffusers.

Mirrors the WebUI's "Only masked" mode: the mask's bounding box plus padding, grown to the
processing aspect ratio, is processed at width x height and pasted back through the blurred mask,
so pixels outside the (blurred) mask keep their exact original values.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def binary_mask(mask: Image.Image) -> Image.Image:
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def soft_mask(mask: Image.Image, blur: int) -> Image.Image:
    m = binary_mask(mask)
    return m.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else m


def crop_region(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) around the mask, padded, grown to width:height and kept inside the image."""
    arr = np.asarray(binary_mask(mask))
    ys, xs = np.nonzero(arr)
    if len(xs) == 0:
        return None
    w_img, h_img = mask.size
    x1, y1 = max(int(xs.min()) - padding, 0), max(int(ys.min()) - padding, 0)
    x2, y2 = min(int(xs.max()) + 1 + padding, w_img), min(int(ys.max()) + 1 + padding, h_img)
    # grow the shorter side to the target aspect ratio, centred, then shift back inside the image
    ratio = width / height
    cw, ch = x2 - x1, y2 - y1
    if cw / ch < ratio:
        want = min(int(round(ch * ratio)), w_img)
        x1, x2 = _grow(x1, x2, want, w_img)
    else:
        want = min(int(round(cw / ratio)), h_img)
        y1, y2 = _grow(y1, y2, want, h_img)
    return x1, y1, x2, y2


def _grow(a: int, b: int, want: int, limit: int) -> tuple[int, int]:
    extra = want - (b - a)
    a -= extra // 2
    b += extra - extra // 2
    if a < 0:
        b, a = b - a, 0
    if b > limit:
        a, b = max(a - (b - limit), 0), limit
    return a, b


def paste_back(original: Image.Image, processed: Image.Image, region: tuple[int, int, int, int] | None,
               mask: Image.Image, blur: int) -> Image.Image:
    """Put ``processed`` (the crop, at any size, or the whole image) back through the soft mask."""
    base = original.convert("RGB")
    if region is None:
        patch = processed.convert("RGB").resize(base.size, Image.LANCZOS)
    else:
        x1, y1, x2, y2 = region
        patch = base.copy()
        patch.paste(processed.convert("RGB").resize((x2 - x1, y2 - y1), Image.LANCZOS), (x1, y1))
    return Image.composite(patch, base, soft_mask(mask, blur))
