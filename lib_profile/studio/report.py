"""What each stage of a portrait really did, from the hosts' :class:`~lib_profile.hosts.base.StageReport` lines.

A stage is ``failed`` when a part of it failed (a ControlNet unit the WebUI rejected, an upscaler that did not
load), ``skipped`` when it did nothing (a face detail pass that found no face), else ``ran``. The notes say
each part that did not run once per plan, with how many portraits it touched, so the job's messages and
``result.json`` tell the user what the pictures were really made with.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from lib_profile.hosts.base import FAILED, RAN, StageReport


def merge(reports: Iterable[StageReport]) -> list[dict[str, Any]]:
    """Reports of one stage, repeats folded (an upscale makes one pass a tile): ``part, status, why, times``."""
    counts = Counter((r.part, r.status, r.why) for r in reports)
    return [{"part": part, "status": status, "why": why, "times": n} for (part, status, why), n in counts.items()]


def stage_entry(index: int, kind: str, reports: Iterable[StageReport]) -> dict[str, Any]:
    """One stage of one portrait as ``result.json`` lists it. A detail stage is what its last part did (ADetailer,
    or our own pass after it: ADetailer failed but our pass ran is a detail stage that ran); any other stage failed
    when one of its parts failed."""
    reports = list(reports)
    if kind == "detail" and reports:
        status = reports[-1].status
    else:
        status = FAILED if any(r.status == FAILED for r in reports) else RAN
    return {"stage": f"{index}:{kind}", "status": status, "parts": merge(reports)}


def kind(entry: dict[str, Any]) -> str:
    """The stage kind of an entry of :func:`stage_entry` (``"2:refine"`` -> ``"refine"``)."""
    return entry["stage"].split(":", 1)[1]


def notes(items: list[dict[str, Any]]) -> list[str]:
    """One line per part that did not run, across the portraits: 'txt2img: ControlNet pose failed in 2 of 2
    portraits (TypeError: ...)'."""
    seen: dict[tuple[str, str, str, str], set[int]] = {}
    for n, item in enumerate(items):
        for stage in item.get("stages", []):
            for part in stage["parts"]:
                if part["status"] != RAN or (part["why"] and part["part"].startswith("LoRA ")):  # LoRA notes too
                    key = (kind(stage), part["part"], part["status"], part["why"])
                    seen.setdefault(key, set()).add(n)
    out = []
    for (stage_kind, part, status, why), portraits in seen.items():
        out.append(f"{stage_kind}: {part} {status} in {len(portraits)} of {len(items)} portrait(s)"
                   + (f" ({why})" if why else ""))
    return out


def infotext_line(stages: list[dict[str, Any]]) -> str:
    """The stages as the PNG's infotext records them: 'txt2img, detail skipped, refine, upscale failed'."""
    return ", ".join(kind(s) + ("" if s["status"] == RAN else f" {s['status']}")
                     for s in stages)
