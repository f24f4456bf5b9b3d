"""Builds the Profile Studio tab; works on gradio 3.41 (A1111) and 4.40 (Forge)."""

from __future__ import annotations

from lib_profile import EXTENSION_NAME, __version__


def build_tab():
    """Return the tab's ``gr.Blocks``."""
    import gradio as gr

    with gr.Blocks(analytics_enabled=False) as blocks:
        gr.Markdown(f"## {EXTENSION_NAME}")
        gr.Markdown(f"The studio steps arrive in coming versions. Version {__version__}.")
    return blocks
