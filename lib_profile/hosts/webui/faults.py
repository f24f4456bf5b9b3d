"""What the WebUI did with the parts of a pass we delegated to it, told truthfully.

The WebUI's script runner catches every exception an extension's hook raises, prints it to the console
(``errors.report``) and carries on, so a ControlNet unit that failed, or an ADetailer that could not find its
model, still ends in a picture and a "done". Each script copy in our filtered runner has its hooks watched:
an exception is recorded as a :class:`Fault` (then re-raised, so the WebUI still reports it as usual), and
the generation parameters the hook had added (the infotext it wrote before failing, as Forge's ControlNet does)
are taken out again. :func:`reports` turns the faults and what the pass left behind into
:class:`~lib_profile.hosts.base.StageReport` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from lib_profile.hosts.base import FAILED, RAN, SKIPPED, ControlUnit, StageReport

# Hooks that run before or while sampling: a failure there means the script's work is not in the picture.
BEFORE_SAMPLING = ("setup", "before_process", "process", "before_process_batch", "process_batch",
                   "after_extra_networks_activate", "process_before_every_sampling", "before_hr")
# Hooks that run after sampling: ADetailer works in postprocess_image.
AFTER_SAMPLING = ("post_sample", "postprocess_batch", "postprocess_batch_list", "postprocess_image",
                  "postprocess_image_after_composite", "postprocess")
HOOKS = BEFORE_SAMPLING + AFTER_SAMPLING
MAX_MESSAGE = 300


@dataclass
class Fault:
    script: str  # the script's title, lower case ("controlnet", "adetailer")
    hook: str
    error: str

    @property
    def before_sampling(self) -> bool:
        return self.hook in BEFORE_SAMPLING


def error_text(exc: BaseException) -> str:
    """The innermost error's type and first lines: ADetailer re-raises its errors wrapped in a console panel
    (``raise error from None``), whose text is the whole panel; the error it wraps says what went wrong."""
    inner = exc
    seen = set()
    while id(inner) not in seen:
        seen.add(id(inner))
        nxt = inner.__cause__ or inner.__context__
        if nxt is None:
            break
        inner = nxt
    message = " ".join(str(inner).split())
    message = re.sub(r"^\[-\]\s*", "", message)
    text = f"{type(inner).__name__}: {message}" if message else type(inner).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def watch(script: Any, faults: list[Fault]) -> None:
    """Wrap the hooks ``script``'s class defines (on this copy only) so an exception is recorded in ``faults``;
    a failure before sampling also removes every generation parameter this script added (its infotext, which
    both ControlNets write before they process a unit). The exception goes on to the WebUI's runner."""
    title = script.title().lower()
    added: set[str] = set()  # the generation parameters this script wrote, over all its hooks
    for hook in HOOKS:
        if not callable(getattr(type(script), hook, None)):  # the runner calls only hooks the class defines
            continue
        bound = getattr(script, hook)

        def wrapper(*args, _hook=hook, _bound=bound, **kwargs):
            p = args[0] if args else None
            params = getattr(p, "extra_generation_params", None)
            before = set(params) if isinstance(params, dict) else None
            try:
                return _bound(*args, **kwargs)
            except Exception as exc:
                faults.append(Fault(title, _hook, error_text(exc)))
                if before is not None and _hook in BEFORE_SAMPLING:
                    for key in added | (set(params) - before):
                        params.pop(key, None)
                raise
            finally:
                if before is not None:
                    added.update(set(params) - before)

        setattr(script, hook, wrapper)


def new_console_errors(before: Optional[list]) -> list[str]:
    """Errors the WebUI recorded (``modules.errors.exception_records``) since ``before`` was taken."""
    if before is None:
        return []
    try:
        from modules import errors
    except ImportError:
        return []
    old = {id(r) for r in before}
    return [str(r.get("exception", r)) for r in getattr(errors, "exception_records", []) if id(r) not in old]


def console_errors_now() -> Optional[list]:
    try:
        from modules import errors
    except ImportError:
        return None
    return list(getattr(errors, "exception_records", []))


def controlnet_reports(units: list[ControlUnit], present: bool, missing_why: str, faults: list[Fault],
                       params: dict[str, Any]) -> list[StageReport]:
    """One report per unit: skipped without the extension; failed when the ControlNet script raised before
    sampling, or never wrote the unit's ``ControlNet N`` parameters (both ControlNet extensions write them
    for every unit they take); else ran."""
    out = []
    mine = [f for f in faults if f.script == "controlnet"]
    for i, unit in enumerate(units):
        part = f"ControlNet {unit.kind}"
        if not present:
            out.append(StageReport(part, SKIPPED, missing_why))
        elif any(f.before_sampling for f in mine):
            why = next(f for f in mine if f.before_sampling)
            out.append(StageReport(part, FAILED, f"ControlNet's {why.hook} raised {why.error}"))
        elif f"ControlNet {i}" not in params:
            out.append(StageReport(part, FAILED, "ControlNet did not take the unit (it wrote no parameters for it)"))
        else:
            out.append(StageReport(part, RAN))
    return out


def lora_reports(names: list[str], comments: str) -> list[StageReport]:
    """A LoRA the WebUI could not find is named in the pass's comments ("Lora not found: a, b")."""
    missing: set[str] = set()
    for line in (comments or "").splitlines():
        match = re.search(r"(?:Lora|Networks?) not found:\s*(.*)", line, re.I)
        if match:
            missing.update(x.strip() for x in match.group(1).split(","))
    return [StageReport(f"LoRA {n}", FAILED, "the WebUI could not find it in its Lora folder") if n in missing
            else StageReport(f"LoRA {n}", RAN) for n in names]


def adetailer_report(faults: list[Fault], params: dict[str, Any], before, after) -> StageReport:
    """ADetailer failed (it raised), found nothing (the picture came back unchanged) or ran."""
    mine = [f for f in faults if f.script == "adetailer"]
    if mine:
        return StageReport("ADetailer", FAILED, mine[0].error)
    if not any(k.startswith("ADetailer") for k in params):
        return StageReport("ADetailer", FAILED, "ADetailer did not take its arguments (it wrote no parameters)")
    if before is not None and after is not None and before.size == after.size and np.array_equal(
            np.asarray(before.convert("RGB")), np.asarray(after.convert("RGB"))):
        return StageReport("ADetailer", SKIPPED, "ADetailer found no face")
    return StageReport("ADetailer", RAN)
