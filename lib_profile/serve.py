"""Standalone serving: the same routes and tab as in the WebUI, on the diffusers host, without a WebUI."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import __version__


def make_app(studio: Callable[[], Any], auth: Optional[str] = None, ui: bool = True):
    """A FastAPI app with the API routes and (``ui``) the tab mounted at ``/``."""
    from fastapi import FastAPI

    from lib_profile.api.routes import make_router, parse_auth

    app = FastAPI(title="Profile Studio", version=__version__)
    app.include_router(make_router(studio, auth))
    if ui:
        import gradio as gr

        from lib_profile.ui.tab import build_tab

        blocks = build_tab(studio)
        blocks.queue()
        if parse_auth(auth):
            blocks.auth = parse_auth(auth)
            blocks.auth_message = None
        app = gr.mount_gradio_app(app, blocks, path="/")
    return app


def lazy(factory: Callable[[], Any]) -> Callable[[], Any]:
    """``factory()`` called once, on first use, from any thread."""
    lock = threading.Lock()
    box: list = []

    def get():
        if not box:
            with lock:
                if not box:
                    box.append(factory())
        return box[0]

    get.peek = lambda: box[0] if box else None  # the object if made, without making it
    return get


def studio_factory(checkpoint: str, data_dir: Optional[str] = None, device: Optional[str] = None,
                   controlnet_pose: Optional[str] = None, controlnet_tile: Optional[str] = None,
                   lora_dirs: Optional[list[str]] = None, queue: Optional[str] = None, worker: bool = True,
                   worker_timeout_s: float = 30.0):
    def make():
        from lib_profile.hosts.diffusers.host import DiffusersHost, tiny_controlnet
        from lib_profile.service import Studio

        cn = {"pose": controlnet_pose, "tile": controlnet_tile}
        cn = {k: str(tiny_controlnet(data_dir, checkpoint)) if v == "tiny" else v for k, v in cn.items()}
        for kind, path in cn.items():
            if path and not Path(path).is_file():
                from lib_profile.hosts.base import HostError

                raise HostError(f"ControlNet {kind} model not found: {path}")
        # a cluster front that runs no job loads the checkpoint only when a request needs it (a photo's intake, a
        # prompt's check), not at start
        host = DiffusersHost(checkpoint, device=device, data_dir=data_dir, controlnets=cn, lora_dirs=lora_dirs,
                             lazy=bool(queue) and not worker)
        return Studio(host, data_dir, queue=queue, worker=worker, worker_timeout_s=worker_timeout_s)

    return make


def check_exposure(listen: str, auth: Optional[str], allow_open: bool = False) -> None:
    """Refuse (:class:`~lib_profile.hosts.base.HostError`) to serve on an address other machines reach
    (``0.0.0.0``, a LAN address, a host name) without ``auth`` credentials, unless ``allow_open``."""
    from lib_profile.api.exposure import SERVE_ALLOW_FLAG, is_loopback, refusal
    from lib_profile.api.routes import parse_auth
    from lib_profile.hosts.base import HostError

    message = refusal(None if is_loopback(listen) else f"--listen {listen}", bool(parse_auth(auth)), allow_open,
                      allow_flag=SERVE_ALLOW_FLAG)
    if message:
        raise HostError(message.replace("API is closed", "server did not start"))


def serve(checkpoint: str, port: int = 7870, listen: str = "127.0.0.1", data_dir: Optional[str] = None,
          auth: Optional[str] = None, device: Optional[str] = None, controlnet_pose: Optional[str] = None,
          controlnet_tile: Optional[str] = None, allow_open: bool = False,
          lora_dirs: Optional[list[str]] = None, queue: Optional[str] = None, worker: bool = True,
          worker_timeout_s: float = 30.0) -> None:
    """Serve the API and the tab on ``listen:port`` until stopped. Refuses to start (HostError) when ``listen``
    is reachable from other machines and neither ``auth`` nor ``allow_open`` is given. ``lora_dirs``: where
    ``<lora:NAME:W>`` tags in prompts are looked up, before the data folder's ``loras/``. ``queue``: a
    ``postgresql://`` URL for the cluster mode (docs/cluster.md), checked before the model loads (HostError
    naming the database and the reason); ``worker=False``: a front only; ``worker_timeout_s``: seconds without
    a heartbeat before a worker's running job is taken up by another (a worker cut off from the database stops
    it itself after 2/3 of that: lib_profile/jobs/fencing.py)."""
    import uvicorn

    check_exposure(listen, auth, allow_open)
    if queue:
        from lib_profile.jobs.pg_records import open_pool

        open_pool(queue).close()  # a wrong URL or an unreachable server is said now, not after the model loads
    studio = lazy(studio_factory(checkpoint, data_dir, device, controlnet_pose, controlnet_tile, lora_dirs,
                                 queue, worker, worker_timeout_s))
    studio()  # load the model (a front only: not yet) before answering, so the first request is not slow and
    # errors show now
    uvicorn.run(make_app(studio, auth), host=listen, port=port, log_level="info")
