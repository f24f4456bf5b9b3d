"""Size and count limits are enforced while the body streams in: 413 naming the limit, nothing stored, and
the server stops reading at the limit (measured by an ASGI ``receive`` that counts what it handed over)."""

from __future__ import annotations

import asyncio
import json

import pytest

from lib_profile import API_PREFIX
from lib_profile.api.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES
from lib_profile.store.identities import MAX_PHOTO_BYTES, MAX_PHOTOS

MB = 2**20
CHUNK = b"\xff" * MB
SLUG = "ann"
BOUNDARY = "limitsXyZ"


def megabytes(n: float):
    """``n`` MB of bytes in 1 MB chunks (the last one shorter), made lazily."""
    whole, rest = divmod(int(n * MB), MB)
    yield from (CHUNK for _ in range(whole))
    if rest:
        yield CHUNK[:rest]


def multipart(sizes_mb: list[float], field: str = "files"):
    for i, size in enumerate(sizes_mb):
        yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"p{i}.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        yield from megabytes(size)
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def base64_json(sizes_mb: list[float]):
    yield b'{"images": ['
    for i, size in enumerate(sizes_mb):
        yield (b", " if i else b"") + f'{{"name": "p{i}.jpg", "data": "'.encode()
        yield from (b"A" * len(c) for c in megabytes(size))
        yield b'"}'
    yield b"]}"


def call(app, method: str, path: str, headers: dict, chunks) -> tuple[int, str, int]:
    """(status, body text, body bytes the app read) of one request sent chunk by chunk, as a server would."""
    consumed = 0
    chunks = iter(chunks)
    pending = [next(chunks, None)]
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal consumed
        chunk = pending[0]
        if chunk is None:
            return {"type": "http.disconnect"}
        pending[0] = next(chunks, None)
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pending[0] is not None}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000)}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode("utf-8", "replace"), consumed


@pytest.fixture(scope="module")
def studio(host, tmp_path_factory):
    from lib_profile.service import Studio

    s = Studio(host, tmp_path_factory.mktemp("limits") / "data")
    s.create_identity("Ann", "woman")
    yield s
    s.close()


@pytest.fixture(scope="module")
def app(studio):
    from lib_profile.serve import make_app

    return make_app(lambda: studio, ui=False)


def stored(studio) -> list[str]:
    uploads = studio.store.folder(SLUG) / "uploads"
    return sorted(p.name for p in uploads.iterdir())


MULTI = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
JSON = {"content-type": "application/json"}
PHOTOS = f"{API_PREFIX}/identities/{SLUG}/photos"
B64 = PHOTOS + "/base64"
TOTAL = f"{MAX_UPLOAD_BYTES // MB} MB"
PHOTO = f"{MAX_PHOTO_BYTES // MB} MB"
over_total = MAX_UPLOAD_BYTES // MB + 2

# name: (path, headers, body chunks (made lazily), words in the message, most bytes the server may read)
CASES = {
    "41 photos": (PHOTOS, MULTI, lambda: multipart([0.2] * (MAX_PHOTOS + 1)), f"at most {MAX_PHOTOS}",
                  int(MAX_PHOTOS * 0.2 * MB) + 2 * MB),
    "one photo over 25 MB": (PHOTOS, MULTI, lambda: multipart([0.1, MAX_PHOTO_BYTES / MB + 5]), PHOTO,
                             MAX_PHOTO_BYTES + 2 * MB),
    "multipart body over the total, Content-Length": (
        PHOTOS, {**MULTI, "content-length": str(over_total * MB)}, lambda: multipart([24] * 11), TOTAL, 0),
    "multipart body over the total, chunked": (PHOTOS, MULTI, lambda: multipart([24] * 11), TOTAL,
                                               MAX_UPLOAD_BYTES + MB),
    "base64 body over the total, Content-Length": (
        B64, {**JSON, "content-length": str(over_total * MB)}, lambda: base64_json([over_total]), TOTAL, 0),
    "base64 body over the total, chunked": (B64, JSON, lambda: base64_json([over_total]), TOTAL,
                                            MAX_UPLOAD_BYTES + MB),
    "base64 41 photos": (B64, JSON, lambda: base64_json([0.001] * (MAX_PHOTOS + 1)), f"at most {MAX_PHOTOS}",
                         MB),
    "base64 photo over 25 MB": (B64, JSON, lambda: base64_json([MAX_PHOTO_BYTES * 4 / 3 / MB + 2]), PHOTO,
                                MAX_UPLOAD_BYTES),
    "JSON route body over its limit, chunked": (
        f"{API_PREFIX}/identities", JSON, lambda: [b'{"name": "', *megabytes(MAX_JSON_BYTES / MB + 1), b'"}'],
        f"{MAX_JSON_BYTES // MB} MB", MAX_JSON_BYTES + MB),
    "generate body over its limit, Content-Length": (
        f"{API_PREFIX}/identities/{SLUG}/generate", {**JSON, "content-length": str(MAX_JSON_BYTES + 1)},
        lambda: [b"{}"], f"{MAX_JSON_BYTES // MB} MB", 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_limits_refuse_while_streaming(app, studio, case):
    path, headers, body, words, most = CASES[case]
    status, text, consumed = call(app, "POST", path, headers, body())
    assert status == 413, text
    assert words in json.loads(text)["detail"]
    assert consumed <= most, f"read {consumed / MB:.1f} MB, should stop by {most / MB:.1f} MB"
    assert stored(studio) == []
    assert studio.store.list() == [{"slug": SLUG, "name": "Ann", "class_word": "woman",
                                    "created": studio.store.list()[0]["created"], "loras": 0}]


@pytest.mark.parametrize("route", ["multipart", "base64"])
def test_the_photo_cap_counts_stored_photos(app, studio, route):
    """An identity with 39 photos has room for one: a request with two is refused before reading the second."""
    uploads = studio.store.folder(SLUG) / "uploads"
    for i in range(MAX_PHOTOS - 1):
        (uploads / f"old{i}.jpg").write_bytes(b"x")
    try:
        path, headers, body = (PHOTOS, MULTI, multipart([1, 1])) if route == "multipart" else \
            (B64, JSON, base64_json([0.001, 0.001]))
        status, text, consumed = call(app, "POST", path, headers, body)
        assert status == 413 and "room for 1 more" in text, text
        if route == "multipart":
            assert consumed < 2 * MB
        assert len(stored(studio)) == MAX_PHOTOS - 1
    finally:
        for i in range(MAX_PHOTOS - 1):
            (uploads / f"old{i}.jpg").unlink()


@pytest.mark.parametrize("headers, body, status, words", [
    ({"content-type": "text/plain"}, [b"hello"], 400, "multipart/form-data"),
    (MULTI, [b"--nope\r\n garbage"], 400, "malformed"),
    (MULTI, [f"--{BOUNDARY}--\r\n".encode()], 400, "No photos given"),
    ({**MULTI, "content-length": "many"}, [b""], 400, "Content-Length"),
])
def test_bad_multipart_is_a_400(app, studio, headers, body, status, words):
    got, text, _ = call(app, "POST", PHOTOS, headers, body)
    assert got == status and words in text, text
    assert stored(studio) == []
