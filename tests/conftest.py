"""Shared fixtures: offline guard, a private data folder, the tiny model, real photos."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

# Offline before anything imports huggingface_hub / ultralytics.
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", YOLO_OFFLINE="1",
                  DIFFUSERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="profile-studio-tests-"))
os.environ["PROFILE_STUDIO_DIR"] = str(_SESSION_DIR / "data")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_SESSION_DIR / "yolo"))
os.environ.setdefault("MPLCONFIGDIR", str(_SESSION_DIR / "mpl"))

import pytest  # noqa: E402
from tests.pg_server import pg_restartable, pg_server, pg_url  # noqa: E402,F401 - the cluster tests' throwaway PostgreSQL


class NetworkBlocked(OSError):
    """A test tried to reach something other than this machine."""


_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "testserver"}


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in _LOOPBACK_NAMES or host.startswith("127.") or host == "::ffff:127.0.0.1"


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}; tests run offline (loopback only)")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to connect to {address!r}; tests run offline (loopback only)")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not _is_loopback((host,)):
        raise NetworkBlocked(f"test tried to resolve {host!r}; tests run offline (loopback only)")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["PROFILE_STUDIO_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_dir(data_dir):
    from lib_profile.hosts.diffusers import tiny

    return tiny.ensure_tiny(data_dir / "cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dir):
    from lib_profile.hosts.diffusers import tiny

    return tiny_dir / tiny.CHECKPOINT


@pytest.fixture(scope="session")
def tiny_controlnet(tiny_dir):
    from lib_profile.hosts.diffusers import tiny

    return tiny_dir / tiny.CONTROLNET


@pytest.fixture(scope="session")
def host(tiny_checkpoint):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return DiffusersHost(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def sharp(tiny_checkpoint):
    """A tiny model whose attention is peaked like a trained model's (random weights give near-uniform attention,
    which no attention edit can move): its attention query/key weights are scaled up. Per module: it is changed."""
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return peak_attention(DiffusersHost(tiny_checkpoint, device="cpu"))


def peak_attention(host, factor: float = 6.0):
    """``host`` with its UNet's attention query/key weights scaled by ``factor`` in place (peaked attention, as a
    trained model's), returned."""
    import torch

    with torch.no_grad():
        for name, module in host.model.unet.named_modules():
            if name.endswith(("attn1", "attn2")):
                module.to_q.weight.mul_(factor)
                module.to_k.weight.mul_(factor)
    return host


@pytest.fixture(scope="session")
def astronaut():
    from lib_profile import sample_photos

    return sample_photos.astronaut()


@pytest.fixture(scope="session")
def portrait(astronaut):
    """A 2:3 portrait photo (the astronaut, cut): the photo the inversion tests invert."""
    return astronaut.crop((96, 0, 416, 480))


@pytest.fixture(scope="session")
def grace_hopper():
    from lib_profile import sample_photos

    return sample_photos.grace_hopper()


@pytest.fixture(scope="session")
def astronaut_selfies():
    from lib_profile import sample_photos

    return sample_photos.selfies(sample_photos.astronaut, 10)


@pytest.fixture(scope="session")
def full_size_checkpoint(tmp_path_factory):
    """A random-weight checkpoint with SD1.5's real shapes (fp16 file, ~2 GB). Slow tests only."""
    from lib_profile.hosts.diffusers import tiny

    folder = tmp_path_factory.mktemp("full-size")
    tiny.build_into(folder, tiny.full_size_configs(), diffusers_copy=False, half=True)
    return folder / tiny.CHECKPOINT


# the HTTP API over a real socket (tests/test_api.py, tests/test_one_call.py)
@pytest.fixture
def studio(host, tiny_controlnet, tmp_path):
    from lib_profile.service import Studio

    host.controlnet_files = {"pose": str(tiny_controlnet), "tile": str(tiny_controlnet)}
    s = Studio(host, tmp_path / "data", lora_root=tmp_path / "webui" / "models" / "Lora" / "profile-studio",
               outputs_root=tmp_path / "webui" / "outputs" / "profile-studio")
    yield s
    s.close()
    host.controlnet_files = {}


@pytest.fixture
def api(studio):
    import httpx

    from lib_profile import API_PREFIX
    from lib_profile.serve import make_app
    from tests.test_api import Server

    server = Server(make_app(lambda: studio, ui=False))
    with httpx.Client(base_url=server.url + API_PREFIX, timeout=120) as client:
        yield client
    server.stop()


@pytest.fixture(scope="module")
def intake_dir(tmp_path_factory):
    """A ready intake of six selfies of one person (tests/test_trainer.py, tests/test_trainer_process.py)."""
    from lib_profile import sample_photos
    from lib_profile.photos.intake import run_intake

    src = tmp_path_factory.mktemp("photos")
    for name, im in sample_photos.selfies(sample_photos.astronaut, 6):
        im.save(src / f"{name}.jpg")
    out = tmp_path_factory.mktemp("intake") / "anna"
    assert run_intake(src, out)["ready"]
    return out
