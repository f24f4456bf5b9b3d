"""A contact sheet: every photo as a thumbnail with its verdict, face box and reasons drawn on it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from PIL import Image, ImageDraw, ImageFont

GREEN, RED, GREY = (40, 170, 80), (210, 50, 50), (110, 110, 110)


def _font(size: int):
    try:  # matplotlib ships DejaVu Sans; Pillow 9.5's built-in font has no sizes
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except Exception:  # noqa: BLE001
        return ImageFont.load_default()


def _drawable(text: str, font) -> str:
    """``text`` if ``font`` has a glyph for each of its characters, else its ASCII transliteration (Unidecode):
    a name in a script the font lacks (DejaVu has no CJK) reads ``Li Lei.jpg`` rather than empty boxes."""
    try:
        from matplotlib.ft2font import FT2Font

        face = FT2Font(getattr(font, "path", ""))
        if all(c.isspace() or face.get_char_index(ord(c)) for c in text):
            return text
    except Exception:  # noqa: BLE001 - the default bitmap font, or no matplotlib: ASCII is safe
        if text.isascii():
            return text
    from unidecode import unidecode

    return " ".join(unidecode(text).split())


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def contact_sheet(entries: list[dict], cell: int = 240, columns: int = 5) -> Image.Image:
    """``entries``: dicts with ``image`` (PIL or None), ``title``, ``accepted`` (bool), ``box`` (in the
    image's pixels or None) and ``lines`` (reason texts); ``verdict`` (optional) replaces the ACCEPTED/REJECTED
    word (a portrait is not judged: ``""``) and ``colour`` the green/red frame."""
    columns = max(1, min(columns, len(entries) or 1))
    rows = max(1, math.ceil(len(entries) / columns))
    text_h = 78
    sheet = Image.new("RGB", (columns * cell, rows * (cell + text_h)), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    title_font, small = _font(13), _font(11)
    for i, e in enumerate(entries):
        x0, y0 = (i % columns) * cell, (i // columns) * (cell + text_h)
        colour = e.get("colour") or (GREEN if e.get("accepted") else RED)
        image: Optional[Image.Image] = e.get("image")
        if image is not None:
            scale = (cell - 8) / max(image.size)
            thumb = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.BILINEAR)
            ox, oy = x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2
            sheet.paste(thumb, (ox, oy))
            if e.get("box"):
                bx1, by1, bx2, by2 = (v * scale for v in e["box"])
                draw.rectangle((ox + bx1, oy + by1, ox + bx2, oy + by2), outline=colour, width=3)
        else:
            draw.rectangle((x0 + 4, y0 + 4, x0 + cell - 4, y0 + cell - 4), fill=(225, 225, 225))
            draw.text((x0 + 12, y0 + cell // 2 - 8), "cannot show", fill=GREY, font=title_font)
        draw.rectangle((x0 + 2, y0 + 2, x0 + cell - 2, y0 + cell - 2), outline=colour, width=2)
        verdict = e.get("verdict", "ACCEPTED" if e.get("accepted") else "REJECTED")
        draw.text((x0 + 6, y0 + cell + 2), f"{verdict}  {_drawable(e.get('title', ''), title_font)}".strip()[:40], fill=colour,
                  font=title_font)
        y = y0 + cell + 20
        parts = [part for line in e.get("lines", []) for part in _wrap(draw, line, small, cell - 12)]
        for part in parts[:4]:
            draw.text((x0 + 6, y), part, fill=(40, 40, 40), font=small)
            y += 13
    return sheet
