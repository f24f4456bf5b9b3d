"""Reading uploaded photos: every format, EXIF orientation, colour modes, frames, and plain-words rejections.

Every file is written into tmp_path at test time from the bundled sample photos; nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, features

from lib_profile.photos import reasons
from lib_profile.photos.reading import (DEFAULT_MAX_PIXELS, SUPPORTED_FORMATS, PhotoRead, read_photo,
                                        read_photo_bytes)

try:  # so the tests can write HEIC: pillow_heif 0.16 here carries libheif with the x265 HEVC encoder
    import pillow_heif

    pillow_heif.register_heif_opener()
    HAS_HEIF = True
except ImportError:
    HAS_HEIF = False
needs_heif = pytest.mark.skipif(not HAS_HEIF, reason="pillow_heif is not installed")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["path", "bytes"])
def read(request):
    """Read a file through read_photo, or through read_photo_bytes with its bytes (an upload)."""
    if request.param == "path":
        return read_photo
    return lambda path, **kw: read_photo_bytes(Path(path).read_bytes(), Path(path).name, **kw)


def _diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)).mean())


def _assert_ok(r: PhotoRead, size=None) -> Image.Image:
    assert r.reason is None, r.reason
    assert r.ok
    assert type(r.image) is Image.Image and r.image.mode == "RGB"  # a plain, loaded image: no file behind it
    assert r.image.info == {}
    if size is not None:
        assert r.image.size == size
    return r.image


def _assert_rejected(r: PhotoRead, code: str, *words: str) -> str:
    assert r.image is None and not r.ok
    assert r.reason is not None and r.reason.code == code, r.reason
    msg = r.reason.message
    assert msg and msg[0].isupper() and msg.rstrip().endswith((".", ")")), msg  # a sentence
    assert "Traceback" not in msg and "Error" not in msg and "<" not in msg, msg  # not an exception dump
    for word in words:
        assert word.lower() in msg.lower(), msg
    return msg


# -- formats ---------------------------------------------------------------------------------------------

FORMATS = [  # (PIL format, file name, mean abs difference allowed)
    ("JPEG", "photo.jpg", 4), ("PNG", "photo.png", 0), ("WEBP", "photo.webp", 4), ("BMP", "photo.bmp", 0),
    ("TIFF", "photo.tiff", 0), ("GIF", "photo.gif", 12), pytest.param("HEIF", "photo.heic", 4, marks=needs_heif),
]


@pytest.mark.parametrize("fmt,filename,tolerance", FORMATS, ids=["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF"])
def test_each_format_round_trips(read, tmp_path, astronaut, fmt, filename, tolerance):
    path = tmp_path / filename
    astronaut.save(path, fmt)
    r = read(path)
    image = _assert_ok(r, (512, 512))
    assert _diff(image, astronaut) <= tolerance
    assert r.info == {"format": fmt, "original_size": [512, 512], "orientation": None,
                      "mode": "P" if fmt == "GIF" else "RGB", "frames": 1}
    assert fmt in SUPPORTED_FORMATS


def test_mpo_from_phones_gives_the_first_image(read, tmp_path, astronaut, grace_hopper):
    path = tmp_path / "photo.jpg"
    astronaut.save(path, "MPO", save_all=True, append_images=[grace_hopper.resize(astronaut.size)])
    r = read(path)
    assert _diff(_assert_ok(r, (512, 512)), astronaut) <= 4
    assert r.info["format"] == "MPO" and r.info["frames"] == 2


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux /proc")
def test_the_file_is_closed_after_reading(tmp_path, astronaut):
    path = tmp_path / "photo.jpg"
    astronaut.save(path)
    image = _assert_ok(read_photo(path))
    open_files = {os.path.realpath(os.path.join("/proc/self/fd", fd)) for fd in os.listdir("/proc/self/fd")
                  if os.path.islink(os.path.join("/proc/self/fd", fd))}
    assert str(path.resolve()) not in open_files
    path.unlink()
    assert image.getpixel((0, 0)) and image.copy().size == (512, 512)


# -- EXIF orientation ------------------------------------------------------------------------------------

# A camera held sideways stores the pixels turned and says how to turn them back:
# orientation 6 = turn 90 degrees clockwise to view, 8 = 90 degrees counter-clockwise.
STORED_AS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("fmt,filename", [("JPEG", "side.jpg"), ("PNG", "side.png"), ("WEBP", "side.webp"),
                                          ("TIFF", "side.tiff"), pytest.param("HEIF", "side.heic", marks=needs_heif)])
def test_exif_orientation_comes_out_upright(read, tmp_path, grace_hopper, orientation, fmt, filename):
    upright = grace_hopper  # 512 x 600: not square, so a wrong turn shows in the size
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / filename
    # pillow_heif turns an EXIF orientation into the HEIF rotation only when given as bytes (not Image.Exif)
    upright.transpose(STORED_AS[orientation]).save(path, fmt, exif=exif.tobytes() if fmt == "HEIF" else exif)
    # stored sideways; HEIF carries the turn in its own header, which libheif applies while opening
    stored_size = (512, 600) if fmt == "HEIF" else (600, 512)
    with Image.open(path) as stored:
        assert stored.size == stored_size
    r = read(path)
    image = _assert_ok(r, (512, 600))
    assert _diff(image, upright) <= 4
    assert _diff(image, upright.transpose(Image.Transpose.ROTATE_180)) > 20  # and not upside down
    assert r.info["orientation"] == orientation and r.info["original_size"] == list(stored_size)


# -- colour modes ----------------------------------------------------------------------------------------

def test_cmyk_jpeg(read, tmp_path, astronaut):
    path = tmp_path / "print.jpg"
    cmyk = astronaut.convert("CMYK")
    cmyk.save(path, quality=95)
    r = read(path)
    image = _assert_ok(r, (512, 512))
    assert r.info["mode"] == "CMYK"
    assert _diff(image, cmyk.convert("RGB")) <= 4
    assert _diff(image, astronaut) <= 6  # colours right, not inverted


@pytest.mark.parametrize("fmt,filename", [("PNG", "grey16.png"), ("TIFF", "grey16.tiff")])
def test_16_bit_grey_is_scaled_not_clipped(read, tmp_path, astronaut, fmt, filename):
    grey = np.asarray(astronaut.convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / filename, fmt)  # values up to 65535
    r = read(tmp_path / filename)
    out = np.asarray(_assert_ok(r, (512, 512)), dtype=np.int16)
    assert r.info["mode"] in ("I", "I;16")  # Pillow 9.5 opens 16-bit PNG as "I", 16-bit TIFF as "I;16"
    assert abs(out.mean() - grey.mean()) < 1 and out.mean() < 200
    assert np.abs(out[..., 0] - grey).max() <= 1
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_grey_tiff(read, tmp_path, astronaut, scale):
    grey = np.asarray(astronaut.convert("L"))
    Image.fromarray((grey / 255.0 * scale).astype(np.float32), "F").save(tmp_path / "float.tiff")
    r = read(tmp_path / "float.tiff")
    out = np.asarray(_assert_ok(r, (512, 512)), dtype=np.int16)
    assert r.info["mode"] == "F"
    assert np.abs(out[..., 0] - grey).max() <= 1


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel(read, tmp_path, astronaut, mode):
    path = tmp_path / "grey.png"
    astronaut.convert(mode).save(path)
    r = read(path)
    out = np.asarray(_assert_ok(r, (512, 512)))
    assert r.info["mode"] == mode
    assert (out[..., 0] == out[..., 2]).all()
    if mode == "1":
        assert set(np.unique(out)) <= {0, 255}


def _cut_out(img: Image.Image) -> Image.Image:
    """The photo in a centre square, fully transparent (and black underneath) everywhere else."""
    rgba = Image.new("RGBA", img.size, (0, 0, 0, 0))
    rgba.paste(img.crop((128, 128, 384, 384)), (128, 128))
    return rgba


@pytest.mark.parametrize("mode,fmt,filename", [("RGBA", "PNG", "cut.png"), ("LA", "PNG", "cut.png"),
                                               ("RGBA", "WEBP", "cut.webp"), ("RGBA", "TIFF", "cut.tiff")])
def test_transparent_background_turns_white_not_black(read, tmp_path, astronaut, mode, fmt, filename):
    img = _cut_out(astronaut).convert(mode)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    img.save(tmp_path / filename, fmt, **kw)
    r = read(tmp_path / filename)
    out = np.asarray(_assert_ok(r, (512, 512)))
    assert r.info["mode"] == mode
    assert (out[:100, :100] == 255).all() and (out[-100:, -100:] == 255).all()
    expected = np.asarray(astronaut.convert(mode.rstrip("A")).convert("RGB").crop((128, 128, 384, 384)), dtype=np.int16)
    assert np.abs(out[128:384, 128:384] - expected).max() <= 1


@pytest.mark.parametrize("fmt,filename", [("PNG", "logo.png"), ("GIF", "logo.gif")])
def test_palette_with_transparency(read, tmp_path, fmt, filename):
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)  # 0: black (transparent), 1: blue
    img.paste(1, (16, 16, 48, 48))
    img.save(tmp_path / filename, fmt, transparency=0)
    r = read(tmp_path / filename)
    out = np.asarray(_assert_ok(r, (64, 64)))
    assert r.info["mode"] == "P"
    assert (out[:16] == 255).all() and (out[:, :16] == 255).all()  # transparent -> white
    assert (out[16:48, 16:48] == [0, 0, 255]).all()


# -- animations -------------------------------------------------------------------------------------------

ANIMATIONS = [("GIF", "anim.gif"), ("PNG", "anim.png"), ("WEBP", "anim.webp")]  # GIF, APNG, animated WebP


@pytest.mark.parametrize("fmt,filename", ANIMATIONS, ids=[a[0] for a in ANIMATIONS])
def test_animation_gives_its_first_frame(read, tmp_path, fmt, filename):
    if fmt == "WEBP" and not features.check("webp_anim"):
        pytest.skip("this Pillow's libwebp cannot write animations")
    frames = [Image.new("RGB", (32, 24), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    kw = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(tmp_path / filename, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kw)
    r = read(tmp_path / filename)
    out = np.asarray(_assert_ok(r, (32, 24)), dtype=np.int16)
    assert r.info["frames"] == 3
    assert np.abs(out - [255, 0, 0]).max() <= 2


# -- rejections -------------------------------------------------------------------------------------------

def test_zero_byte_file(read, tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    _assert_rejected(read(path), reasons.UNREADABLE, "empty")


@pytest.mark.parametrize("fmt,filename", [("JPEG", "half.jpg"), ("PNG", "half.png"), ("WEBP", "half.webp"),
                                          ("GIF", "half.gif"), ("TIFF", "half.tiff"),
                                          pytest.param("HEIF", "half.heic", marks=needs_heif)])
def test_truncated_file(read, tmp_path, astronaut, fmt, filename):
    whole = tmp_path / ("whole" + Path(filename).suffix)
    astronaut.save(whole, fmt)
    data = whole.read_bytes()
    (tmp_path / filename).write_bytes(data[:len(data) // 2])
    _assert_rejected(read(tmp_path / filename), reasons.UNREADABLE, "cut short or damaged", "copy it again")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_damaged_header(read, tmp_path):
    path = tmp_path / "stub.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # a PNG signature and nothing usable after it
    _assert_rejected(read(path), reasons.UNREADABLE, "damaged")


def test_text_file_named_jpg(read, tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("Remember to bring the good camera tomorrow.\n" * 20)
    _assert_rejected(read(path), reasons.UNSUPPORTED_FORMAT, "not an image", "JPEG")


def test_format_pil_knows_but_we_do_not_take(read, tmp_path, astronaut):
    path = tmp_path / "photo.tga"
    astronaut.save(path, "TGA")
    r = read(path)
    _assert_rejected(r, reasons.UNSUPPORTED_FORMAT, "TGA", "JPEG or PNG")
    assert r.info["format"] == "TGA"


def test_avif_is_named_not_called_a_non_image(tmp_path):
    data = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64  # an AVIF header, no image
    _assert_rejected(read_photo_bytes(data, "photo.avif"), reasons.UNSUPPORTED_FORMAT, "AVIF")


def test_missing_path(tmp_path):
    r = read_photo(tmp_path / "no-such-photo.jpg")
    _assert_rejected(r, reasons.UNREADABLE, "not found")
    assert r.path == str(tmp_path / "no-such-photo.jpg")


def test_folder_instead_of_file(tmp_path):
    _assert_rejected(read_photo(tmp_path), reasons.UNREADABLE, "folder")


@needs_heif  # to write the HEIC file
def test_heic_without_pillow_heif_says_what_to_install(tmp_path, astronaut):
    path = tmp_path / "IMG_0001.HEIC"
    astronaut.save(path, "HEIF")
    code = ("import sys; sys.modules['pillow_heif'] = None\n"  # as if pillow-heif were not installed
            "from lib_profile.photos.reading import read_photo, read_photo_bytes\n"
            "for r in (read_photo(sys.argv[1]), read_photo_bytes(open(sys.argv[1], 'rb').read(), 'x.heic')):\n"
            "    print(r.reason.code, '|', r.reason.message)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        code_, message = line.split(" | ")
        assert code_ == reasons.UNSUPPORTED_FORMAT and "pip install pillow-heif" in message


# -- size limit -------------------------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header says width x height (with a correct IHDR CRC); decoding it would
    need width x height pixels of memory."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


@pytest.mark.parametrize("side", [20_000, 10_000, 8_000])  # past PIL's own error limit, its warning, neither
def test_too_large_is_refused_before_decoding(read, tmp_path, side):
    path = tmp_path / "huge.png"
    path.write_bytes(_png_claiming(side, side))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning leaks out either
        r = read(path)
    assert time.perf_counter() - start < 2  # nothing was decoded or allocated
    msg = _assert_rejected(r, reasons.TOO_LARGE, "too large", "smaller photo", "50 megapixels")
    assert r.reason.value == side * side and r.reason.threshold == DEFAULT_MAX_PIXELS
    assert f"{side * side / 1e6:.3g} megapixels" in msg


def test_max_pixels_is_ours_to_set(read, tmp_path, astronaut):
    path = tmp_path / "photo.png"
    astronaut.save(path)
    r = read(path, max_pixels=100_000)
    msg = _assert_rejected(r, reasons.TOO_LARGE, "512 x 512")
    assert r.reason.value == 512 * 512 and r.reason.threshold == 100_000 and "0.1 megapixels" in msg
    _assert_ok(read(path, max_pixels=512 * 512))


# -- never raises ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", pytest.param("HEIF", marks=needs_heif)])
def test_damaged_bytes_never_raise(astronaut, fmt):
    buf = io.BytesIO()
    astronaut.resize((64, 64)).save(buf, fmt)
    data, rng = buf.getvalue(), random.Random(fmt)
    for i in range(60):
        damaged = bytearray(data[:rng.randrange(len(data))] if i % 3 == 0 else data)
        for _ in range(0 if i % 3 == 0 else rng.randrange(1, 6)):
            damaged[rng.randrange(len(damaged) if i % 2 else min(len(damaged), 64))] = rng.randrange(256)
        r = read_photo_bytes(bytes(damaged), f"damaged.{fmt.lower()}")
        if r.reason is None:
            assert r.image is not None and r.image.mode == "RGB"
        else:
            _assert_rejected(r, r.reason.code)
            assert r.reason.code in (reasons.UNREADABLE, reasons.UNSUPPORTED_FORMAT, reasons.TOO_LARGE)
