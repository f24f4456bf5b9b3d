"""Measurements of a face region: sharpness, exposure, and a near-duplicate fingerprint."""

from __future__ import annotations

import numpy as np
from PIL import Image

from lib_profile.photos.faces import Face


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def face_patch(image: Image.Image, face: Face, size: int = 256, grow: float = 1.0) -> np.ndarray:
    """The face box (grown by ``grow``), resized to ``size`` x ``size``, as float32 RGB."""
    cx, cy = face.center
    half = max(face.width, face.height) * grow / 2
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    return np.asarray(image.crop(box).resize((size, size), Image.BILINEAR), dtype=np.float32)


def sharpness(patch: np.ndarray) -> float:
    """Variance of the Laplacian of the face's luma (measure it on a 128 px patch), divided by the
    squared relative brightness so a dark but sharp photo is not called blurry: high = sharp."""
    y = luma(patch)
    lap = -4 * y[1:-1, 1:-1] + y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:]
    brightness = max(float(y.mean()), 1.0) / 128.0
    return float(lap.var() / brightness**2)


def exposure(patch: np.ndarray) -> tuple[float, float]:
    """(mean luma 0-255, fraction of clipped pixels) of the face."""
    y = luma(patch)
    return float(y.mean()), float(((y < 8) | (y > 247)).mean())


def photo_measures(image: Image.Image, side: int = 512, block: int = 128) -> tuple[float, float]:
    """(sharpness, brightness) of the whole photo, for saying why no face was found. The photo is scaled to
    ``side`` px on its longer side; sharpness is that of its sharpest ``block`` px square (as :func:`sharpness`
    measures a face at 128 px, so the same limit applies; a photo with some sharp part is not blurred),
    brightness the mean luma (0-255)."""
    scale = side / max(image.size)
    small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    rgb = np.asarray(small.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    blocks = [rgb[y:y + block, x:x + block] for y in range(0, max(h - block, 0) + 1, block)
              for x in range(0, max(w - block, 0) + 1, block)]
    return max(sharpness(b) for b in blocks), float(luma(rgb).mean())


def fingerprint(image: Image.Image) -> np.ndarray:
    """A 32x32 grey thumbnail of the whole photo; near-identical photos give near-equal ones."""
    return np.asarray(image.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32)


def fingerprint_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())
