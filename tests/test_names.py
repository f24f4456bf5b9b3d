"""Names in any script (issue 18, 7): identities get a stable ASCII slug and keep their display name; photos keep
the names they were uploaded with in the report, and can be removed by them; through the API and the CLI."""

from __future__ import annotations

import base64
import re
import unicodedata
from urllib.parse import quote

import httpx
import pytest

from lib_profile import API_PREFIX, sample_photos
from lib_profile.store.identities import slug_for
from tests.test_api import Server, png

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")

# (display name, what the slug starts with); every one is accepted
GOOD = [
    ("李雷", "li-lei-"), ("Анна", "anna-"), ("Zoë", "zoe-"), ("محمد", "mhmd-"), ("Ελένη", "elene-"),
    ("עדי", "dy-"), ("สมชาย", "smchaay-"), ("김민준", "gimminjun-"), ("さくら", "sakura-"), ("Đặng Thị", "dang-thi-"),
    ("😀", ""), ("🙂🙂", ""), ("Anna 李", "anna-li-"), ("José-María O'Neil", "jose-maria-o-neil-"),
    ("李" * 100, "li-li-li-"), ("x" * 60, "x" * 31 + "-"), ("%2e%2e", "2e-2e"), ("Anna Li", "anna-li"),
    ("علی‌رضا", "lyrd-"),  # Persian with a zero-width non-joiner
]
# refused with a 400 (path parts, control and invisible characters, too long, nothing)
BAD = ["../x", "a/b", "a\\b", "..", "a\x00b", "a\nb", "\u202eevil", "李" * 101, "", "   "]


def test_slug_table():
    slugs = {}
    for name, start in GOOD:
        slug = slug_for(name)
        assert SLUG_RE.fullmatch(slug) and slug.startswith(start), (name, slug)
        assert slug_for(name) == slug and slug_for(f"  {name} ") == slug  # stable
        slugs[slug] = name
    assert len(slugs) == len(GOOD)  # no two names share one
    assert slug_for("Anna") != slug_for("Анна") and slug_for("Zoë") != slug_for("Zoe")
    assert slug_for("Zoë") == slug_for(unicodedata.normalize("NFD", "Zoë"))  # one name, however composed
    assert slug_for("Anna Li") == "anna-li" and slug_for("x" * 40) == "x" * 40
    assert slug_for("x" * 41 + "a") != slug_for("x" * 41 + "b")  # long names differ past 40 too
    for bad in BAD:
        with pytest.raises(Exception) as err:
            slug_for(bad)
        assert type(err.value).__name__ == "HostError", bad


@pytest.fixture
def api(host, tmp_path):
    from lib_profile.serve import make_app
    from lib_profile.service import Studio

    studio = Studio(host, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "outputs")
    server = Server(make_app(lambda: studio, ui=False))
    with httpx.Client(base_url=server.url + API_PREFIX, timeout=120) as client:
        client.studio = studio
        yield client
    server.stop()
    studio.close()


def test_identity_names_in_any_script_through_the_api(api):
    made = {}
    for name, _start in GOOD:
        r = api.post("/identities", json={"name": name})
        assert r.status_code == 201, (name, r.text)
        slug = r.json()["slug"]
        assert slug == slug_for(name) and r.json()["name"] == name.strip()
        assert api.get(f"/identities/{slug}").json()["name"] == name.strip()
        made[slug] = name
    assert {x["slug"]: x["name"] for x in api.get("/identities").json()} == made
    for bad in BAD:
        r = api.post("/identities", json={"name": bad})
        assert r.status_code == 400 and r.json()["detail"], (bad, r.status_code)
    # the same name again, or another spelling of one slug, is a 409 saying so; a look-alike in another script is not
    for again in ("李雷", "anna li", "ANNA-LI", unicodedata.normalize("NFD", "Zoë")):
        r = api.post("/identities", json={"name": again})
        assert r.status_code == 409 and "already exists" in r.json()["detail"], (again, r.text)
    assert api.post("/identities", json={"name": "Anna"}).status_code == 201
    assert api.post("/identities", json={"name": "Анна Ли"}).status_code == 201  # beside "Anna Li"
    assert api.post("/identities", json={"name": "Zoe"}).status_code == 201  # beside "Zoë"
    for slug in made:  # and every one of them goes away whole
        assert api.delete(f"/identities/{slug}").status_code == 200
    assert not any(p.name.startswith(".") for p in api.studio.store.root.iterdir())


PHOTO_NAMES = ["李雷.jpg", "Анна.jpg", "محمد.jpg", "Zoë.JPG", "😀.jpg", "../../evil.jpg", "%2e%2e.jpg",
               "照片 " + "长" * 120 + ".jpg", "a:b.jpg"]
SHOWN = ["李雷.jpg", "Анна.jpg", "محمد.jpg", "Zoë.JPG", "😀.jpg", "evil.jpg", "%2e%2e.jpg", None, "a_b.jpg"]


@pytest.mark.parametrize("how", ["multipart", "base64"])
def test_photo_names_in_any_script_are_kept(api, how):
    api.post("/identities", json={"name": "Photo Names"}).raise_for_status()
    slug = "photo-names"
    photos = [png(img) for _n, img in sample_photos.selfies()[:len(PHOTO_NAMES)]]
    items = list(zip(PHOTO_NAMES, photos)) + [("李雷.jpg", photos[1])]  # the same name twice
    if how == "multipart":
        r = api.post(f"/identities/{slug}/photos", files=[("files", (n, d, "image/jpeg")) for n, d in items])
    else:
        r = api.post(f"/identities/{slug}/photos/base64", json={"images": [
            {"name": n, "data": base64.b64encode(d).decode()} for n, d in items]})
    assert r.status_code == 200, r.text
    report = r.json()["photos"]
    shown = [p["file"] for p in report]
    for want in filter(None, SHOWN):
        assert want in shown, (want, shown)
    assert "李雷-1.jpg" in shown and len(set(shown)) == len(items)  # each verdict tells its photo
    long = next(s for s in shown if s.startswith("照片"))
    assert len(long.encode()) <= 200 and long.startswith("照片 长")
    stored = [p["stored"] for p in report]
    assert all(s.isascii() and "/" not in s and not s.startswith(".") for s in stored) and len(set(stored)) == len(items)
    record = api.get(f"/identities/{slug}").json()
    assert sorted(record["photos"]) == sorted(shown)
    assert api.get(f"/identities/{slug}/contact_sheet.png").status_code == 200
    # removed by the name the user sees (any script, percent-encoded in the URL), or by its stored name
    for name in ("李雷.jpg", "Анна.jpg", "%2e%2e.jpg"):
        r = api.delete(f"/identities/{slug}/photos/{quote(name, safe='')}")
        assert r.status_code == 200, (name, r.text)
        assert name not in [p["file"] for p in r.json()["photos"]]
    by_stored = next(p["stored"] for p in report if p["file"] == "محمد.jpg")
    assert api.delete(f"/identities/{slug}/photos/{quote(by_stored, safe='')}").status_code == 200
    left = api.get(f"/identities/{slug}").json()["photos"]
    assert "محمد.jpg" not in left and "李雷-1.jpg" in left and len(left) == len(items) - 4
    assert api.delete(f"/identities/{slug}/photos/{quote('nope.jpg')}").status_code == 404
    assert api.delete(f"/identities/{slug}/photos/%2E%2E").status_code in (400, 404)


def test_contact_sheet_titles_are_drawable():
    from lib_profile.photos.contact_sheet import _drawable, _font

    font = _font(13)
    assert _drawable("Анна.jpg", font) == "Анна.jpg" and _drawable("Zoë.jpg", font) == "Zoë.jpg"
    assert _drawable("李雷.jpg", font).isascii() and "Li Lei" in _drawable("李雷.jpg", font)


def test_cli_intake_keeps_photo_names(tmp_path):
    from lib_profile.cli import main
    import json

    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["李雷.jpg", "Анна.jpg", "محمد.jpg", "Zoë.jpg", "😀.jpg"]
    for name, (_n, img) in zip(names, sample_photos.selfies()):
        (photos / name).write_bytes(png(img))
    assert main(["intake", str(photos), "--out", str(tmp_path / "intake")]) == 0
    report = json.loads((tmp_path / "intake" / "report.json").read_text("utf-8"))
    assert sorted(p["file"] for p in report["photos"]) == sorted(names)


@pytest.mark.parametrize("name", ["../x", "a/b", "a\x00b", "..", "\u202ex", "李" * 101])
def test_cli_train_refuses_unsafe_names(tmp_path, capsys, name):
    from lib_profile.cli import main

    rc = main(["train", str(tmp_path / "intake"), "--checkpoint", str(tmp_path / "none.safetensors"),
               "--name", name, "--out", str(tmp_path / "out")])
    assert rc == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_train_names_in_any_script():
    from lib_profile.cli import lora_name

    assert lora_name("anna") == "anna"
    for name, _start in GOOD:
        if not name.isascii():
            assert SLUG_RE.fullmatch(lora_name(name)) and lora_name(name) == slug_for(name)
