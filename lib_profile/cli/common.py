"""What several commands share: LoRA arguments and the ``--lora-dir`` folders."""

from __future__ import annotations

import sys
from pathlib import Path


def lora_arg(text: str):
    """``FILE[:WEIGHT]`` -> LoraRef (a path whose last ``:`` part is no number is all path)."""
    from lib_profile.hosts.base import LoraRef

    head, sep, tail = text.rpartition(":")
    try:
        if sep and head:
            return LoraRef(path=head, weight=float(tail))
    except ValueError:
        pass
    return LoraRef(path=text, weight=1.0)


def add_lora_dir_argument(p) -> None:
    p.add_argument("--lora-dir", action="append", default=[], metavar="FOLDER",
                   help="where <lora:NAME:WEIGHT> tags in a prompt are looked up, before the data folder's loras/ "
                   "(repeatable)")


def lora_dirs(args) -> list[str]:
    """The ``--lora-dir`` folders, each checked to be one."""
    from lib_profile.hosts.base import HostError

    for folder in args.lora_dir:
        if not Path(folder).expanduser().is_dir():
            raise HostError(f"--lora-dir {folder}: no such folder")
    return list(args.lora_dir)


def print_lora_notes(params: dict) -> None:
    for note in params.get("lora_notes") or []:
        print(f"note: {note}", file=sys.stderr)
