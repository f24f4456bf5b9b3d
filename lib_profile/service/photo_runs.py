"""Restyle, edit or explain one real photo and write what came of it to a folder: what the photo jobs
(:mod:`.photo_jobs`) and the command line (``restyle``, ``edit --photo``, ``explain --photo``) both run.

Each writes ``photo.png`` (the photo as cropped and scaled, its caption as its text), ``reconstruction.png`` (the photo
inverted and sampled back under its caption: how faithful the inversion is), the result (``restyled.png``,
``edited.png``, or the word maps of :func:`lib_profile.attention.explain.save`) with its WebUI infotext, and a JSON
report (``restyle.json``, ``edit.json``, ``explain.json``). A failed run writes nothing (the folder is made only
once the images are there).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from PIL import Image

from lib_profile.hosts.base import HostError, LoraRef, RunControl
from lib_profile.service.photo_settings import injection, restyle_params


def read_photo_file(path: str | os.PathLike, what: str = "photo") -> Image.Image:
    """The photo at ``path`` (upright, RGB); HostError saying what is wrong with a missing, empty, damaged, too big
    or unreadable file (HEIC without pillow-heif...)."""
    from lib_profile.photos.reading import read_photo

    read = read_photo(path)
    if not read.ok:
        raise HostError(f"{what} {Path(path).name}: {read.reason.message}")
    return read.image


def read_photo_data(data: bytes, what: str = "photo") -> Image.Image:
    """The photo in ``data`` (an upload's bytes); HostError as :func:`read_photo_file`."""
    from lib_profile.photos.reading import read_photo_bytes

    read = read_photo_bytes(data, what)
    if not read.ok:
        raise HostError(f"{what}: {read.reason.message}")
    return read.image


def _with_fields(text: str, params: Mapping[str, Any], prompt: str, fields: Mapping[str, str]) -> str:
    """The infotext of a result: the run's own (``text``, else one written from ``params``) with ``prompt`` and
    ``fields`` added to its parameters line."""
    from lib_profile.infotext import _quote, infotext

    if not text:
        return infotext({**params, "prompt": prompt}, fields)
    head, _sep, last = text.rstrip().rpartition("\n")
    if not head:  # only a prompt line: no parameters line to extend
        return infotext({**params, "prompt": prompt}, fields)
    added = [f"{k}: {_quote(v)}" for k, v in fields.items() if f"{k}: " not in last]  # what the run did not write
    return f"{head}\n{last}" + "".join(f", {x}" for x in added)


def _likeness(lora_path: Optional[str], image: Image.Image) -> Optional[float]:
    """The identity similarity of ``image`` to the person of the LoRA (None: no LoRA, no face, no reference)."""
    if not lora_path:
        return None
    from lib_profile.identity.score import IdentityScorer, reference_from_lora

    return IdentityScorer(reference_from_lora(lora_path))(image)


def _write_images(res, out: Path, caption: str, result_name: str, result_text: str) -> None:
    from lib_profile.infotext import infotext, save_png

    out.mkdir(parents=True, exist_ok=True)
    save_png(res.images["photo"], out / "photo.png", caption)
    if "reconstruction" in res.images:
        save_png(res.images["reconstruction"], out / "reconstruction.png",
                 infotext({**res.params, "prompt": caption}, {"Reconstruction": "the photo inverted and sampled back"}))
    if result_name:
        save_png(res.images["edited"], out / result_name, result_text)


def run_restyle(host, photo: Image.Image, source_prompt: str, target_prompt: str, settings, strength: float,
                out: str | os.PathLike, loras: Optional[list[LoraRef]] = None, control: Optional[RunControl] = None,
                person_lora: Optional[str] = None) -> dict[str, Any]:
    """Plug-and-Play of ``photo`` (read under ``source_prompt``) to ``target_prompt``; ``strength`` in [0, 1]
    (:func:`~lib_profile.service.photo_settings.injection`). ``person_lora``: the LoRA whose person the result is
    scored against (``identity_similarity``, 0..1 or None). Writes ``photo.png``, ``reconstruction.png``,
    ``restyled.png``, ``restyle.json`` into ``out``; returns the report."""
    from lib_profile.inversion.photo import restyle

    feature, attention = injection(strength)
    res = restyle(host, photo, source_prompt, target_prompt, settings, feature, attention, loras, control)
    fields = restyle_params(strength, settings, feature, attention)
    out = Path(out)
    _write_images(res, out, source_prompt, "restyled.png", _with_fields(res.infotext, res.params, target_prompt,
                                                                          fields))
    report = {"photo": "photo.png", "reconstruction": "reconstruction.png", "restyled": "restyled.png",
              "source_prompt": source_prompt, "prompt": target_prompt, "strength": strength,
              "feature_injection": feature, "attention_injection": attention, "method": settings.method,
              "steps": settings.steps, "size": list(res.images["edited"].size),
              "loras": [{"name": x.name, "weight": x.weight} for x in loras or []], "notes": list(res.notes)}
    if person_lora:
        report["identity_similarity"] = _likeness(person_lora, res.images["edited"])
        report["photo_identity_similarity"] = _likeness(person_lora, res.images["photo"])
    (out / "restyle.json").write_text(json.dumps(report, indent=1), "utf-8")
    return report


def run_edit_photo(host, photo: Image.Image, edit, settings, out: str | os.PathLike,
                   loras: Optional[list[LoraRef]] = None, control: Optional[RunControl] = None) -> dict[str, Any]:
    """Prompt-to-Prompt on ``photo``: ``edit`` (an ``attention.p2p.Edit`` whose source is the photo's caption).
    Writes ``photo.png`` (the before), ``reconstruction.png``, ``edited.png``, ``edit.json`` into ``out``; returns
    the report (``source``: the before image's file, as an edit of a portrait has it)."""
    from lib_profile.inversion.photo import edit_photo

    res = edit_photo(host, photo, edit, settings, loras, control)
    fields = {"Prompt-to-Prompt": f"{edit.mode} on a photo (tau {edit.cross_steps:g}, self {edit.self_steps:g})",
              "Inversion": f"{settings.method}, {settings.steps} steps, CFG {settings.cfg_scale:g}"}
    out = Path(out)
    _write_images(res, out, edit.source, "edited.png", _with_fields(res.infotext, res.params, edit.edited_prompt,
                                                                      fields))
    report = {"source": "photo.png", "reconstruction": "reconstruction.png", "edited": "edited.png",
              "prompt": edit.edited_prompt, "source_prompt": edit.source, "mode": edit.mode, "pass": "photo",
              "finished": False, "method": settings.method, "steps": settings.steps, "notes": list(res.notes)}
    (out / "edit.json").write_text(json.dumps(report, indent=1), "utf-8")
    return report


def run_explain_photo(host, photo: Image.Image, caption: str, words: list[str], settings, out: str | os.PathLike,
                      layers=None, steps=None, loras: Optional[list[LoraRef]] = None,
                      control: Optional[RunControl] = None, threshold: Optional[float] = None) -> dict[str, Any]:
    """DAAM word maps of ``photo`` under ``caption``: ``photo.png``, the maps as
    :func:`~lib_profile.attention.explain.save` writes them (``image.png``, one overlay per word, ``explain.json``);
    returns the report (with ``photo``, ``caption``, ``method``)."""
    from lib_profile.attention.explain import save
    from lib_profile.infotext import save_png
    from lib_profile.inversion.photo import explain_photo, fit_photo, photo_size

    explanation = explain_photo(host, photo, caption, words, settings, layers, steps, loras, control)
    out = Path(out)
    report = save(explanation, out, threshold)
    save_png(fit_photo(photo, photo_size(settings, host)), out / "photo.png", caption)
    report.update({"photo": "photo.png", "caption": caption, "pass": "photo", "method": settings.method,
                   "inversion_steps": settings.steps})
    (out / "explain.json").write_text(json.dumps(report, indent=1), "utf-8")
    return report
