"""Callbacks that ``scripts/profile_studio.py`` registers with the WebUI.

Nothing here imports the WebUI (``modules``) or gradio at module top. The studio service (WebUI
host, job worker, stores) is made on first use and shared by the tab and the routes; with
``--profile-studio-queue`` (the cluster mode, docs/cluster.md) it is made when the app starts, in a thread, so this
WebUI works for the queue at once. A job database it cannot reach is said in the console, and our routes answer
503 with the same message (the WebUI itself runs on); each request tries again.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from lib_profile import API_PREFIX, EXTENSION_NAME
from lib_profile.serve import lazy

TAB_ID = "profile_studio"
VERSION_PATH = API_PREFIX + "/version"
SECTION = ("profile_studio", EXTENSION_NAME)


QUEUE_FLAG = "--profile-studio-queue"


def cluster_options(cmd_opts: Any) -> dict[str, Any]:
    """Studio's ``queue``, ``worker``, ``worker_timeout_s`` from the WebUI's flags (preload.py). Raises
    QueueUnreachable (the routes' 503) when they do not fit together."""
    from lib_profile.jobs.pg_records import QueueUnreachable

    queue = getattr(cmd_opts, "profile_studio_queue", None) or None
    no_worker = bool(getattr(cmd_opts, "profile_studio_no_worker", False))
    timeout = getattr(cmd_opts, "profile_studio_worker_timeout", 30.0)
    if no_worker and not queue:
        raise QueueUnreachable(f"--profile-studio-no-worker needs {QUEUE_FLAG} postgresql://...: without a shared "
                               "queue nothing would run the jobs; restart the WebUI with both, or with neither")
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and 1 <= timeout <= 86400):
        raise QueueUnreachable(f"--profile-studio-worker-timeout must be 1 to 86400 seconds (got {timeout})")
    return {"queue": queue, "worker": not no_worker, "worker_timeout_s": float(timeout)}


def lora_roots(lora_dir: Path, cluster: bool) -> dict[str, Any]:
    """Studio's ``lora_root`` and ``local_lora_root`` for a WebUI whose Lora folder is ``lora_dir``. On its own:
    LoRAs are trained straight into ``<Lora>/profile-studio/<slug>/`` (Extra Networks lists them). In the cluster
    mode: into the shared data folder's ``loras/<slug>/`` (None: Studio's default), which every worker reads; each
    worker publishes them into its ``<Lora>/profile-studio/`` when it generates, checked by SHA-256, and LoRAs it
    trained into its own folder before are still found there (docs/cluster.md)."""
    from lib_profile.hosts.webui.lora_publish import LORA_SUBFOLDER

    local = Path(lora_dir) / LORA_SUBFOLDER
    return {"lora_root": None, "local_lora_root": local} if cluster else {"lora_root": local}


def _make_studio():
    from modules import paths, shared

    from lib_profile.jobs.pg_records import QueueUnreachable
    from lib_profile.hosts.webui.flavours import detect_flavour
    from lib_profile.hosts.webui.host import WebUIHost
    from lib_profile.service import Studio

    host = WebUIHost(detect_flavour())
    opts = getattr(shared.opts, "data", {}) or {}
    outputs = opts.get("profile_studio_outputs") or str(Path(paths.data_path) / "outputs" / "profile-studio")
    def defaults() -> dict:
        data = getattr(shared.opts, "data", {}) or {}
        return {key: data.get(f"profile_studio_{key}")
                for key in ("train_steps", "min_photos", "detail_engine", "identity_in_lora")}

    cluster = cluster_options(shared.cmd_opts)
    try:
        return Studio(host, getattr(shared.cmd_opts, "profile_studio_dir", None), outputs_root=outputs,
                      defaults=defaults, **lora_roots(host.lora_dir(), bool(cluster["queue"])), **cluster)
    except QueueUnreachable as exc:  # name the WebUI's flag, not serve's
        raise QueueUnreachable(str(exc).replace("check --queue", f"check {QUEUE_FLAG}")) from exc


get_studio = lazy(_make_studio)


def _host_name() -> str:
    """The WebUI flavour ("a1111" or "forge"), known before the studio is made (no model is loaded for it)."""
    from lib_profile.hosts.webui.flavours import detect_flavour

    return detect_flavour().NAME


get_studio.host_name = _host_name  # /version answers with it before the first job


def ui_tabs():
    """``on_ui_tabs`` callback: the Profile Studio tab."""
    from lib_profile.ui.tab import build_tab

    return [(build_tab(get_studio), EXTENSION_NAME, TAB_ID)]


def ui_settings():
    """``on_ui_settings`` callback: defaults in Settings -> Profile Studio."""
    import gradio as gr
    from modules import shared

    add = shared.opts.add_option
    add("profile_studio_outputs", shared.OptionInfo(
        "", "Portrait folder (empty: outputs/profile-studio)", section=SECTION))
    add("profile_studio_train_steps", shared.OptionInfo(
        800, "Default training steps", gr.Slider, {"minimum": 50, "maximum": 3000, "step": 50}, section=SECTION))
    add("profile_studio_min_photos", shared.OptionInfo(
        5, "Accepted photos needed to train", gr.Slider, {"minimum": 3, "maximum": 20, "step": 1}, section=SECTION))
    add("profile_studio_detail_engine", shared.OptionInfo(
        "builtin", "Face detail pass", gr.Radio, {"choices": ["builtin", "adetailer"]}, section=SECTION))
    add("profile_studio_identity_in_lora", shared.OptionInfo(
        True, "Keep the person's face embedding in the LoRA file (for identity scores when the file travels alone)",
        gr.Checkbox, section=SECTION))


def _join_cluster() -> None:
    """Make the studio now (its queue worker starts with it), saying in the console how it went."""
    try:
        studio = get_studio()
    except Exception as exc:  # noqa: BLE001 - the WebUI runs on; our routes answer 503 with this message
        print(f"Profile Studio: {exc}. Its routes answer 503 until the job database can be reached.", flush=True)
        return
    role = "a worker and a front" if getattr(studio.jobs, "worker", True) else "a front (--profile-studio-no-worker)"
    print(f"Profile Studio: joined the job queue as {role}", flush=True)


def app_started(demo, app):
    """``on_app_started`` callback: add our API routes to ``app``.

    ``demo`` is None with ``--nowebui``. The WebUI calls this again with a new app after a UI
    reload; routes already on ``app`` are not added twice. ``--api-auth`` protects our routes too; a WebUI
    reachable from other machines without it answers 401 unless ``--profile-studio-allow-open-api``.
    """
    if any(getattr(route, "path", None) == VERSION_PATH for route in app.routes):
        return
    from modules import shared

    from lib_profile.api.exposure import refusal, webui_exposure
    from lib_profile.api.routes import make_router, parse_auth

    opts = shared.cmd_opts
    auth = getattr(opts, "api_auth", None)
    allow_open = bool(getattr(opts, "profile_studio_allow_open_api", False))
    refuse = refusal(webui_exposure(opts), bool(parse_auth(auth)), allow_open)
    if refuse:
        print(f"Profile Studio: {refuse}")
    app.include_router(make_router(get_studio, auth, refuse))
    if getattr(opts, "profile_studio_queue", None) or getattr(opts, "profile_studio_no_worker", False):
        threading.Thread(target=_join_cluster, daemon=True, name="profile-studio-join-cluster").start()
