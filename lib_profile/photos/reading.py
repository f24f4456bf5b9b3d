"""Reading any photo a person uploads: decoded, upright, RGB, or a plain-words reason why not.

JPEG (and MPO), PNG, WebP, BMP, TIFF, GIF, and HEIC/HEIF through ``pillow_heif`` when it is installed.
Nothing here raises for a bad file: every failure becomes a :class:`Reason`. No PIL globals are changed
(``LOAD_TRUNCATED_IMAGES`` stays False, so cut-short files are caught; our own pixel limit is checked
from the header before anything is decoded).
"""

from __future__ import annotations

import io
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import Image, ImageOps

from lib_profile.photos import reasons
from lib_profile.photos.reasons import Reason

DEFAULT_MAX_PIXELS = 50_000_000  # decompression-bomb guard
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "HEIF", "MPO", "GIF"})
# Formats whose loader applies the orientation itself: Pillow's TIFF loader turns the pixels (and before
# Pillow 10.1 keeps the tag, so exif_transpose would turn them twice: Pillow issue #7381); libheif applies
# the HEIF rotation and pillow_heif resets the EXIF tag, keeping the stored value in "original_orientation".
_TURNED_ON_LOAD = ("TIFF", "HEIF")

EMPTY = "The file is empty (0 bytes). Copy the photo again from your phone or camera."
DAMAGED = "The file is cut short or damaged; copy it again from your phone or camera."
NOT_AN_IMAGE = "This file is not an image we can read. Upload a photo saved as JPEG, PNG, WebP or HEIC."
MISSING = "The file was not found. Check the name and where it is, then add the photo again."
NEEDS_HEIF = ("This is a HEIC/HEIF photo (the iPhone format), and reading it needs the pillow-heif package. "
              "Install it with: pip install pillow-heif (or export the photo as JPEG).")


@dataclass
class PhotoRead:
    path: str
    image: Optional[Image.Image]  # RGB, upright, first frame, detached from the file; None when rejected
    reason: Optional[Reason]  # None when readable
    info: dict = field(default_factory=dict)  # format, original_size [w, h], orientation, mode, frames

    @property
    def ok(self) -> bool:
        return self.reason is None


def read_photo(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS) -> PhotoRead:
    """Read a photo file; never raises for a missing, empty, damaged or non-image file."""
    name = os.fsdecode(path)
    try:
        fp = open(name, "rb")
    except FileNotFoundError:
        return _reject(name, reasons.UNREADABLE, MISSING)
    except IsADirectoryError:
        return _reject(name, reasons.UNREADABLE, "This is a folder, not a photo file. Choose the photo itself.")
    except OSError as e:
        return _reject(name, reasons.UNREADABLE, f"The file could not be opened ({e.strerror or e}). "
                                           "Check that it is a photo you are allowed to read.")
    with fp:
        return _read(fp, name, max_pixels)


def read_photo_bytes(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> PhotoRead:
    """Read a photo from bytes (an upload); ``name`` is only used to label the result."""
    return _read(io.BytesIO(bytes(data or b"")), name, max_pixels)


_heif_ok: Optional[bool] = None


def _register_heif() -> bool:
    """Register pillow_heif's HEIC/HEIF opener once; False when pillow_heif is missing or broken."""
    global _heif_ok
    if _heif_ok is None:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_ok = True
        except Exception:  # noqa: BLE001 - missing, or a broken native library
            _heif_ok = False
    return _heif_ok


def _pil_open():
    """PIL's own ``Image.open``. ultralytics (loaded by ADetailer in many WebUIs) replaces it globally
    with a wrapper that tries to pip-install pi-heif whenever a file fails to open; go around it."""
    fn = Image.open
    if getattr(fn, "__module__", "PIL.Image") != "PIL.Image":
        original = getattr(sys.modules.get(fn.__module__), "_image_open", None)
        if callable(original):
            return original
    return fn


def _read(fp: BinaryIO, name: str, max_pixels: int) -> PhotoRead:
    head = fp.read(32)
    fp.seek(0)
    if not head:
        return _reject(name, reasons.UNREADABLE, EMPTY)
    heif_ok = _register_heif()
    try:
        with warnings.catch_warnings():  # our own limit below decides, not PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = _pil_open()(fp)  # lazy: reads the header only
    except Image.DecompressionBombError as e:  # PIL refuses sizes over 2 x MAX_IMAGE_PIXELS outright
        numbers = [int(n) for n in re.findall(r"(\d+) pixels", str(e))]
        pixels = numbers[0] if numbers else None
        limit = min(max_pixels, numbers[1]) if len(numbers) > 1 else max_pixels
        return _too_large(name, pixels, None, limit, {})
    except Exception:  # noqa: BLE001 - PIL raises many kinds for files it cannot identify
        return _unidentified(name, _sniff(head), heif_ok)
    with img:
        fmt, (w, h) = img.format, img.size
        info = {"format": fmt, "original_size": [w, h], "orientation": None, "mode": img.mode, "frames": 1}
        if fmt not in SUPPORTED_FORMATS:
            return _reject(name, reasons.UNSUPPORTED_FORMAT, f"{fmt or 'This kind of'} images are not supported. "
                                                       "Save the photo as JPEG or PNG and add it again.", info)
        if w * h > max_pixels:
            return _too_large(name, w * h, (w, h), max_pixels, info)
        try:
            info["frames"] = int(getattr(img, "n_frames", 1))
            if fmt != "HEIF":  # HEIF opens on its primary image, which is the photo
                img.seek(0)
            if fmt in _TURNED_ON_LOAD:  # before load(), which may drop the tag once it has turned the pixels
                info["orientation"] = _orientation(img)
            img.load()
        except Exception:  # noqa: BLE001 - truncated or corrupt data
            return _reject(name, reasons.UNREADABLE, DAMAGED, info)
        if fmt not in _TURNED_ON_LOAD:
            info["orientation"] = _orientation(img)
        try:
            image = _to_rgb(img if fmt in _TURNED_ON_LOAD else _upright(img))  # always a new, detached image
        except Exception:  # noqa: BLE001 - an exotic colour mode PIL cannot convert
            return _reject(name, reasons.UNSUPPORTED_FORMAT, f"Images in the {img.mode} colour mode are not supported. "
                                                       "Save the photo as an ordinary JPEG or PNG.", info)
    image.info = {}  # detached and upright: drop the metadata (its orientation tag no longer applies)
    return PhotoRead(name, image, None, info)


def _reject(name: str, code: str, message: str, info: Optional[dict] = None, **kw) -> PhotoRead:
    return PhotoRead(name, None, Reason(code, message, **kw), dict(info or {}))


def _megapixels(n: float) -> str:
    return f"{n / 1e6:.3g} megapixels"


def _too_large(name, pixels, size, max_pixels, info) -> PhotoRead:
    dims = f"{size[0]} x {size[1]} pixels, " if size else ""
    amount = f" ({dims}{_megapixels(pixels)})" if pixels else ""
    return _reject(name, reasons.TOO_LARGE, f"The photo is too large{amount}; the limit is {_megapixels(max_pixels)}. "
                                      "Send a smaller photo, or resize it first.",
                   info, value=pixels, threshold=max_pixels)


_BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def _sniff(head: bytes) -> Optional[str]:
    """The image format the first bytes announce, if any (tells a damaged photo from a non-image)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head[4:8] == b"ftyp":
        if head[8:12] in (b"avif", b"avis"):
            return "AVIF"
        if head[8:12] in _HEIF_BRANDS:
            return "HEIF"
    return None


def _unidentified(name: str, sniffed: Optional[str], heif_ok: bool) -> PhotoRead:
    if sniffed == "HEIF" and not heif_ok:
        return _reject(name, reasons.UNSUPPORTED_FORMAT, NEEDS_HEIF, {"format": "HEIF"})
    if sniffed in SUPPORTED_FORMATS:  # the right signature, but PIL could not parse the header
        return _reject(name, reasons.UNREADABLE, DAMAGED, {"format": sniffed})
    if sniffed:
        return _reject(name, reasons.UNSUPPORTED_FORMAT, f"{sniffed} images are not supported. "
                                                   "Save the photo as JPEG or PNG and add it again.",
                       {"format": sniffed})
    return _reject(name, reasons.UNSUPPORTED_FORMAT, NOT_AN_IMAGE)


def _orientation(img: Image.Image) -> Optional[int]:
    """The EXIF orientation as stored (1..8), or None."""
    value = img.info.get("original_orientation")  # pillow_heif: libheif already turned the pixels upright
    if value is None:
        try:
            value = img.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - corrupt EXIF: treat as absent
            value = None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (a new image either way); corrupt EXIF leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        return img.copy()


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: high-bit-depth grey scaled (not clipped), transparency composited onto white."""
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return Image.fromarray(_grey_to_8bit(img)).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")  # RGB (a copy), L, 1, P, CMYK (PIL undoes Adobe's inverted CMYK), YCbCr


def _grey_to_8bit(img: Image.Image) -> np.ndarray:
    """16-bit ("I;16", and "I" as Pillow opens 16-bit PNG) scaled by 255/65535; float 0..1 or 0..255;
    anything larger scaled by its maximum."""
    a = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(a.max()) if a.size else 0.0
    if img.mode == "F":
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
    else:
        scale = 255.0 / 65535.0 if top <= 65535 else 255.0 / top
    return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
