"""A LoRA trained on one cluster worker is used by another (docs/cluster.md, "LoRAs in the cluster"): it lives in
the shared data folder (``<data>/loras/<slug>/``), its SHA-256 recorded at training end; a WebUI worker that
generates with it first publishes it into its own ``<Lora>/profile-studio/``, checked by that hash. Two stand-in
WebUIs with their own Lora folders and one shared data folder (one after the other: the stand-in is one
``modules`` at a time); ``serve`` (the diffusers host) finds the same file in the shared folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from lib_profile import sample_photos
from lib_profile.hosts.base import LoraRef
from lib_profile.store.identities import LoraChanged, NotFound
from lib_profile.store.safe import UnsafeName

try:
    from standins import models as standin_models, webui as standin
    from test_api import png
except ImportError:  # tests/ imported as a package
    from tests.standins import models as standin_models, webui as standin
    from tests.test_api import png

SLUG = "anna"
TRAIN = {"steps": 4, "resolution": 64, "batch_size": 1, "validation_images": 0, "save_every": 4, "log_every": 1,
         "select": "last", "device": "cpu"}
SMALL = {"settings": {"width": 64, "height": 64, "steps": 2}, "switches": {"upscale": False}}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def finish(studio, job_id: str) -> dict:
    job = studio.jobs.wait(job_id, timeout=600)
    assert job["state"] == "done", job["error"]
    return job


@contextlib.contextmanager
def webui_worker(base: Path, name: str, checkpoint: Path, cluster: bool = True):
    """``(modules, host, studio)``: the stand-in WebUI ``name`` (its own ``<base>/<name>/models/Lora``) with the
    shared data folder ``<base>/shared``, as ``_make_studio`` lays out its LoRAs (``cluster``: with a queue URL;
    the jobs stay in this process here, which changes nothing about the files)."""
    from lib_profile.hosts.webui.flavours import detect_flavour
    from lib_profile.hosts.webui.host import WebUIHost
    from lib_profile.service import Studio
    from lib_profile.webui.register import lora_roots

    webui = base / name
    with standin.installed(webui, flavour="a1111", cn_models=[], lora_dir=str(webui / "models" / "Lora")) as modules:
        standin_models.install("a1111", "cpu")
        info = types.SimpleNamespace(filename=str(checkpoint), name=checkpoint.name, model_name=checkpoint.stem,
                                     title=f"{checkpoint.name} [0000000000]")
        sys.modules["modules.sd_models"].checkpoints_list = {info.title: info}
        host = WebUIHost(detect_flavour())
        studio = Studio(host, base / "shared", outputs_root=webui / "outputs",
                        **lora_roots(host.lora_dir(), cluster))
        try:
            yield modules, host, studio
        finally:
            studio.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_checkpoint):
    """A folder with ``shared/`` (an identity whose LoRA worker ``a`` trained, in the cluster layout) and ``a/``."""
    base = tmp_path_factory.mktemp("cluster-loras")
    with webui_worker(base, "a", tiny_checkpoint) as (_modules, host, studio):
        studio.create_identity("Anna")
        studio.add_photos(SLUG, [(f"{n}.jpg", png(im)) for n, im in sample_photos.selfies()[:6]])
        finish(studio, studio.train(SLUG, TRAIN, checkpoint=tiny_checkpoint.name)["id"])
    return base


@pytest.fixture
def cluster(trained, tmp_path):
    """A copy of the trained cluster for one test: ``(base, the LoRA's entry, its canonical file)``."""
    base = tmp_path / "c"
    shutil.copytree(trained, base, symlinks=True)
    entry = json.loads((base / "shared" / "identities" / SLUG / "identity.json").read_text())["loras"][-1]
    return base, entry, base / "shared" / "loras" / SLUG / entry["file"]


def published(base: Path, worker: str, entry: dict) -> Path:
    return base / worker / "models" / "Lora" / "profile-studio" / entry["file"]


def test_training_in_the_cluster_writes_the_lora_to_the_shared_folder_with_its_hash(cluster):
    base, entry, canonical = cluster
    assert canonical.is_file() and entry["sha256"] == sha256(canonical)
    assert not (base / "a" / "models" / "Lora" / "profile-studio" / SLUG).exists()  # not trained into a's folder
    assert sha256(published(base, "a", entry)) == entry["sha256"]  # a shows it at once (published at the end)


# what worker b's Lora folder holds before it generates: nothing, an outdated copy of the same size (the old size
# check kept it), a damaged (cut) copy, or the right copy (kept as it is)
BEFORE = {
    "absent": None,
    "outdated, same size": lambda data: bytes(b ^ 0xFF for b in data[:64]) + data[64:],
    "damaged, cut": lambda data: data[: len(data) // 2],
    "the same file": lambda data: data,
}


@pytest.mark.parametrize("before", list(BEFORE), ids=list(BEFORE))
def test_a_lora_trained_on_one_worker_is_published_into_another_by_hash(cluster, tiny_checkpoint, before):
    base, entry, canonical = cluster
    copy = published(base, "b", entry)
    make = BEFORE[before]
    if make is not None:
        copy.parent.mkdir(parents=True)
        copy.write_bytes(make(canonical.read_bytes()))
    inode = copy.stat().st_ino if make is not None else None
    with webui_worker(base, "b", tiny_checkpoint) as (modules, _host, studio):
        job = finish(studio, studio.generate(SLUG, count=1, seed=1, **SMALL)["id"])
        prompts = [p.prompt for p in modules.processing.calls]
        refreshed = list(sys.modules["networks"].refreshed)
    assert sha256(copy) == entry["sha256"] == sha256(canonical)
    assert not list(copy.parent.glob("*.partial")) and not list(copy.parent.glob(".*"))
    assert any(f"<lora:{entry['name']}:" in p for p in prompts)
    assert "Lora not found" not in json.dumps(job["result"])
    if before == "the same file":
        assert copy.stat().st_ino == inode and not refreshed  # used as it is
    else:
        assert refreshed  # the WebUI's LoRA list was refreshed after the copy


def test_a_changed_canonical_lora_is_refused_with_what_to_do(cluster, tiny_checkpoint):
    base, entry, canonical = cluster
    data = bytearray(canonical.read_bytes())
    data[-1] ^= 0x01
    canonical.write_bytes(bytes(data))
    with webui_worker(base, "b", tiny_checkpoint) as (_modules, _host, studio):
        with pytest.raises(LoraChanged, match=rf"(?s)not the one its training made.*{entry['sha256']}.*train 'anna' again"):
            studio.generate(SLUG, count=1, seed=1, **SMALL)
    assert not published(base, "b", entry).exists()


def test_deleting_an_identity_removes_the_published_copy_on_that_worker(cluster, tiny_checkpoint):
    base, entry, canonical = cluster
    with webui_worker(base, "b", tiny_checkpoint) as (_modules, _host, studio):
        finish(studio, studio.generate(SLUG, count=1, seed=1, **SMALL)["id"])
        assert published(base, "b", entry).is_file()
        studio.delete_identity(SLUG)
    assert not published(base, "b", entry).exists() and not canonical.exists()
    assert published(base, "a", entry).is_file()  # another worker's copy stays (docs/cluster.md says so)


def test_a_lora_trained_into_a_webuis_own_folder_before_the_cluster_mode_is_still_found(cluster, tiny_checkpoint):
    base, entry, canonical = cluster
    local = base / "b" / "models" / "Lora" / "profile-studio" / SLUG / entry["file"]
    local.parent.mkdir(parents=True)
    canonical.rename(local)  # as an embedded WebUI trained it
    with webui_worker(base, "b", tiny_checkpoint) as (_modules, _host, studio):
        assert studio._lora(SLUG, None)["path"] == str(local)
        finish(studio, studio.generate(SLUG, count=1, seed=1, **SMALL)["id"])
        assert not published(base, "b", entry).exists()  # in the Lora folder already: used where it is
        studio.delete_identity(SLUG)
    assert not local.parent.exists()


def test_serve_in_the_cluster_finds_the_lora_in_the_shared_folder(cluster, host, monkeypatch):
    from lib_profile.service import Studio

    base, entry, canonical = cluster
    applied = []
    txt2img = host.txt2img
    monkeypatch.setattr(host, "txt2img", lambda req, *a, **k: applied.extend(x.path for x in req.loras)
                        or txt2img(req, *a, **k))
    studio = Studio(host, base / "shared", outputs_root=base / "serve-outputs")  # as `serve --data-dir`
    try:
        assert studio._lora(SLUG, None)["path"] == str(canonical)
        finish(studio, studio.generate(SLUG, count=1, seed=1, **SMALL)["id"])
    finally:
        studio.close()
    assert applied and set(applied) == {str(canonical)}  # the shared file itself, nothing copied
    assert sha256(canonical) == entry["sha256"]


def test_a_webui_on_its_own_keeps_training_into_its_lora_folder(tmp_path):
    from lib_profile.webui.register import lora_roots

    lora = tmp_path / "Lora"
    assert lora_roots(lora, False) == {"lora_root": lora / "profile-studio"}
    assert lora_roots(lora, True) == {"lora_root": None, "local_lora_root": lora / "profile-studio"}


# ------------------------------------------------------------------ names that could leave the Lora folder

@pytest.fixture
def webui_host(tmp_path):
    from lib_profile.hosts.webui.flavours import detect_flavour
    from lib_profile.hosts.webui.host import WebUIHost

    lora = tmp_path / "webui" / "models" / "Lora"
    lora.mkdir(parents=True)
    with standin.installed(tmp_path / "webui", lora_dir=str(lora)):
        yield WebUIHost(detect_flavour()), lora


def _src(tmp_path: Path, name: str) -> Path:
    src = tmp_path / "shared" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"lora" * 100)
    return src


# (file name of the LoRA, how the Lora folder is made up beforehand, what is expected)
UNSAFE = [
    ("%2e%2e%2fevil.safetensors", None, "inside"),  # encoded: a plain name, stays a name
    ("..%2F..%2Fevil.safetensors", None, "inside"),
    ("..\u2215evil.safetensors", None, "inside"),  # a division slash is no separator
    ("\uff0e\uff0e", None, "refused"),  # fullwidth '..', which NFKC folds to '..'
    ("..\uff0fevil.safetensors", None, "refused"),  # a fullwidth '/', folded to '/'
    ("evil.safetensors", "folder is a link out", "refused"),
    ("evil.safetensors", "copy is a link out", "refused"),
]


@pytest.mark.parametrize("name, layout, expected", UNSAFE, ids=[f"{n}-{lay}" for n, lay, _e in UNSAFE])
def test_a_published_lora_never_leaves_the_lora_folder(webui_host, tmp_path, name, layout, expected):
    host, lora = webui_host
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "evil.safetensors"
    if layout == "folder is a link out":
        (lora / "profile-studio").symlink_to(outside, target_is_directory=True)
    elif layout == "copy is a link out":
        victim.write_bytes(b"keep")
        (lora / "profile-studio").mkdir()
        (lora / "profile-studio" / name).symlink_to(victim)
    src = _src(tmp_path, name)
    if expected == "refused":
        with pytest.raises(UnsafeName):
            host.publish_lora(LoraRef(str(src)))
    else:
        got = Path(host.publish_lora(LoraRef(str(src))).path)
        assert got.parent == lora / "profile-studio" and got.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in outside.iterdir()) == (["evil.safetensors"] if layout == "copy is a link out" else [])
    assert not victim.exists() or victim.read_bytes() == b"keep"


@pytest.mark.parametrize("lora, error", [("../anna", UnsafeName), ("..", UnsafeName), ("a/b", UnsafeName),
                                         ("%2e%2e%2fanna", NotFound), ("\uff0e\uff0e", UnsafeName)])
def test_a_lora_name_in_a_request_never_leaves_the_folder(cluster, tiny_checkpoint, lora, error):
    base, _entry, _canonical = cluster
    with webui_worker(base, "b", tiny_checkpoint) as (_modules, _host, studio):
        with pytest.raises(error):
            studio.generate(SLUG, count=1, seed=1, lora=lora, **SMALL)
    assert not (base / "b" / "models" / "Lora").exists()


@pytest.mark.parametrize("file", ["../../../evil.safetensors", "..", "/etc/passwd"])
def test_a_record_naming_a_file_outside_is_refused(cluster, tiny_checkpoint, file):
    base, _entry, _canonical = cluster
    record_path = base / "shared" / "identities" / SLUG / "identity.json"
    record = json.loads(record_path.read_text())
    record["loras"][-1]["file"] = file
    record_path.write_text(json.dumps(record))
    with webui_worker(base, "b", tiny_checkpoint) as (_modules, _host, studio):
        with pytest.raises(UnsafeName):
            studio.generate(SLUG, count=1, seed=1, **SMALL)
