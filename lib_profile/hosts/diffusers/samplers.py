"""WebUI sampler and schedule-type names, and the diffusers schedulers that stand for them.

The WebUI (1.10) splits a sampler ("DPM++ 2M") from its schedule type ("Karras"); older combined
names ("DPM++ 2M Karras", "k_euler_a") are still accepted, as the WebUI accepts them. The same
names travel unchanged to the WebUI hosts, so a studio plan means the same thing everywhere.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from lib_profile.hosts.base import HostError, Img2ImgRequest


@dataclass(frozen=True)
class SamplerSpec:
    label: str
    scheduler_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "Automatic"
    aliases: tuple[str, ...] = ()
    # k-diffusion samplers in the WebUI space their sigmas over the whole range ("linspace");
    # DDIM/PLMS use the original "leading" spacing.
    spacing: str = "linspace"
    needs: str | None = None  # an extra package the scheduler imports
    evaluations: str = "one"  # model evaluations per step: "one", "two" (second order), "plms" (attention/clock.py)


SAMPLERS: tuple[SamplerSpec, ...] = (
    SamplerSpec("DPM++ 2M", "DPMSolverMultistepScheduler",
                {"algorithm_type": "dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2m",)),
    SamplerSpec("DPM++ SDE", "DPMSolverSDEScheduler", {}, "Karras", ("k_dpmpp_sde",), needs="torchsde",
                evaluations="two"),
    SamplerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "Karras", ("k_dpmpp_2m_sde",)),
    SamplerSpec("Euler a", "EulerAncestralDiscreteScheduler", {}, "Automatic", ("k_euler_a", "k_euler_ancestral")),
    SamplerSpec("Euler", "EulerDiscreteScheduler", {}, "Automatic", ("k_euler",)),
    SamplerSpec("LMS", "LMSDiscreteScheduler", {}, "Automatic", ("k_lms",)),
    SamplerSpec("Heun", "HeunDiscreteScheduler", {}, "Automatic", ("k_heun",), evaluations="two"),
    SamplerSpec("DPM2", "KDPM2DiscreteScheduler", {}, "Karras", ("k_dpm_2",), evaluations="two"),
    SamplerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", {}, "Karras", ("k_dpm_2_a",), evaluations="two"),
    SamplerSpec("UniPC", "UniPCMultistepScheduler", {}, "Automatic", ("unipc",)),
    SamplerSpec("DDIM", "DDIMScheduler", {}, "Automatic", ("ddim",), spacing="leading"),
    SamplerSpec("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, "Automatic", ("plms",), spacing="leading",
                evaluations="plms"),
    SamplerSpec("LCM", "LCMScheduler", {}, "Automatic", ("lcm", "k_lcm"), spacing="leading"),
)

# schedule-type label -> (WebUI name, the diffusers flag that gives it; None = the scheduler's own spacing)
SCHEDULES: dict[str, tuple[str, str | None]] = {
    "Automatic": ("automatic", None),
    "Uniform": ("uniform", None),
    "Karras": ("karras", "use_karras_sigmas"),
    "Exponential": ("exponential", "use_exponential_sigmas"),
    "Beta": ("beta", "use_beta_sigmas"),
}


def _lookup() -> dict[str, SamplerSpec]:
    table: dict[str, SamplerSpec] = {}
    for spec in SAMPLERS:
        for key in (spec.label, *spec.aliases):
            table[key.lower()] = spec
    return table


_BY_NAME = _lookup()


def sampler_names() -> list[str]:
    return [s.label for s in SAMPLERS]


def schedule_names() -> list[str]:
    return list(SCHEDULES)


def _schedule_label(name: str) -> str | None:
    for label, (short, _flag) in SCHEDULES.items():
        if name.lower() in (label.lower(), short):
            return label
    return None


def resolve(sampler: str, schedule: str | None = "Automatic") -> tuple[SamplerSpec, str]:
    """Split and check a sampler name as the WebUI does; returns the spec and the schedule label.

    ``resolve("DPM++ 2M Karras")`` -> (DPM++ 2M, "Karras"); ``resolve("Euler a")`` -> (Euler a, "Automatic").
    """
    name = (sampler or "").strip()
    schedule_label = _schedule_label(schedule or "Automatic")
    if schedule_label is None:
        raise HostError(f"Unknown schedule type {schedule!r}. Choose one of: {', '.join(SCHEDULES)}")
    spec = _BY_NAME.get(name.lower())
    if spec is None and " " in name:
        head, _, tail = name.rpartition(" ")
        tail_label = _schedule_label(tail)
        if tail_label is not None and head.lower() in _BY_NAME:
            spec = _BY_NAME[head.lower()]
            if schedule_label == "Automatic":
                schedule_label = tail_label
    if spec is None:
        raise HostError(f"Unknown sampler {sampler!r}. Choose one of: {', '.join(sampler_names())}")
    if schedule_label == "Automatic":
        schedule_label = spec.default_schedule
    return spec, schedule_label


def make_scheduler(sampler: str, schedule: str | None, base_config: dict[str, Any]):
    """A diffusers scheduler for a WebUI sampler + schedule type, built on the model's base config."""
    import diffusers

    spec, schedule_label = resolve(sampler, schedule)
    cls = getattr(diffusers, spec.scheduler_class, None)
    if cls is None:
        raise HostError(f"Sampler {spec.label} needs diffusers.{spec.scheduler_class}, missing in diffusers {diffusers.__version__}")
    if spec.needs:
        import importlib.util

        if importlib.util.find_spec(spec.needs) is None:
            raise HostError(f"Sampler {spec.label} needs the package {spec.needs!r}: pip install {spec.needs}")
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = {k: v for k, v in base_config.items() if k in accepted}
    config.update({k: v for k, v in spec.kwargs.items() if k in accepted})
    if "timestep_spacing" in accepted:
        config["timestep_spacing"] = spec.spacing
    flag = SCHEDULES[schedule_label][1]
    if flag is not None:
        if flag not in accepted:
            raise HostError(
                f"Schedule type {schedule_label} is not available for {spec.label} with diffusers "
                f"{diffusers.__version__}; use Automatic"
            )
        config[flag] = True
    return cls(**config), spec.label, schedule_label


def schedule_steps(req) -> int:
    """The steps of a pass's noise schedule: an img2img pass gets enough for at least one denoising step, as
    the WebUI runs it."""
    if isinstance(req, Img2ImgRequest) and int(req.steps * req.denoising_strength) < 1:
        return math.ceil(1 / req.denoising_strength)
    return req.steps


def run_steps(req) -> int:
    """The sampling steps a pass of ``req`` runs (an img2img pass runs its denoising share of its schedule)."""
    steps = schedule_steps(req)
    return min(int(steps * req.denoising_strength), steps) if isinstance(req, Img2ImgRequest) else steps
