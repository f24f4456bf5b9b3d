"""``restyle`` (Plug-and-Play of a real photo), and the ``--photo FILE`` source of ``explain`` and ``edit``.

A photo is a file (``--photo FILE``), or with ``--identity SLUG`` one of that person's photos in the data folder by the
name shown for it (``--photo NAME``); ``--keep-person`` applies the person's LoRA (the identity's newest, or the first
``--lora``) and scores the result's identity similarity. Output: ``photo.png``, ``reconstruction.png``, the result
with its infotext and a JSON report in ``--out`` (:mod:`lib_profile.service.photo_runs`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from lib_profile.cli.common import add_lora_dir_argument, lora_arg, lora_dirs, print_lora_notes

# options of explain/edit that belong to a new prompt, not to a photo (a photo's size is --size)
PROMPT_ONLY = ("width", "height", "sampler", "scheduler", "hires_scale", "hires_steps", "hires_denoising",
               "hires_upscaler")


def add_photo_options(p) -> None:
    """The inversion options explain and edit add for ``--photo`` (steps, CFG, negative prompt and CLIP skip are
    their own ``--steps``, ``--cfg-scale``, ``--negative-prompt``, ``--clip-skip``)."""
    p.add_argument("--photo", help="a real photo file to explain/edit instead of a new image of --prompt")
    p.add_argument("--caption", help="the photo's caption, its source prompt (default: 'a photo of a person')")
    p.add_argument("--method", choices=["direct", "null-text", "ddim"], help="how the photo is inverted "
                   "(default: direct)")
    p.add_argument("--size", type=int, help="the photo's short side in px after cropping, a multiple of 64 within "
                   "64..1024 (default: the checkpoint family's, 512 on SD1.5, 832 on SDXL)")
    p.add_argument("--null-text-iterations", type=int, help="null-text only: optimiser steps a step, 1..50")


def add_restyle_parser(sub) -> None:
    from lib_profile.service.photo_settings import InversionSettings
    from lib_profile.studio.settings import add_arguments

    p = sub.add_parser("restyle", help="restyle a real photo (Plug-and-Play): its layout kept, its look the prompt's")
    p.add_argument("--checkpoint", required=True, help="an SD1.5 checkpoint file, or 'tiny'")
    p.add_argument("--photo", required=True, help="the photo file (with --identity: the name of one of the "
                   "person's photos)")
    p.add_argument("--identity", help="a person (slug) in the data folder: --photo names one of their photos, "
                   "--keep-person uses their newest LoRA")
    p.add_argument("--prompt", required=True, help="the target prompt: what the photo should become")
    p.add_argument("--caption", help="the photo's caption, its source prompt (default: 'a photo of a person', or "
                   "the person's LoRA's activation text)")
    p.add_argument("--strength", type=float, default=0.2, help="how far from the photo, 0..1 (0: the photo back; "
                   "default 0.2: the paper's feature/attention injection 0.8/0.5)")
    p.add_argument("--keep-person", action="store_true", help="apply the person's LoRA (--identity's newest, or "
                   "the first --lora) and report the result's identity similarity")
    add_arguments(p, InversionSettings)  # --method, --steps, --cfg-scale (--cfg), --size, ...
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="a LoRA file (repeatable)")
    add_lora_dir_argument(p)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", required=True)


def _identity_photo(slug: str, name: str) -> tuple[Path, Optional[str], str]:
    """(the photo's file, the person's newest LoRA file or None, their class word) of an identity in the data
    folder."""
    from lib_profile import paths
    from lib_profile.hosts.base import HostError
    from lib_profile.store.identities import IdentityStore
    from lib_profile.store.safe import check_name, inside

    root = paths.data_dir()
    store = IdentityStore(root / "identities", root / "loras", root / "outputs")
    record = store.get(slug)
    check_name(name, "photo name")
    names = store.photo_names(slug)
    stored = next((s for s, shown in names.items() if shown == name), None) or (name if name in names else None)
    if stored is None:
        raise HostError(f"{slug} has no photo {name!r}; their photos: {', '.join(names.values()) or 'none yet'}")
    entry = store.latest_lora(slug)
    lora = str(store.lora_path(slug, entry)) if entry else None
    return inside(store.folder(slug) / "uploads", stored, what="photo"), lora, record["class_word"]


def _host(args):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return DiffusersHost(args.checkpoint, device=args.device, data_dir=args.data_dir, lora_dirs=lora_dirs(args))


def cmd_restyle(args) -> int:
    from lib_profile.hosts.base import HostError, LoraRef
    from lib_profile.service.photo_settings import (InversionSettings, activation_text, check_caption,
                                                    default_caption, injection, photo_settings)
    from lib_profile.service.photo_runs import read_photo_file, run_restyle
    from lib_profile.studio.settings import from_arguments

    settings = photo_settings(from_arguments(args, InversionSettings))  # checked before any model loads
    injection(args.strength)
    target = check_caption(args.prompt, "--prompt")
    if not target:
        raise HostError("--prompt: write what the photo should become")
    loras = [lora_arg(x) for x in args.lora]
    class_word, person = "person", None
    if args.identity:
        path, person, class_word = _identity_photo(args.identity, args.photo)
        if args.keep_person and person is None:
            raise HostError(f"--keep-person: {args.identity} has no LoRA yet; train one first")
    else:
        path = Path(args.photo)
        person = loras[0].path if loras else None
        if args.keep_person and person is None:
            raise HostError("--keep-person needs the person's LoRA: give --identity SLUG, or --lora FILE")
    photo = read_photo_file(path, "--photo")
    if args.keep_person and args.identity:
        loras.insert(0, LoraRef(path=person, weight=0.9))
    caption = check_caption(args.caption, "--caption") or default_caption(
        class_word, activation_text(person) if args.keep_person else None)
    report = run_restyle(_host(args), photo, caption, target, settings, args.strength, args.out, loras,
                         person_lora=person if args.keep_person else None)
    return _print_report(report, args.out, ("photo", "reconstruction", "restyled"))


def _print_report(report: dict[str, Any], out, names) -> int:
    print_lora_notes({"lora_notes": report.get("notes")})
    if report.get("identity_similarity") is not None:
        print(f"identity similarity: {report['identity_similarity']:.3f}", file=sys.stderr)
    for name in names:
        print(Path(out) / report[name])
    return 0


def photo_settings_of(args):
    """The inversion settings of an explain/edit ``--photo``: --method, --size, --null-text-iterations, and its
    --steps, --cfg-scale, --negative-prompt, --clip-skip; a prompt-only option (--width...) is refused."""
    from lib_profile.hosts.base import HostError
    from lib_profile.service.photo_settings import photo_settings
    from lib_profile.studio.settings import SourceSettings, from_arguments

    given = from_arguments(args, SourceSettings)
    wrong = [f"--{k.replace('_', '-')}" for k in PROMPT_ONLY if k in given]
    if wrong:
        raise HostError(f"{', '.join(wrong)}: for a new image of --prompt, not a --photo (its size is --size)")
    data = {k: v for k, v in given.items() if k in ("steps", "cfg_scale", "negative_prompt", "clip_skip")}
    data.update({k: getattr(args, k) for k in ("method", "size", "null_text_iterations")
                 if getattr(args, k) is not None})
    return photo_settings(data)


def photo_source(args):
    """(the photo, its caption, its inversion settings) of an explain/edit ``--photo``; HostError when --prompt is
    given too, or when the file is missing or broken."""
    from lib_profile.hosts.base import HostError
    from lib_profile.service.photo_settings import check_caption, default_caption
    from lib_profile.service.photo_runs import read_photo_file

    if args.prompt:
        raise HostError("Give one source: --prompt (a new image) or --photo (a real photo), not both")
    if getattr(args, "hires_pass", False):
        raise HostError("--hires-pass: for a new image of --prompt made with hires fix, not a --photo")
    settings = photo_settings_of(args)
    caption = check_caption(args.caption, "--caption") or default_caption("person")
    return read_photo_file(args.photo, "--photo"), caption, settings


def explain_photo_command(args, words, layers, steps) -> int:
    from lib_profile.service.photo_runs import run_explain_photo

    photo, caption, settings = photo_source(args)
    report = run_explain_photo(_host(args), photo, caption, words, settings, args.out, layers, steps,
                               [lora_arg(x) for x in args.lora], threshold=args.threshold)
    for word, files in report["words"].items():
        print(f"{word}: {Path(args.out) / files['overlay']}")
    print_lora_notes({"lora_notes": report["notes"]})
    return 0


def edit_photo_command(args, edit_of) -> int:
    """``edit_of(source_prompt)``: the Edit of the photo's caption."""
    from lib_profile.service.photo_runs import run_edit_photo

    photo, caption, settings = photo_source(args)
    edit = edit_of(caption)
    edit.validate()
    report = run_edit_photo(_host(args), photo, edit, settings, args.out, [lora_arg(x) for x in args.lora])
    print(f"Prompt-to-Prompt: {edit.mode} on a photo: {edit.source!r} -> {edit.edited_prompt!r}")
    return _print_report(report, args.out, ("source", "reconstruction", "edited"))
