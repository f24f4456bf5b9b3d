"""Model downloads: resumable, checksummed, and a clear 'put file X in folder Y' when offline."""

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib_profile import model_files
from lib_profile.downloads import download
from lib_profile.hosts.base import HostError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves PAYLOAD at /model.bin, honouring 'Range: bytes=N-'; /cut.bin stops half way."""

    ranges_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        start = 0
        if (rng := self.headers.get("Range")):
            start = int(rng.split("=")[1].rstrip("-"))
            RangeHandler.ranges_seen.append(start)
        body = PAYLOAD[start:]
        if self.path == "/cut.bin":
            body = body[: len(body) // 2]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_checks_the_sum(server, tmp_path):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = download(f"{server}/model.bin", tmp_path / "m.bin", sha256=good)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "m.bin.partial").exists()


def test_a_damaged_download_is_refused_and_removed(server, tmp_path):
    with pytest.raises(HostError, match="arrived damaged"):
        download(f"{server}/model.bin", tmp_path / "m.bin", sha256="0" * 64)
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m.bin.partial").exists()


def test_an_interrupted_download_resumes(server, tmp_path):
    RangeHandler.ranges_seen = []
    with pytest.raises(HostError, match="run it again to resume"):
        download(f"{server}/cut.bin", tmp_path / "m.bin", timeout=2, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    part = tmp_path / "m.bin.partial"
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD)
    download(f"{server}/model.bin", tmp_path / "m.bin", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert (tmp_path / "m.bin").read_bytes() == PAYLOAD
    assert RangeHandler.ranges_seen[-1] == have


def test_offline_names_the_file_and_its_folder(tmp_path):
    with pytest.raises(HostError) as info:
        model_files.fetch("yolo_face", tmp_path)
    text = str(info.value)
    assert "face_yolov8n.pt" in text and str(tmp_path / "models" / "adetailer") in text
    assert "no connection" in text
