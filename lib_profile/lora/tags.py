"""``<lora:NAME:WEIGHT>`` tags in a prompt, found by name in LoRA folders, as the WebUI reads them.

The WebUI's Lora extension looks a tag's NAME up among the ``.safetensors`` files of its Lora folders (by
file stem, subfolders included) and applies it at WEIGHT (1 when left out); ``lyco`` is another name for
``lora``. A batch uses the tags of its first prompt. Here every fault is a :class:`HostError` saying what
to do: an unknown name (naming the folders searched), a weight that is no number, a text-encoder/UNet
split weight (``<lora:x:0.5:1>``, not applied by the diffusers host), a kind of tag this host cannot apply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from lib_profile.hosts.base import HostError, LoraRef

_TAG = re.compile(r"<(\w+):([^>]+)>")  # as lib_profile.prompts.parse strips them
LORA_KINDS = ("lora", "lyco")


def parse_tags(prompt: str) -> list[tuple[str, float]]:
    """The ``(name, weight)`` of each LoRA tag in ``prompt``, in order; HostError for a tag it cannot apply."""
    found: list[tuple[str, float]] = []
    for match in _TAG.finditer(prompt or ""):
        kind, parts = match[1].lower(), [p.strip() for p in match[2].split(":")]
        if kind not in LORA_KINDS:
            raise HostError(f"{match[0]}: the diffusers host applies only <lora:NAME:WEIGHT> tags, "
                            f"not {kind!r} networks; remove the tag")
        name = parts[0]
        if not name:
            raise HostError(f"{match[0]}: the tag names no LoRA; write <lora:NAME:WEIGHT>")
        weights = []
        for part in parts[1:]:
            try:
                weights.append(float(part))
            except ValueError:
                raise HostError(f"{match[0]}: {part!r} is not a weight; write <lora:NAME:WEIGHT>, "
                                "e.g. <lora:{name}:0.8>".replace("{name}", name)) from None
        if len(weights) > 1 and any(w != weights[0] for w in weights[1:]):
            raise HostError(f"{match[0]}: separate text-encoder and UNet weights are not applied by the diffusers "
                            f"host; give one weight, e.g. <lora:{name}:{weights[0]:g}>")
        found.append((name, weights[0] if weights else 1.0))
    return found


def find_lora(name: str, folders: Sequence[str | Path]) -> Path:
    """The ``NAME.safetensors`` file in the first of ``folders`` (searched with their subfolders) that holds one.

    HostError naming every folder searched when none does, or when NAME could leave a folder."""
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise HostError(f"LoRA name {name!r}: a tag names a LoRA by its file name without extension, not a path")
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        hits = sorted(p for p in folder.rglob(f"{glob_escape(name)}.safetensors") if p.is_file())
        if hits:
            return hits[0]
    where = ", ".join(str(Path(f)) for f in folders) or "none given"
    raise HostError(f"LoRA {name!r} not found: no {name}.safetensors in the LoRA folders searched ({where}). "
                    "Put the file in one of them (or give --lora-dir), or fix the name in the tag")


def glob_escape(text: str) -> str:
    """``text`` with glob wildcards taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def prompt_loras(prompts: Iterable[str], folders: Sequence[str | Path]) -> list[LoraRef]:
    """The LoRAs the tags of a batch's prompts name, found in ``folders``. All prompts of a batch must carry
    the same tags (the WebUI applies the first prompt's to the whole batch; here a difference is an error)."""
    prompts = [p for p in prompts if p is not None]
    if not prompts:
        return []
    first = parse_tags(prompts[0])
    for other in prompts[1:]:
        if parse_tags(other) != first:
            raise HostError("The prompts of one batch carry different LoRA tags; LoRAs apply to the whole batch: "
                            "give every prompt the same <lora:...> tags, or run them apart")
    refs: dict[str, LoraRef] = {}
    for name, weight in first:
        path = find_lora(name, folders)
        if name in refs:  # the same LoRA tagged twice: the WebUI adds it twice; say so instead
            raise HostError(f"LoRA {name!r} is tagged twice in the prompt; keep one <lora:{name}:WEIGHT>")
        refs[name] = LoraRef(str(path), weight)
    return list(refs.values())
