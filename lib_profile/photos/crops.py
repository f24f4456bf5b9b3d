"""Training crops: a face-centred square around each accepted photo's face, at 512 px."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from lib_profile.photos.faces import Face


MIN_RATIO = 2.0  # never frame tighter than this (times the face box) to stay inside the photo


def square_around(face: Face, ratio: float, image_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """The square of side ``ratio`` x the face box's longer side, centred on the face box. Given the
    image size, the square shrinks (down to ``MIN_RATIO``) rather than run past the photo's edge."""
    cx, cy = face.center
    longest = max(face.width, face.height)
    half = longest * ratio / 2
    if image_size is not None:
        w, h = image_size
        fits = min(cx, cy, w - cx, h - cy)
        half = max(min(half, fits), longest * min(ratio, MIN_RATIO) / 2)
    return int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half))


def face_crop(image: Image.Image, face: Face, ratio: float = 3.0, size: int = 512) -> Image.Image:
    """The face-centred square, resized to ``size``. If even the tightest allowed square runs past the
    photo's edge, the missing band is a heavily blurred mirror of the photo, so the face stays centred."""
    x1, y1, x2, y2 = square_around(face, ratio, image.size)
    w, h = image.size
    inside = (max(x1, 0), max(y1, 0), min(x2, w), min(y2, h))
    inner = image.crop(inside)
    if (x1, y1, x2, y2) == inside:
        return inner.resize((size, size), Image.LANCZOS)
    arr = np.asarray(inner)
    pad = ((max(-y1, 0), max(y2 - h, 0)), (max(-x1, 0), max(x2 - w, 0)), (0, 0))
    filled = Image.fromarray(np.pad(arr, pad, mode="symmetric"))
    blurred = filled.filter(ImageFilter.GaussianBlur(max(filled.size) / 15))
    blurred.paste(inner, (pad[1][0], pad[0][0]))
    return blurred.resize((size, size), Image.LANCZOS)


_segmenter = None


def clean_background(crop: Image.Image, colour: tuple[int, int, int] = (235, 235, 235)) -> Image.Image:
    """Replace everything but the person with a plain light background (mediapipe selfie segmentation)."""
    global _segmenter
    import mediapipe as mp

    if _segmenter is None:
        try:
            _segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        except Exception as exc:  # noqa: BLE001 - its graph does not build under the WebUIs' protobuf 3.20
            from lib_profile.photos.faces import mediapipe_unusable

            raise mediapipe_unusable("Cleaning the background", exc, "turn that option off") from exc
    rgb = np.asarray(crop.convert("RGB"))
    mask = _segmenter.process(rgb).segmentation_mask
    alpha = np.clip((mask - 0.1) / 0.5, 0.0, 1.0)[..., None]
    out = rgb * alpha + np.array(colour, np.float32) * (1 - alpha)
    return Image.fromarray(out.astype(np.uint8))


def caption(token: str, class_word: str) -> str:
    return f"photo of {token} {class_word}"
