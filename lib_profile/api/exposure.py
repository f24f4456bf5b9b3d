"""Who can reach the server: loopback only, or other machines too, and what our routes do then.

A server reachable from other machines (the WebUI with ``--listen``, ``--share``, ``--ngrok``, a non-loopback
``--server-name``; ``serve --listen 0.0.0.0``) serves our routes only with credentials (``--api-auth``), or
when the user says so explicitly (``--profile-studio-allow-open-api``; ``serve --allow-open-api``). The
WebUI's ``--gradio-auth`` protects its pages, not API routes, so it does not count.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Optional

WEBUI_ALLOW_FLAG = "--profile-studio-allow-open-api"
SERVE_ALLOW_FLAG = "--allow-open-api"


def is_loopback(host: Optional[str]) -> bool:
    """True when ``host`` (an address or a name, IPv6 with or without brackets) names this machine only:
    ``127.0.0.0/8``, ``::1``, ``localhost``. A host name, ``0.0.0.0``, ``::`` and ``""`` (every interface)
    are reachable from other machines: False."""
    name = (host or "").strip().strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def webui_exposure(cmd_opts: Any, environ: Optional[dict] = None) -> Optional[str]:
    """How the WebUI can be reached from other machines, as the flag that does it (e.g. ``"--listen"``),
    or None when it listens on loopback only. Follows A1111/Forge: ``--server-name`` wins over
    ``--listen`` (which means 0.0.0.0); with neither, gradio reads ``GRADIO_SERVER_NAME``."""
    environ = os.environ if environ is None else environ
    if getattr(cmd_opts, "share", False):
        return "--share"
    if getattr(cmd_opts, "ngrok", None):
        return "--ngrok"
    server_name = getattr(cmd_opts, "server_name", None)
    if server_name:
        return None if is_loopback(server_name) else f"--server-name {server_name}"
    if getattr(cmd_opts, "listen", False):
        return "--listen"
    env = environ.get("GRADIO_SERVER_NAME")
    if env and not is_loopback(env):
        return f"GRADIO_SERVER_NAME={env}"
    return None


def refusal(exposure: Optional[str], has_auth: bool, allow_open: bool, allow_flag: str = WEBUI_ALLOW_FLAG,
            auth_flag: str = "--api-auth") -> Optional[str]:
    """The message our routes answer with (401) when the server is exposed without credentials, else None."""
    if exposure is None or has_auth or allow_open:
        return None
    return (f"Profile Studio's API is closed: this server can be reached from other machines ({exposure}) "
            f"and no credentials are set. Restart it with {auth_flag} user:password and send them as HTTP "
            f"Basic auth, or with {allow_flag} to let anyone who can reach it use the API "
            "(--gradio-auth protects the pages only, not the API).")
