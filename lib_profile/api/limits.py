"""Request-size limits enforced while the body streams in, before it is read whole or parsed.

* Every route has a body limit (:data:`MAX_UPLOAD_BYTES` on the photo uploads, :data:`MAX_JSON_BYTES` elsewhere):
  a larger ``Content-Length`` is refused before a byte is read, and a body without one (chunked) is counted
  as it arrives and refused the moment it passes the limit. 413, naming the limit.
* Multipart photo uploads are parsed as they stream: the photo that would pass the identity's
  ``MAX_PHOTOS`` and the byte that would pass ``MAX_PHOTO_BYTES`` in one photo end the request (413).
"""

from __future__ import annotations

from typing import Awaitable, Callable

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute

from lib_profile.store.identities import MAX_PHOTO_BYTES, MAX_PHOTOS

try:  # python-multipart >= 0.0.13 (what starlette parses forms with)
    from python_multipart.multipart import MultipartParser, parse_options_header
except ImportError:  # older python-multipart, as an older WebUI may have
    from multipart.multipart import MultipartParser, parse_options_header

MB = 2**20
MAX_UPLOAD_BYTES = 256 * MB
"""One request's body on the photo upload routes (multipart or base64 JSON); more photos: more requests."""
MAX_JSON_BYTES = MAX_PHOTO_BYTES * 4 // 3 + MB
"""One request's body on every other route: room for one base64 photo (``pose_photo``) and the rest."""
MAX_OTHER_PARTS = 100
"""Multipart parts other than ``files`` (ignored) one upload may carry."""
MAX_OTHER_PART_BYTES = 64 * 1024


def too_large(what: str, limit: int, hint: str = "") -> HTTPException:
    size = f"{limit // MB} MB" if limit >= MB else f"{limit} bytes"
    return HTTPException(413, f"{what} is over {size}{hint}")


def _body_too_large(limit: int) -> HTTPException:
    return too_large("The request body", limit, " (this route's limit); send fewer or smaller photos per request")


def check_length(request: Request, limit: int) -> None:
    """413 when the request's ``Content-Length`` says its body is over ``limit`` bytes; 400 when unreadable."""
    length = request.headers.get("content-length")
    if length is None:
        return
    try:
        size = int(length)
    except ValueError:
        raise HTTPException(400, f"Content-Length is not a number: {length[:40]!r}") from None
    if size > limit:
        raise _body_too_large(limit)


def counted(receive: Callable[[], Awaitable[dict]], limit: int) -> Callable[[], Awaitable[dict]]:
    """``receive`` that raises a 413 as soon as the body chunks it passed on add up to more than ``limit``."""
    seen = 0

    async def wrapped() -> dict:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _body_too_large(limit)
        return message

    return wrapped


def limited_route(limit: int, base: type = APIRoute) -> type:
    """An :class:`APIRoute` class (a subclass of ``base``) whose requests are refused (413) once their body passes
    ``limit`` bytes."""

    class LimitedRoute(base):
        body_limit = limit

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def limited(request: Request):
                check_length(request, limit)
                return await handler(Request(request.scope, counted(request.receive, limit)))

            return limited

    LimitedRoute.__name__ = f"LimitedRoute{limit}"
    return LimitedRoute


MULTIPART_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["files"],
            "properties": {"files": {
                "type": "array", "items": {"type": "string", "format": "binary"},
                "description": f"The photos, one part each (at most {MAX_PHOTOS} per identity, "
                               f"{MAX_PHOTO_BYTES // MB} MB each, {MAX_UPLOAD_BYTES // MB} MB per request)."}},
        }}},
    }
}
"""OpenAPI of :func:`read_photos`' body, for ``openapi_extra`` (the route reads the stream itself)."""


async def read_photos(request: Request, room: int = MAX_PHOTOS, field: str = "files") -> list[tuple[str, bytes]]:
    """The ``(file name, bytes)`` of the multipart parts named ``field``, parsed while the body streams in.

    Errors: 400 not multipart or malformed; 413 as soon as a part makes more than ``room`` photos, a photo
    passes ``MAX_PHOTO_BYTES``, or another part passes :data:`MAX_OTHER_PART_BYTES` / :data:`MAX_OTHER_PARTS`.
    """
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise HTTPException(400, f"Send the photos as multipart/form-data, one part per photo in the field "
                                 f"'{field}' (curl -F {field}=@photo.jpg), or as JSON to photos/base64")
    photos: list[tuple[str, bytes]] = []
    state: dict = {"headers": {}, "field": b"", "value": b"", "part": None, "others": 0}

    def on_part_begin():
        state["headers"], state["part"] = {}, None

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == field:
            check_count(len(photos) + 1, room)  # before reading this photo
            filename = options.get(b"filename", b"").decode("utf-8", "replace") or "photo"
            state["part"] = [filename, bytearray(), MAX_PHOTO_BYTES]
            photos.append(state["part"])
        else:
            state["others"] += 1
            if state["others"] > MAX_OTHER_PARTS:
                raise HTTPException(413, f"Over {MAX_OTHER_PARTS} form fields besides '{field}'")
            state["part"] = [name, bytearray(), MAX_OTHER_PART_BYTES]

    def on_part_data(data, start, end):
        part = state["part"]
        part[1] += data[start:end]
        if len(part[1]) > part[2]:
            what = part[0] if part in photos else f"The form field {part[0]!r}"
            raise too_large(what, part[2], "; upload a smaller copy" if part in photos else "")

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_headers_finished": on_headers_finished, "on_part_data": on_part_data}
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except HTTPException:
        raise
    except Exception as exc:  # python-multipart's parse errors
        raise HTTPException(400, f"The multipart body is malformed: {exc}") from None
    return [(name, bytes(data)) for name, data, _ in photos]


def check_count(count: int, room: int) -> None:
    """413 when ``count`` photos do not fit the ``room`` (of ``MAX_PHOTOS``) an identity has left."""
    if count > room:
        raise HTTPException(413, f"Too many photos: at most {MAX_PHOTOS} per identity, room for {room} more; "
                                 "delete some or start a new identity")
