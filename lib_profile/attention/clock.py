"""One step clock for attention control: the sampler's steps, whatever the number of model evaluations per step.

A sampler of ``n`` steps evaluates the model a fixed number of times per step, in one of three patterns:

* ``"one"``: one evaluation per step (Euler, Euler a, LMS, DPM++ 2M, DPM++ 2M SDE, DPM++ 3M SDE, UniPC, DDIM, LCM):
  ``n`` evaluations.
* ``"two"``: second-order samplers (Heun, DPM2, DPM2 a, DPM++ SDE, DPM++ 2S a) evaluate twice per step, once more at
  an intermediate point; the last step, which ends at sigma 0, is a single (Euler) evaluation: ``2n - 1`` in all
  (k-diffusion ``sample_heun``, ``sample_dpm_2``, ``sample_dpmpp_sde``; diffusers ``HeunDiscreteScheduler``,
  ``KDPM2DiscreteScheduler``, ``DPMSolverSDEScheduler``, whose ``timesteps`` hold ``2n - 1`` entries).
* ``"plms"``: PLMS makes its first step with a second-order (pseudo improved Euler) update, then one evaluation a
  step: ``n + 1`` (Liu et al., ICLR 2022, eq. 12; A1111 ``sd_samplers_timesteps_impl.plms``, diffusers
  ``PNDMScheduler(skip_prk_steps=True)``).

Samplers whose evaluation count depends on the run (DPM adaptive, DPM fast: adaptive step sizes; Restart: extra
restart segments) have no fixed clock: an edit refuses them (:func:`check_supported`).

Prompt-to-Prompt's tau and self-attention fraction, DAAM's step ranges and the local blend count these steps;
every evaluation of a step is controlled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from lib_profile.hosts.base import HostError

PATTERNS = ("one", "two", "plms")
IRREGULAR = ("DPM adaptive", "DPM fast", "Restart")


@dataclass(frozen=True)
class Tick:
    step: int  # the sampler step, 0..n-1
    evaluation: int  # which model evaluation of that step, 0 first
    last: bool  # the step's last evaluation (after it, the sampler's latents for the next step exist)


def tick(evaluation: int, steps: int, pattern: str = "one") -> Tick:
    """The sampler step of model evaluation number ``evaluation`` (0-based) in a pass of ``steps`` steps.

    >>> tick(3, 20, "two")
    Tick(step=1, evaluation=1, last=True)
    """
    steps = max(1, int(steps))
    if pattern == "two":
        step = min(evaluation // 2, steps - 1)
        sub = evaluation - 2 * step
        return Tick(step, sub, sub == 1 or step == steps - 1)
    if pattern == "plms":
        if evaluation < 2:
            return Tick(0, evaluation, evaluation == 1)
        return Tick(min(evaluation - 1, steps - 1), 0, True)
    if pattern != "one":
        raise ValueError(f"unknown evaluation pattern {pattern!r}; one of {PATTERNS}")
    return Tick(min(evaluation, steps - 1), 0, True)


def evaluations(steps: int, pattern: str = "one") -> int:
    """How many model evaluations a pass of ``steps`` steps makes."""
    steps = max(1, int(steps))
    return {"one": steps, "two": 2 * steps - 1, "plms": steps + 1}[pattern]


def pattern_of(sampler_name: str, second_order: bool = False) -> str:
    """The pattern of a WebUI sampler, from its name and the WebUI's ``second_order`` option."""
    name = (sampler_name or "").strip().lower()
    if name.startswith("plms"):
        return "plms"
    return "two" if second_order else "one"


def check_supported(sampler_name: str, what: str = "Prompt-to-Prompt") -> None:
    """Refuse a sampler whose number of model evaluations per step is not fixed."""
    name = (sampler_name or "").strip().lower()
    for irregular in IRREGULAR:
        if name == irregular.lower() or name.startswith(irregular.lower() + " "):
            raise HostError(f"{what} counts sampler steps, and {irregular} has no fixed number of model evaluations "
                            "per step; pick another sampler (Euler, DPM++ 2M, DPM++ SDE, Heun, UniPC...)")
