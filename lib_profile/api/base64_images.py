"""Images sent as base64 text in JSON bodies: decoded, or refused with a 400 (413 when too big) naming the image."""

from __future__ import annotations

import base64
import binascii
import re

from fastapi import HTTPException

from lib_profile.store.identities import MAX_PHOTO_BYTES


_DATA_URL = re.compile(r"data:[^,;]*(?:;[^,;]*)*?(;base64)?,", re.IGNORECASE)


def decode_base64(data: str, name: str) -> bytes:
    """A base64 field's bytes. Accepted: plain base64, with or without a ``data:image/...;base64,`` prefix, with
    line breaks and other whitespace anywhere (``base64 FILE`` wraps at 76 columns). Refused with a 400 naming
    the image: a data URL that is not base64, other characters, wrong padding, nothing at all; 413 when too big."""
    text = data.lstrip()
    prefix = _DATA_URL.match(text)
    if prefix:
        if not prefix.group(1):
            raise HTTPException(400, f"{name}: the data: URL is not base64 (it needs ';base64,' before the data)")
        text = text[prefix.end():]
    text = "".join(text.split())  # line breaks, spaces, tabs
    if len(text) > MAX_PHOTO_BYTES * 4 // 3 + 16:
        raise HTTPException(413, f"{name} is over {MAX_PHOTO_BYTES // 2**20} MB")
    if not text:
        raise HTTPException(400, f"{name}: no data (the base64 text is empty)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{name}: the data is not valid base64 (standard alphabet A-Z a-z 0-9 + /, "
                                 "padded with '=')") from None
