"""The WebUI flavours: what differs between A1111 1.10.1 (:mod:`.a1111`) and Forge (:mod:`.forge`).

A flavour is a module with the functions of :class:`Flavour`; the WebUI host is given one
(``WebUIHost(detect_flavour())``) and never imports a flavour itself, and the flavours import only the shared
helpers (:mod:`.controlnet`, :mod:`.memory`), so nothing imports back.
"""

from __future__ import annotations

from typing import Any, ContextManager, Optional, Protocol

from lib_profile.hosts.base import ControlUnit, Txt2ImgRequest


class Flavour(Protocol):
    NAME: str  # "a1111" | "forge": the host's name

    def controlnet_unit(self, unit: ControlUnit, model_name: str) -> dict[str, Any]:
        """One ControlNet unit as this WebUI's ControlNet takes it in ``script_args``."""

    def processing_extras(self, kind: str, req: Txt2ImgRequest) -> dict[str, Any]:
        """Constructor kwargs this WebUI's processing objects need beyond the shared ones."""

    def controlnet_models(self) -> list[str]:
        """The ControlNet models' WebUI names (``"stem [hash8]"``)."""

    def free_vram(self) -> None:
        """Make room for the training subprocess."""

    def restore_vram(self) -> None:
        """Undo :meth:`free_vram` after training."""

    def attention(self, controller, latent_hw: tuple[int, int], images: int) -> ContextManager[list]:
        """The attention controller installed for one processing call; yields scripts to add to the runner."""

    def token_chunks(self, text: str) -> Optional[list[list[int]]]:
        """The prompt's 77-id CLIP chunks as this WebUI splits them, or None before a model is loaded."""

    def load_model(self) -> None:
        """Load (or wait for) the selected checkpoint, as a generation would first."""

    def lend_model(self, sd_model, prompts: list[str], clip_skip: int) -> ContextManager[Any]:
        """The loaded model as a ``hosts.denoiser.Denoiser`` with the prompts' LoRA tags active and ``clip_skip``
        applied (``opts`` is set by the caller); all undone on exit."""


def detect_flavour() -> Flavour:
    """Forge when ``modules_forge`` is importable, else A1111."""
    import importlib.util

    if importlib.util.find_spec("modules_forge") is not None:
        from lib_profile.hosts.webui import forge

        return forge
    from lib_profile.hosts.webui import a1111

    return a1111
