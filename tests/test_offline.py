"""Tests run offline: anything but loopback is refused, loudly."""

import socket
import threading
import urllib.request

import pytest

from tests.conftest import NetworkBlocked


def test_outside_connections_are_refused():
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("203.0.113.7", 80), timeout=1)
    with pytest.raises(OSError):
        urllib.request.urlopen("https://huggingface.co", timeout=1)


def test_loopback_still_works():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    t = threading.Thread(target=lambda: server.accept()[0].close())
    t.start()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    t.join(2)
    server.close()


def test_hub_libraries_are_told_to_stay_offline():
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["YOLO_OFFLINE"] == "1"
