"""Every route that takes a name keeps its paths inside their root (issue 18), and base64 uploads come in the
forms people paste. The fuzz table sends each name raw, percent-encoded, double-encoded, as Unicode look-alikes, with
a backslash, absolute, with NUL and as a symlink inside the data folder that points outside; no answer may be a
5xx and none may hold the secret placed outside the roots. Requests go over a real socket (http.client sends the
path byte for byte: httpx would fold ``..`` segments away)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import textwrap
from urllib.parse import quote, unquote

import pytest
from PIL import Image

from lib_profile import API_PREFIX
from tests.test_api import Server

SECRET = "PS-SECRET-7f3a9c1e-do-not-serve"
SLUG = "fuzz-person"
JOB = "abc123def456"
PORTRAIT = "000-1.png"

# (form, raw path segment, the same name as a JSON string)
NAMES = [
    ("raw dotdot", "..", ".."),
    ("raw dotdot file", "..", "../../secret.txt"),
    ("encoded dotdot", "%2E%2E", "%2E%2E"),
    ("encoded traversal", "..%2F..%2Fsecret.txt", "../../../secret.txt"),
    ("double encoded", "%252E%252E", "%252E%252E"),
    ("double encoded traversal", "%252E%252E%252Fsecret.txt", "%252E%252E%252Fsecret.txt"),
    ("fullwidth dots", quote("．．"), "．．"),
    ("fullwidth solidus", quote("．．／secret.txt"), "．．／secret.txt"),
    ("backslash", "..%5Csecret.txt", "..\\secret.txt"),
    ("absolute", "%2Fetc%2Fpasswd", "/etc/passwd"),
    ("absolute secret", None, None),  # filled in with the secret's own path
    ("nul", "%00", "\x00"),
    ("nul suffix", "000-1.png%00.txt", "000-1.png\x00.txt"),
    ("drive", "C%3A%5Csecret.txt", "C:\\secret.txt"),
    ("symlink out", "leak", "leak"),
    ("symlink file out", "leak.png", "leak.png"),
]


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 90, 60)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def world(host, tmp_path):
    """A studio with one identity, one portrait set, a secret outside every root, and links that point at it."""
    from lib_profile.service import Studio

    outputs = tmp_path / "webui" / "outputs" / "profile-studio"
    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "webui" / "models" / "Lora" / "profile-studio",
                    outputs_root=outputs)
    studio.create_identity("Fuzz Person")
    secret_dir = tmp_path / "outside"
    (secret_dir / "intake").mkdir(parents=True)
    outputs.mkdir(parents=True)
    secret = secret_dir / "secret.txt"
    for f in (secret, secret_dir / "leak.png", secret_dir / PORTRAIT, secret_dir / "plan.json",
              secret_dir / "intake" / "contact_sheet.png", tmp_path / "secret.txt", tmp_path / "webui" / "secret.txt"):
        f.write_text(SECRET)
    (secret_dir / "identity.json").write_text(json.dumps({"slug": "leak", "name": SECRET, "class_word": "person",
                                                          "token": SECRET, "created": 0, "loras": []}))
    (secret_dir / "result.json").write_text(json.dumps({"images": [{"file": PORTRAIT, "seed": 1, "note": SECRET}]}))
    # what "/files/%2E%2E/<job>/<name>" reaches: a folder beside the outputs root
    beside = outputs.parent / JOB
    beside.mkdir(parents=True)
    (beside / PORTRAIT).write_text(SECRET)
    (beside / "leak.png").write_text(SECRET)
    job = outputs / SLUG / JOB
    job.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(job / PORTRAIT)
    (job / "result.json").write_text(json.dumps({"images": [{"file": PORTRAIT, "seed": 1}]}))
    (job / "leak.png").symlink_to(secret)
    (job / "leak").symlink_to(secret_dir)
    (outputs / SLUG / "leak").symlink_to(secret_dir)
    (outputs / "leak").symlink_to(secret_dir)
    (studio.store.root / "leak").symlink_to(secret_dir)
    uploads = studio.store.folder(SLUG) / "uploads"
    (uploads / "real.jpg").write_bytes(jpeg())
    (uploads / "leak.png").symlink_to(secret)
    (uploads / "leak").symlink_to(secret_dir)
    yield studio, secret
    studio.close()


@pytest.fixture
def server(world):
    from lib_profile.serve import make_app

    studio, _secret = world
    srv = Server(make_app(lambda: studio, ui=False))
    yield srv
    srv.stop()


def send(server, method: str, path: str, body=None, headers=None) -> tuple[int, bytes]:
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        if isinstance(body, (dict, list)):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, API_PREFIX + path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def multipart(filename: str) -> tuple[bytes, dict]:
    boundary = "fuzzboundary1234"
    name = filename.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8", "surrogatepass")
    body = (f"--{boundary}\r\n".encode() + b'Content-Disposition: form-data; name="files"; filename="' + name
            + b'"\r\nContent-Type: image/jpeg\r\n\r\n' + jpeg() + f"\r\n--{boundary}--\r\n".encode())
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def requests_for(seg: str, text: str):
    """(method, path, body, kind) for every route that takes a name: the name in each place it can go.
    kind: "file" (serves a file: must not answer 200), "any" (may succeed, e.g. a name reduced to its last part),
    "photo" (may succeed only for a name a photo uploaded earlier in the fuzz was given, e.g. a literal ``%2E%2E``:
    photos keep the names the user gave)."""
    out = [
        ("GET", f"/identities/{seg}", None, "file"),
        ("GET", f"/identities/{seg}/contact_sheet.png", None, "file"),
        ("POST", f"/identities/{seg}/photos/base64", {"images": [{"name": "a.jpg", "data": "AAAA"}]}, "file"),
        ("DELETE", f"/identities/{seg}/photos/real.jpg", None, "file"),
        ("DELETE", f"/identities/{SLUG}/photos/{seg}", None, "photo"),
        ("POST", f"/identities/{seg}/train", {}, "file"),
        ("POST", f"/identities/{SLUG}/train", {"checkpoint": text}, "file"),
        ("POST", "/portraits", {"name": "Fuzz Flow", "images": [{"name": "a.jpg", "data": "AAAA"}],
                                "train": {"checkpoint": text}}, "file"),
        ("POST", f"/identities/{seg}/generate", {}, "file"),
        ("POST", f"/identities/{SLUG}/generate", {"pose": text}, "file"),
        ("POST", f"/identities/{SLUG}/generate", {"tone": text}, "file"),
        ("POST", f"/identities/{SLUG}/generate", {"lora": text}, "file"),
        ("GET", f"/jobs/{seg}", None, "file"),
        ("POST", f"/jobs/{seg}/cancel", None, "file"),
        ("POST", f"/jobs/{seg}/resume", None, "file"),
        ("GET", f"/jobs?identity={seg}", None, "any"),
        ("GET", f"/files/{seg}/{JOB}/{PORTRAIT}", None, "file"),
        ("GET", f"/files/{seg}/{JOB}/leak.png", None, "file"),
        ("GET", f"/files/{SLUG}/{seg}/{PORTRAIT}", None, "file"),
        ("GET", f"/files/{SLUG}/{JOB}/{seg}", None, "file"),
        ("GET", f"/poses/{seg}/thumbnail.png", None, "file"),
        ("POST", "/explain", {"identity": text, "words": ["x"], "job": JOB, "image": PORTRAIT}, "file"),
        ("POST", "/explain", {"identity": SLUG, "words": ["x"], "job": text, "image": PORTRAIT}, "file"),
        ("POST", "/explain", {"identity": SLUG, "words": ["x"], "job": JOB, "image": text}, "file"),
        ("POST", "/edit", {"identity": SLUG, "target": "y", "job": text, "image": PORTRAIT}, "file"),
        ("POST", "/edit", {"identity": SLUG, "target": "y", "job": JOB, "image": text}, "file"),
        # a photo source (issue 21): an identity's photo by the name shown for it, never a path
        ("POST", "/restyle", {"identity": SLUG, "target_prompt": "x", "photo": text, "keep_person": False}, "photo"),
        ("POST", "/restyle", {"identity": text, "target_prompt": "x", "photo": "real.jpg", "keep_person": False},
         "file"),
        ("POST", "/restyle", {"identity": SLUG, "target_prompt": "x", "photo_image": text, "keep_person": False},
         "file"),
        ("POST", "/explain", {"identity": SLUG, "words": ["x"], "photo": text}, "photo"),
        ("POST", "/explain", {"identity": text, "words": ["x"], "photo": "real.jpg"}, "file"),
        ("POST", "/edit", {"identity": SLUG, "target": "y", "photo": text}, "photo"),
        ("POST", "/edit", {"identity": text, "target": "y", "photo": "real.jpg"}, "file"),
        ("POST", f"/identities/{SLUG}/photos/base64", {"images": [{"name": text, "data": "AAAA"}]}, "any"),
        ("POST", f"/identities/{SLUG}/photos", multipart(text), "any"),
    ]
    return out


def test_no_route_serves_outside_its_root(server, world):
    studio, secret = world
    failures = []
    cases = [(form, seg, text) if seg else (form, quote(str(secret), safe=""), str(secret))
             for form, seg, text in NAMES]
    for form, seg, text in cases:
        for method, path, body, kind in requests_for(seg, text):
            headers = None
            if isinstance(body, tuple):
                body, headers = body
            shown = studio.store.get(SLUG)["photos"] if kind == "photo" else []
            status, data = send(server, method, path, body, headers)
            where = f"{form}: {method} {path} {body if isinstance(body, dict) else ''}"
            if status >= 500:
                failures.append(f"{where} -> {status} {data[:200]!r}")
            if SECRET.encode() in data:
                failures.append(f"{where} -> {status} served the secret")
            if kind == "photo" and status < 300 and unquote(seg) not in shown:
                failures.append(f"{where} -> {status} (removed a photo by a name it was not given)")
            if kind == "file" and status < 300:
                failures.append(f"{where} -> {status} (a bad name was accepted)")
    assert secret.read_text() == SECRET and (studio.store.folder(SLUG) / "uploads" / "real.jpg").is_file()
    assert not failures, "\n".join(failures)


def test_good_names_still_work(server):
    status, data = send(server, "GET", f"/files/{SLUG}/{JOB}/{PORTRAIT}")
    assert status == 200 and data.startswith(b"\x89PNG")
    assert send(server, "GET", f"/identities/{SLUG}")[0] == 200
    assert send(server, "GET", "/poses/three_quarter_left/thumbnail.png")[0] == 200
    status, data = send(server, "GET", f"/files/{SLUG}/{JOB}/nope.png")
    assert status == 404 and b"nope.png" in data


@pytest.mark.parametrize("name, expect", [
    ("photo.jpg", None), ("a..b.jpg", None), ("..", "'..'"), (".", "'.'"), ("", "empty"),
    ("a/b", "separator"), ("a\\b", "separator"), ("/etc/passwd", "separator"), ("x\x00y", "NUL"),
    ("C:", "':'"), ("．．", "'..'"), ("a／b", "separator"), ("x" * 256, "255"),
])
def test_check_name(name, expect):
    from lib_profile.store.safe import UnsafeName, check_name

    if expect is None:
        assert check_name(name) == name
    else:
        with pytest.raises(UnsafeName, match=expect.replace(".", r"\.")):
            check_name(name)


def test_inside_refuses_links_out(tmp_path):
    from lib_profile.store.safe import UnsafeName, inside

    root, out = tmp_path / "root", tmp_path / "out"
    root.mkdir(), out.mkdir()
    (root / "in").mkdir()
    (root / "link").symlink_to(out)
    (root / "ok").symlink_to(root / "in")
    assert inside(root, "in", "x.png") == root / "in" / "x.png"
    assert inside(root, "ok", "x.png") == root / "ok" / "x.png"  # a link that stays inside is fine
    with pytest.raises(UnsafeName, match="outside"):
        inside(root, "link", "x.png")
    with pytest.raises(UnsafeName):
        inside(root, "..", "out")


# ---------------------------------------------------------------------------- base64 uploads

def _b64_cases():
    raw = jpeg()
    plain = base64.b64encode(raw).decode()
    wrapped = "\n".join(textwrap.wrap(plain, 76)) + "\n"  # what `base64 FILE` prints
    return raw, [
        ("plain", plain, True),
        ("data URL", "data:image/jpeg;base64," + plain, True),
        ("data URL png type", "data:image/png;base64," + plain, True),
        ("wrapped at 76", wrapped, True),
        ("wrapped CRLF", wrapped.replace("\n", "\r\n"), True),
        ("data URL wrapped", "data:image/jpeg;base64,\n" + wrapped, True),
        ("spaces and tabs", " \t" + " ".join(textwrap.wrap(plain, 10)) + " \n", True),
        ("not base64", "%%%", False),
        ("bad padding", plain[:-1] + "=" * 3 if plain.endswith("=") else plain + "===", False),
        ("truncated", plain[:-3], False),
        ("url-safe alphabet", base64.urlsafe_b64encode(b"\xfb\xff" * 30).decode(), False),
        ("data URL not base64", "data:image/jpeg," + plain, False),
        ("empty", "", False),
        ("only whitespace", " \n ", False),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _b64_cases()[1]])
def test_base64_forms(case):
    from fastapi import HTTPException

    from lib_profile.api.base64_images import decode_base64

    raw, cases = _b64_cases()
    _name, data, good = next(c for c in cases if c[0] == case)
    if good:
        assert decode_base64(data, "me.jpg") == raw
    else:
        with pytest.raises(HTTPException) as err:
            decode_base64(data, "me.jpg")
        assert err.value.status_code == 400 and "me.jpg" in err.value.detail


def test_wrapped_base64_upload_over_http(server):
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(jpeg()).decode(), 76))
    status, data = send(server, "POST", f"/identities/{SLUG}/photos/base64",
                        {"images": [{"name": "wrapped.jpg", "data": "data:image/jpeg;base64," + wrapped}]})
    assert status == 200, data
    assert "wrapped.jpg" in [p["file"] for p in json.loads(data)["photos"]]
    status, data = send(server, "POST", f"/identities/{SLUG}/photos/base64",
                        {"images": [{"name": "broken.jpg", "data": "abc$def"}]})
    assert status == 400 and b"broken.jpg" in data


@pytest.mark.parametrize("wanted", ["/etc/passwd", "../tiny-sd15.safetensors", "tiny-sd15.safetensors/..",
                                    "~/model.ckpt", "C:\\models\\x.ckpt", "%2e%2e%2fsecret", "", "other.safetensors"])
def test_a_request_names_models_it_never_gives_their_path(host, tiny_checkpoint, tiny_controlnet, tmp_path, wanted):
    """A checkpoint to train on and a ControlNet model in a request's settings are names the host lists (its file
    name or stem, or the listed path itself); any other name or path is a 400 listing the choices."""
    from lib_profile.hosts.base import HostError, resolve_checkpoint

    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_checkpoint.read_bytes())  # a real model, but not one the host lists
    for good in (tiny_checkpoint.name, tiny_checkpoint.stem, str(tiny_checkpoint)):
        assert resolve_checkpoint(host, good) == str(tiny_checkpoint)
    saved, host.controlnet_files = host.controlnet_files, {"pose": str(tiny_controlnet)}
    try:
        for good in (tiny_controlnet.name, tiny_controlnet.stem, str(tiny_controlnet)):
            assert host.controlnet_model("pose", good) == str(tiny_controlnet)
        assert host.controlnet_model("pose") == str(tiny_controlnet)
        if wanted:
            with pytest.raises(HostError, match="Unknown ControlNet model"):
                host.controlnet_model("pose", wanted)
            with pytest.raises(HostError, match="train on one of: .*" + tiny_checkpoint.stem):
                resolve_checkpoint(host, wanted)
            with pytest.raises(HostError):
                resolve_checkpoint(host, str(other))
    finally:
        host.controlnet_files = saved
