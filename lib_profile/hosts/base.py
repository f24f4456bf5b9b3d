"""The host protocol: the small interface the studio needs from a diffusion engine.

Requests are plain dataclasses (no WebUI or diffusers types) that any host runs and studio plans store as JSON; a
:class:`Result` carries the images and the parameters used (the infotext's). Photo inversion: ``hosts/denoiser.py``.
"""

from __future__ import annotations

import contextlib
import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image


class HostError(Exception):
    """A problem the user can fix (bad parameter, missing file); the message says how."""


class Interrupted(Exception):
    """The run was stopped by its interrupt check; raised between two sampling steps."""

    def __init__(self, step: int = 0, total: int = 0):
        super().__init__(f"interrupted after step {step} of {total}")
        self.step, self.total = step, total


@dataclass
class LoraRef:
    """A LoRA file applied at a weight (text encoder and UNet alike, as ``<lora:name:weight>``)."""

    path: str
    weight: float = 1.0

    @property
    def name(self) -> str:
        return Path(self.path).stem


@dataclass
class ControlUnit:
    """One ControlNet unit: ``image`` the control map (a pose drawing; the image for tile), ``model`` a path or name."""

    kind: str  # "pose" | "tile"
    image: Image.Image
    model: str
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    def __post_init__(self):
        if self.kind not in ("pose", "tile"):
            raise HostError(f"ControlNet unit kind must be 'pose' or 'tile', not {self.kind!r}")
        if not 0.0 <= self.guidance_start < self.guidance_end <= 1.0:
            raise HostError("ControlNet guidance_start must be below guidance_end, both within 0..1")
        if not 0.0 <= self.weight <= 2.0:
            raise HostError(f"ControlNet weight must be within 0..2, not {self.weight}")


@dataclass
class RunControl:
    """How a running generation reports and stops: ``on_step(step, total)`` after each sampling step,
    ``should_interrupt()`` checked after each step (``True`` raises :class:`Interrupted`)."""

    on_step: Optional[Callable[[int, int], None]] = None
    should_interrupt: Optional[Callable[[], bool]] = None
    attention: Optional[Any] = None  # an attention.control.Controller installed for this call only


@dataclass
class Txt2ImgRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    cfg_scale: float = 7.0
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    seed: int = -1
    batch_size: int = 1
    clip_skip: int = 1
    loras: list[LoraRef] = field(default_factory=list)
    controlnets: list[ControlUnit] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)  # one prompt per image (Prompt-to-Prompt); else `prompt`
    seeds: list[int] = field(default_factory=list)  # one seed per image (e.g. all equal); else from `seed`
    # hires fix (txt2img only; the WebUI's): a second pass at hires_scale x the size, from the first pass's image
    # upscaled by hires_upscaler ("Latent" upscales the latents), denoised by hires_denoising over hires_steps steps
    hires_scale: float = 1.0  # 1 = off
    hires_steps: int = 0  # 0 = as many as steps
    hires_denoising: float = 0.5
    hires_upscaler: str = "Latent"

    @property
    def hires(self) -> bool:
        return self.hires_scale > 1.0

    def hires_size(self) -> tuple[int, int]:
        """(width, height) of the hires pass, as the WebUI computes it."""
        return int(self.width * self.hires_scale), int(self.height * self.hires_scale)

    def validate(self) -> None:
        if not isinstance(self.prompt, str):
            raise HostError("prompt must be text")
        for name in ("prompts", "seeds"):
            if getattr(self, name) and len(getattr(self, name)) != self.batch_size:
                raise HostError(f"{name} needs one entry per image ({self.batch_size}), not {len(getattr(self, name))}")
        if any(not 0 <= s < 2**32 for s in self.seeds):
            raise HostError("seeds must be within 0..4294967295")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not (64 <= value <= 4096) or value % 8:
                raise HostError(f"{name} must be a multiple of 8 between 64 and 4096, not {value}")
        if not 1 <= self.steps <= 500:
            raise HostError(f"steps must be within 1..500, not {self.steps}")
        if not 0.0 <= self.cfg_scale <= 50.0:
            raise HostError(f"cfg_scale must be within 0..50, not {self.cfg_scale}")
        if not 1 <= self.batch_size <= 64:
            raise HostError(f"batch_size must be within 1..64, not {self.batch_size}")
        if not 1 <= self.clip_skip <= 12:
            raise HostError(f"clip_skip must be within 1..12, not {self.clip_skip}")
        if not -1 <= self.seed < 2**32:
            raise HostError(f"seed must be -1 (random) or within 0..4294967295, not {self.seed}")
        if not 1.0 <= self.hires_scale <= 4.0:
            raise HostError(f"hires_scale must be within 1..4 (1 = no hires fix), not {self.hires_scale}")
        if self.hires:
            if max(self.hires_size()) > 4096:
                raise HostError(f"the hires pass would be {self.hires_size()[0]}x{self.hires_size()[1]}; keep it "
                                "within 4096 px (a smaller hires_scale)")
            if not 0 <= self.hires_steps <= 500:
                raise HostError(f"hires_steps must be within 0..500 (0 = as many as steps), not {self.hires_steps}")
            if not 0.0 < self.hires_denoising <= 1.0:
                raise HostError(f"hires_denoising must be within (0, 1], not {self.hires_denoising}")
        for lora in self.loras:
            if not Path(lora.path).is_file():
                raise HostError(f"LoRA file not found: {lora.path}")
            if not -4.0 <= lora.weight <= 4.0:
                raise HostError(f"LoRA weight must be within -4..4, not {lora.weight}")

    def resolved_seeds(self) -> list[int]:
        """One seed per image, consecutive from the first, like the WebUI (-1 picks one at random)."""
        if self.seeds:
            return list(self.seeds)
        first = self.seed if self.seed != -1 else random.randrange(2**32)
        return [(first + i) % 2**32 for i in range(self.batch_size)]

    def image_prompts(self) -> list[str]:
        return list(self.prompts) if self.prompts else [self.prompt] * self.batch_size

    def describe(self) -> dict[str, Any]:
        """The request as JSON-ready data (images left out), for infotext and plan files."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Image.Image):
                out[f.name] = f"<image {value.width}x{value.height}>"
            elif f.name == "loras":
                out[f.name] = [asdict(x) for x in value]
            elif f.name == "controlnets":
                out[f.name] = [{"kind": u.kind, "model": u.model, "weight": u.weight, "guidance_start":
                                u.guidance_start, "guidance_end": u.guidance_end} for u in value]
            else:
                out[f.name] = value
        return out


@dataclass
class Img2ImgRequest(Txt2ImgRequest):
    init_image: Optional[Image.Image] = None
    denoising_strength: float = 0.75

    def validate(self) -> None:
        super().validate()
        if self.init_image is None:
            raise HostError("img2img needs an init image")
        if self.hires:
            raise HostError("hires fix is a txt2img option; img2img makes one pass")
        if not 0.0 < self.denoising_strength <= 1.0:
            raise HostError(f"denoising_strength must be within (0, 1], not {self.denoising_strength}")


@dataclass
class InpaintRequest(Img2ImgRequest):
    """Inpaint the white part of ``mask``. With ``only_masked`` the masked region plus ``padding``
    is cut out, processed at width x height and pasted back through the ``mask_blur``-softened mask
    (the WebUI's "Only masked"); otherwise the whole image is processed."""

    mask: Optional[Image.Image] = None
    only_masked: bool = True
    padding: int = 32
    mask_blur: int = 4

    def validate(self) -> None:
        super().validate()
        if self.mask is None:
            raise HostError("inpaint needs a mask (white = repaint)")
        if self.mask.size != self.init_image.size:
            raise HostError(f"mask size {self.mask.size} differs from image size {self.init_image.size}")
        if not 0 <= self.padding <= 256 or not 0 <= self.mask_blur <= 64:
            raise HostError("padding must be within 0..256 and mask_blur within 0..64")


@dataclass
class FaceDetailRequest(Img2ImgRequest):
    """The face detail pass a host's own face detailer does (the WebUI's ADetailer extension), host-neutral: find
    up to ``max_faces`` faces in ``init_image`` with the ``detector`` model, grow each mask by ``dilate`` px and
    blur it by ``mask_blur`` px, and repaint each face (plus ``padding`` px) at ``size`` x ``size`` px for
    ``steps`` steps at ``denoising_strength``. ``loras`` apply to the faces' prompt (``<lora:NAME:W>``), not to a
    pass over the whole image (there is none)."""

    detector: str = "face_yolov8n.pt"
    dilate: int = 16
    mask_blur: int = 8
    max_faces: int = 1
    padding: int = 32
    size: int = 512


RAN, SKIPPED, FAILED = "ran", "skipped", "failed"


@dataclass
class StageReport:
    """What really happened to one part of a pass that a host or an extension did for us: a ControlNet unit,
    ADetailer, a LoRA, an upscaler, the face detail pass. ``status`` is ``ran``, ``skipped`` or ``failed``;
    ``why`` says why it was skipped or failed (the error the WebUI only printed to its console)."""

    part: str  # e.g. "ControlNet pose", "ADetailer", "LoRA alice_v1", "upscaler R-ESRGAN 4x+", "face detail"
    status: str
    why: str = ""

    def __post_init__(self):
        if self.status not in (RAN, SKIPPED, FAILED):
            raise ValueError(f"status must be {RAN}, {SKIPPED} or {FAILED}, not {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == RAN

    def line(self) -> str:
        return f"{self.part}: {self.status}" + (f" ({self.why})" if self.why else "")

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Result:
    images: list[Image.Image]
    seeds: list[int]
    params: dict[str, Any]
    infotexts: list[str] = field(default_factory=list)
    reports: list[StageReport] = field(default_factory=list)  # the delegated parts of this pass, as they ran


class Host(ABC):
    """What the studio needs from a diffusion engine. Implementations: diffusers, A1111, Forge."""

    name: str = "host"
    #: whether a prompt's conditioning is padded (with empty chunks) to the negative prompt's chunk count. The
    #: WebUIs encode each apart (and run cond and uncond apart when their lengths differ); the diffusers host pads
    #: both to the longer. Prompt-to-Prompt needs it to condition an edit's source as its portrait was.
    pads_prompt_to_negative: bool = False
    #: whether the host runs a :class:`RunControl`'s ``attention`` controller in its UNet's attention layers (Explain
    #: word maps, Prompt-to-Prompt edits); a host without it refuses them (:meth:`check_attention_control`).
    attention_control: bool = False
    #: whether the host lends its model for photo inversion (:meth:`denoiser`: restyle, a photo's edit and explain)
    photo_inversion: bool = False
    #: the family (:mod:`lib_profile.families` name) of the checkpoint in use: the studio's defaults follow it
    model_family: str = "SD1.5"  # the WebUI hosts refuse the others (``check_model_family``)

    @abstractmethod
    def txt2img(self, req: Txt2ImgRequest, control: Optional[RunControl] = None) -> Result: ...

    @abstractmethod
    def img2img(self, req: Img2ImgRequest, control: Optional[RunControl] = None) -> Result: ...

    @abstractmethod
    def inpaint(self, req: InpaintRequest, control: Optional[RunControl] = None) -> Result: ...

    @abstractmethod
    def upscale(self, image: Image.Image, scale: float, upscaler: str = "Lanczos",
                reports: Optional[list[StageReport]] = None) -> Image.Image:
        """``image`` upscaled ``scale`` times; what the upscaler really did is appended to ``reports``."""

    @abstractmethod
    def samplers(self) -> list[str]: ...

    @abstractmethod
    def upscalers(self) -> list[str]: ...

    # -- optional parts, with what a host without them does. Callers use these as declared (never hasattr): each
    # either has a harmless default or refuses with a HostError that says the host does not support it.
    def unsupported(self, what: str) -> HostError:  # the refusal for an optional capability this host lacks
        return HostError(f"{what} is not supported by the {self.name} host")

    def check_attention_control(self, what: str) -> None:
        """HostError (:meth:`unsupported`) unless this host can run an attention controller (``attention_control``);
        ``what`` names the feature asking (e.g. "Explain (DAAM word maps)")."""
        if not self.attention_control:
            raise self.unsupported(f"{what} (attention control)")

    def hires_upscalers(self) -> list[str]:  # what hires fix can upscale with (latent modes, then image upscalers)
        return self.upscalers()

    def check_hires(self, req: Txt2ImgRequest) -> None:
        """A hires fix request names an upscaler this host has (else the error lists them)."""
        if req.hires and req.hires_upscaler not in self.hires_upscalers():
            raise HostError(f"Unknown hires upscaler {req.hires_upscaler!r}; choose one of "
                            f"{', '.join(self.hires_upscalers())}")

    def token_chunks(self, prompt: str) -> Optional[list[list[int]]]:
        """The prompt's 77-id CLIP chunks as this host splits them, or None: it splits as our own tokenizer does
        (``TokenMap.from_prompt``; the diffusers host). The WebUIs break long prompts at commas."""
        return None

    def checkpoint_path(self) -> str:
        """The SD1.5 checkpoint file in use (what a LoRA is trained on)."""
        raise self.unsupported("Naming the checkpoint file in use (to train on it)")

    def checkpoints(self) -> dict[str, str]:
        """The checkpoints a request may name to train on: name -> file. By default the one in use, by its file
        name and its stem. A request's checkpoint is looked up here (:func:`resolve_checkpoint`), never opened as a
        path of its own."""
        path = Path(self.checkpoint_path())
        return {path.name: str(path), path.stem: str(path)}

    def controlnet_model(self, kind: str, wanted: Optional[str] = None) -> Optional[str]:
        """The ControlNet model for ``kind`` ("pose" or "tile") this host can use, or None."""
        return None

    def adetailer_present(self) -> bool:
        """Whether the ADetailer extension is there to run the face detail pass."""
        return bool(self.adetailer_models())

    def adetailer_models(self) -> list[str]:
        """ADetailer's detection models (``face_yolov8n.pt``, ``mediapipe_face_full``…); empty without it."""
        return []

    def adetailer_detail(self, req: FaceDetailRequest, control: Optional[RunControl] = None) -> Result:
        """The face detail pass done by the host's face detailer (the WebUI's ADetailer extension); one image, whose
        ``reports`` end with the detailer's own. HostError where the host has none."""
        raise self.unsupported("The ADetailer face detail pass (use the built-in face detail pass)")

    def check_prompt_loras(self, prompt: str, loras: Optional[list[LoraRef]] = None) -> list[str]:
        """Check, before a job starts, the LoRAs ``prompt``'s ``<lora:NAME:W>`` tags name (and ``loras``): the notes
        (modules matching no layer), or HostError (an unknown name, another model family's LoRA). None by default."""
        return []

    def take_notes(self) -> list[str]:
        """The notes made since last asked (e.g. which ControlNet file to install), then cleared; none by default."""
        return []

    def publish_lora(self, lora: LoraRef) -> LoraRef:
        """``lora`` as the host applies it by name (the WebUI copies it into its Lora folder, checked by SHA-256:
        :mod:`lib_profile.hosts.webui.lora_publish`); by default the file where it is."""
        return lora

    def lora_list_changed(self) -> None:
        """A LoRA was published or deleted: refresh the host's list (WebUI Extra Networks); nothing by default."""

    def forget_lora(self, name: str) -> list[str]:
        """Remove what the host keeps of a deleted LoRA (caches, copies); the places cleaned. None by default."""
        return []

    def control(self) -> RunControl:
        """The host's own interrupt (the WebUI's Interrupt button); none by default."""
        return RunControl()

    def job(self, id_task: str, job_count: int, title: str = "Profile Studio"):
        """A context around all passes of one job (the WebUI takes its queue lock and progress bar here)."""
        return contextlib.nullcontext()

    def denoiser(self, prompts: list[str], loras: Optional[list[LoraRef]] = None, clip_skip: int = 1):
        """A context lending this host's model as a :class:`~lib_profile.hosts.denoiser.Denoiser` for one job (photo
        inversion), ``loras`` and ``prompts``' ``<lora:NAME:W>`` tags applied, the host held; undone on exit."""
        raise self.unsupported("Inverting a photo (restyle, edit or explain a photo)")

    def training_slot(self, id_task: str, steps: int):
        """A context around a training run in a subprocess (the WebUI frees VRAM and holds its queue)."""
        return contextlib.nullcontext()

    def training_progress(self, step: int, steps: int, text: str = "") -> None:
        """Shown by the host while training (the WebUI's progress bar)."""


def resolve_checkpoint(host: Host, wanted: str) -> str:
    """The file of the checkpoint a request names (its WebUI title, file name or stem, or the very path the host
    lists); HostError (400) listing the choices for any other name or path - a request never picks a file by path."""
    known = host.checkpoints()
    if wanted in known:
        return known[wanted]
    if wanted in known.values():
        return wanted
    names = sorted({n for n in known if "/" not in n and "\\" not in n})
    raise HostError(f"Unknown checkpoint {wanted!r}; train on one of: {', '.join(names) or 'none found'} "
                    "(leave it out to train on the one in use)")
