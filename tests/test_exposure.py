"""Our routes on a server other machines can reach: closed (401, saying what to do) without credentials,
unless the user opens them explicitly; loopback stays open. Through the WebUI entry (preload.py's flags, the
stand-in WebUI's ``cmd_opts``, ``app_started``) and through ``serve``."""

import argparse
import importlib.util
from pathlib import Path

import fastapi
import pytest
from fastapi.testclient import TestClient

from lib_profile import API_PREFIX
from lib_profile.api.exposure import is_loopback, webui_exposure

try:
    from standins import webui as standin
except ImportError:  # tests/ imported as a package
    from tests.standins import webui as standin

ROOT = Path(__file__).resolve().parent.parent


def webui_parser() -> argparse.ArgumentParser:
    """The WebUI's flags that matter here (A1111 1.10 / Forge ``modules/cmd_args.py``), then preload.py's."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", action="store_true")
    parser.add_argument("--share", action="store_true")
    parser.add_argument("--ngrok", type=str, default=None)
    parser.add_argument("--server-name", type=str, default=None)
    parser.add_argument("--api-auth", type=str, default=None)
    parser.add_argument("--gradio-auth", type=str, default=None)
    parser.add_argument("--data-dir", type=str, default=None)
    spec = importlib.util.spec_from_file_location("profile_studio_preload", ROOT / "preload.py")
    preload = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preload)
    preload.preload(parser)
    return parser


PLACES = {
    "loopback": [],
    "listen": ["--listen"],
    "share": ["--share"],
    "ngrok": ["--ngrok", "token"],
    "server-name 0.0.0.0": ["--server-name", "0.0.0.0"],
    "server-name 192.168.1.5": ["--server-name", "192.168.1.5"],
    "server-name ::": ["--server-name", "::"],
    "server-name myhost.lan": ["--server-name", "myhost.lan"],
    "server-name 127.0.0.1": ["--server-name", "127.0.0.1"],
    "server-name localhost": ["--server-name", "localhost"],
    "server-name ::1": ["--server-name", "::1"],
    "listen, server-name 127.0.0.1": ["--listen", "--server-name", "127.0.0.1"],  # the WebUI binds server-name
}
EXPOSED = {"listen", "share", "ngrok", "server-name 0.0.0.0", "server-name 192.168.1.5", "server-name ::",
           "server-name myhost.lan"}
MODES = {
    "no auth": [],
    "gradio-auth only": ["--gradio-auth", "ann:pw"],
    "api-auth": ["--api-auth", "ann:pw"],
    "allow-open flag": ["--profile-studio-allow-open-api"],
}
OPEN = (200, 404)  # GET /identities, DELETE /identities/nobody


def expected(place: str, mode: str) -> tuple[int, int]:
    if mode == "api-auth":
        return 401, 401
    if place in EXPOSED and mode in ("no auth", "gradio-auth only"):
        return 401, 401
    return OPEN


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("place", list(PLACES))
def test_webui_routes_by_exposure_and_auth(tmp_path, monkeypatch, place, mode):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    argv = PLACES[place] + MODES[mode] + ["--data-dir", str(tmp_path / "webui")]
    opts = vars(webui_parser().parse_args(argv))
    with standin.installed(opts.pop("data_dir"), **opts):
        from lib_profile.serve import lazy
        from lib_profile.webui import register

        monkeypatch.setattr(register, "get_studio", lazy(register._make_studio))  # this WebUI's, made here
        app = fastapi.FastAPI()
        register.app_started(None, app)
        client = TestClient(app)
        got = (client.get(API_PREFIX + "/identities"), client.delete(API_PREFIX + "/identities/nobody"))
        assert tuple(r.status_code for r in got) == expected(place, mode), [r.text for r in got]
        if got[0].status_code == 401 and mode != "api-auth":
            for r in got:
                detail = r.json()["detail"]
                assert "--api-auth user:password" in detail and "--profile-studio-allow-open-api" in detail
                assert PLACES[place][0] in detail
        if mode == "api-auth":  # the credentials open it, wherever it listens
            auth = ("ann", "pw")
            assert client.get(API_PREFIX + "/identities", auth=auth).status_code == 200
            assert client.delete(API_PREFIX + "/identities/nobody", auth=auth).status_code == 404
            assert client.get(API_PREFIX + "/identities", auth=("ann", "wrong")).status_code == 401


@pytest.mark.parametrize("env, exposed", [("0.0.0.0", True), ("127.0.0.1", False), ("", False)])
def test_webui_exposure_reads_gradio_server_name(env, exposed):
    opts = argparse.Namespace(listen=False, share=False, server_name=None)
    assert (webui_exposure(opts, {"GRADIO_SERVER_NAME": env}) is not None) == exposed


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.1.2.3", True), ("localhost", True), ("LOCALHOST.", True), ("::1", True),
    ("[::1]", True), ("::ffff:127.0.0.1", True), ("app.localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), (None, False), ("192.168.1.5", False), ("10.0.0.1", False),
    ("myhost", False), ("localhost.example.com", False), ("::ffff:192.168.1.5", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("listen, extra, starts", [
    ("127.0.0.1", [], True), ("localhost", [], True), ("::1", [], True),
    ("0.0.0.0", [], False), ("192.168.1.5", [], False), ("myhost", [], False), ("::", [], False),
    ("0.0.0.0", ["--api-auth", "ann:pw"], True), ("0.0.0.0", ["--allow-open-api"], True),
    ("0.0.0.0", ["--api-auth", "nocolon"], False),  # no user:password pair: no credentials
])
def test_serve_refuses_to_start_exposed_without_credentials(monkeypatch, capsys, listen, extra, starts):
    import lib_profile.serve as serve_module
    from lib_profile import cli

    started = []
    monkeypatch.setattr(serve_module, "lazy", lambda factory: started.append("studio") or (lambda: None))
    monkeypatch.setattr("uvicorn.run", lambda app, host, **kw: started.append(host))
    rc = cli.main(["serve", "--checkpoint", "tiny", "--listen", listen, *extra])
    assert (rc == 0) == starts
    assert started == (["studio", listen] if starts else [])  # refused before loading the model
    if not starts:
        err = capsys.readouterr().err
        assert "--api-auth user:password" in err and "--allow-open-api" in err and listen in err
