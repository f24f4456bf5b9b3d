"""Which model family the WebUI has loaded (or selected), and what the WebUI host does on each.

The WebUI host generates, trains, explains and edits (attention control), and inverts photos, on SD1.5 and SDXL
checkpoints (the WebUI conditions SDXL itself: two text encoders, size conditioning; attention control reads and
changes the UNet's attention modules, whose SGM names and shapes SD1.5 and SDXL share; photo inversion borrows the
WebUI's conditioning: ``denoiser.py``); every other family (SD2, SD3, Flux) is refused with a message naming it.

Forge loads its model lazily: until the first generation (and after a checkpoint is picked in its menu, until the
next one) ``shared.sd_model`` is a stand-in without the ``is_sdxl``/``is_sd2`` flags, so the selected checkpoint's
``.safetensors`` header (its tensor names: :func:`lib_profile.safetensors_header.checkpoint_file_family`; no tensor
is loaded)
tells what the next generation will run on (:func:`current_family`).
"""

from __future__ import annotations

from typing import Any, Optional

from lib_profile.families import FAMILIES, SD15, SDXL, _a
from lib_profile.hosts.base import HostError
from lib_profile.safetensors_header import checkpoint_file_family

#: the families the WebUI host generates, trains, explains, edits and inverts photos on
RUNS_ON = (SD15.name, SDXL.name)
PICK = "in the WebUI's checkpoint menu (top of the page)"


def model_family(sd_model) -> Optional[str]:
    """The family of the WebUI's loaded model when it is not SD1.x (``"SDXL"``, ``"SD2"``, ``"SD3"``, ...), from
    the flags both WebUIs set (``is_sdxl``, ``is_sd2``, ...) and Forge's engine class names; None for SD1.x or for
    no model loaded yet (Forge's ``FakeInitialModel`` before its first generation)."""
    if sd_model is None:
        return None
    for family in FAMILIES:
        if any(getattr(sd_model, flag, False) is True for flag in family.webui_flags):
            return family.name
    name = type(sd_model).__name__
    return next((family.name for family in FAMILIES if any(part in name for part in family.webui_classes)), None)


def _selected_file(sd_models: Any, sd_model: Any) -> Optional[str]:
    """The selected checkpoint's file when it is not the loaded model's, else None."""
    try:
        info = sd_models.select_checkpoint()
    except Exception:  # noqa: BLE001 - no checkpoint at all: the WebUI's load says so
        return None
    path = getattr(info, "filename", None)
    loaded = getattr(getattr(sd_model, "sd_checkpoint_info", None), "filename", None)
    return None if not path or path == loaded else str(path)


def loaded_model(shared: Any, sd_models: Any) -> Any:
    """The WebUI's loaded model without loading one: ``sd_models.model_data.sd_model`` (A1111's ``shared.sd_model``
    loads the selected checkpoint when none is loaded), else ``shared.sd_model``."""
    data = getattr(sd_models, "model_data", None)
    if data is not None:
        return getattr(data, "sd_model", None)
    return getattr(shared, "sd_model", None)


def current_family(shared: Any, sd_models: Any) -> tuple[str, str]:
    """``(family name, "loaded" or "selected")`` of what the WebUI's next generation runs on, loading nothing: the
    selected checkpoint's file when it is not the loaded model's and its header tells (Forge loads it at its next
    generation), else the loaded model's flags; ``"SD1.5"`` when nothing says otherwise (an SD1.x model, or a
    ``.ckpt`` not loaded yet)."""
    sd_model = loaded_model(shared, sd_models)
    path = _selected_file(sd_models, sd_model)
    said = checkpoint_file_family(path) if path else None
    if said is not None:
        return said, "selected"
    found = model_family(sd_model)
    return found or SD15.name, "loaded" if sd_model is not None else "selected"


def refusal(what: str, family: str, state: str = "loaded") -> str:
    """The message for ``what`` asked while the WebUI has a ``family`` checkpoint ``state`` (loaded/selected) that
    the WebUI host cannot do it on (a family not in :data:`RUNS_ON`)."""
    return (f"{what} needs an SD1.5 or SDXL checkpoint, and the WebUI has {_a(family)} checkpoint {state}; pick "
            f"an SD1.5 or SDXL checkpoint {PICK} and try again")


class FamilyFlags:
    """The WebUI host's model family and the Host protocol's flags that follow it (a mixin before ``Host``): what the
    WebUI's next generation runs on decides, read when asked (the user may pick another checkpoint at any time)."""

    def family_state(self) -> tuple[str, str]:
        """``(family, "loaded" or "selected")`` of the checkpoint the WebUI's next generation runs on, loading
        nothing (:func:`.model_family.current_family`)."""
        import importlib

        return current_family(importlib.import_module("modules.shared"), importlib.import_module("modules.sd_models"))

    @property
    def model_family(self) -> str:
        """The family of the WebUI's checkpoint (``"SD1.5"``, ``"SDXL"``, ...): the studio's sizes and the trainer's
        model follow it."""
        return self.family_state()[0]

    @property
    def attention_control(self) -> bool:
        """Explain and Prompt-to-Prompt: on SD1.5 and SDXL (A1111: attention.py, Forge: forge_attention.py)."""
        return self.model_family in RUNS_ON

    @property
    def photo_inversion(self) -> bool:
        """Photo inversion (denoiser.py through a1111_denoiser.py / forge_denoiser.py): on SD1.5 and SDXL."""
        return self.model_family in RUNS_ON

    def unsupported(self, what: str) -> HostError:
        """What the WebUI's checkpoint family lacks is refused naming the family and what to do."""
        family, state = self.family_state()
        if family not in RUNS_ON:
            return HostError(refusal(what, family, state))
        return super().unsupported(what)

    def check_attention_control(self, what: str) -> None:
        """HostError naming the family unless the WebUI's checkpoint is SD1.5 or SDXL."""
        self.check_model_family(what)

    def check_model_family(self, what: str, runs_on: tuple[str, ...] = RUNS_ON) -> None:
        """HostError unless the WebUI's checkpoint (the loaded one, or - Forge, before it loads - the selected
        checkpoint's file: :func:`.model_family.current_family`) is of a family in ``runs_on`` (generating and
        training: SD1.5 and SDXL); the message names the family and what to do (:func:`.model_family.refusal`)."""
        family, state = self.family_state()
        if family not in runs_on:
            raise HostError(refusal(what, family, state))

