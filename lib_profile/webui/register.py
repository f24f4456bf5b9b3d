"""Callbacks that ``scripts/profile_studio.py`` registers with the WebUI.

Nothing here imports the WebUI (``modules``) or gradio at module top.
"""

from lib_profile import API_PREFIX, EXTENSION_NAME

TAB_ID = "profile_studio"
VERSION_PATH = API_PREFIX + "/version"


def ui_tabs():
    """``on_ui_tabs`` callback: the Profile Studio tab."""
    from lib_profile.ui.tab import build_tab

    return [(build_tab(), EXTENSION_NAME, TAB_ID)]


def app_started(demo, app):
    """``on_app_started`` callback: add our API routes to ``app``.

    ``demo`` is None with ``--nowebui``. The WebUI calls this again with a new app after a UI
    reload; routes already on ``app`` are not added twice.
    """
    if any(getattr(route, "path", None) == VERSION_PATH for route in app.routes):
        return
    from lib_profile.api.routes import make_router

    app.include_router(make_router())
