"""Does a LoRA fit the model? Checked before any weight changes: key names, layer shapes, text width.

A LoRA made for another family (SD2: 1024-wide text encodings, SDXL: two text encoders and 2048-wide
ones) would fail deep inside a matrix product with ``shape ... is invalid``, or, worse, merge into a few
layers whose names happen to match. :func:`check_fit` says which family it is for instead, and counts the
modules that match no layer (the WebUI skips those without a word; we give a note).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lib_profile.families import (SD15, check_compatible, family_by_context_width, lora_family,
                                   lora_family_from_metadata)
from lib_profile.hosts.base import HostError


def fits(delta, weight_shape: Sequence[int]) -> bool:
    """Whether ``up @ down`` of ``delta`` (a LoraDelta) reshapes to a layer weight of ``weight_shape``."""
    out = int(delta.up.shape[0])
    inner = int(delta.down.flatten(1).shape[1])
    numel = 1
    for n in weight_shape:
        numel *= int(n)
    return out == int(weight_shape[0]) and out * inner == numel and int(delta.up.flatten(1).shape[1]) == delta.rank


def _attn_widths(deltas: list) -> list[int]:
    """The input widths of a LoRA's cross-attention key/value modules: the text width it was made for."""
    return sorted({int(d.down.flatten(1).shape[1]) for d in deltas
                   if "attn2_to_k" in d.module_key or "attn2_to_v" in d.module_key})


def check_fit(name: str, deltas: list, table: Mapping[str, Any], meta: Mapping[str, str],
              text_width: int | None, family: str = SD15.name) -> tuple[list[Any], str | None]:
    """``(matched (delta, module) pairs, note or None)`` for LoRA ``name`` against the model's ``table``
    (:func:`lib_profile.lora.keys.module_table`). ``text_width``: the UNet's cross-attention width; ``family``:
    the model's family (on a family other than SD1.5 a LoRA whose metadata, names or text width say another
    family is refused first: an SD1.5 LoRA's layers partly share SDXL's shapes).

    HostError when the LoRA is for another model family (a layer shape differs, or no module matches);
    the note counts the modules that match no layer when some do."""
    if family != SD15.name:
        said = lora_family([d.module_key for d in deltas], meta, _attn_widths(deltas))
        if said and said != family:
            raise HostError(check_compatible(family, lora_family=said, lora_name=name))
    matched, unmatched, wrong = [], [], []
    for d in deltas:
        module = table.get(d.module_key)
        if module is None:
            unmatched.append(d.module_key)
        elif not fits(d, module.weight.shape):
            wrong.append((d, module))
        else:
            matched.append((d, module))
    model = f"the model is {family} (text width {text_width})" if text_width else f"the model is {family}"
    if wrong:
        widths = sorted({int(d.down.flatten(1).shape[1]) for d, _m in wrong
                         if "attn2_to_k" in d.module_key or "attn2_to_v" in d.module_key} - {text_width})
        by_width = next((f for f in map(family_by_context_width, widths) if f), None)
        said = lora_family_from_metadata(meta)
        d, m = wrong[0]
        example = (f"{d.module_key}: LoRA {int(d.up.shape[0])}x{int(d.down.flatten(1).shape[1])}, layer "
                   f"{'x'.join(str(int(n)) for n in m.weight.shape)}")
        if by_width and by_width != family:
            raise HostError(f"{check_compatible(family, lora_family=by_width, lora_name=name)[:-1]} "
                            f"(its cross-attention reads {max(widths)}-wide text, {model}; {len(wrong)} of {len(deltas)} "
                            f"modules have other shapes, e.g. {example}).")
        raise HostError(f"LoRA {name} is not for this model: {len(wrong)} of {len(deltas)} modules have other "
                        f"shapes (e.g. {example})" + (f"; its metadata says {said}" if said else "")
                        + f". {model[0].upper()}{model[1:]}: use a LoRA made for {family}")
    if not matched:
        said = lora_family([d.module_key for d in deltas], meta)
        if said and said != family:
            raise HostError(f"{check_compatible(family, lora_family=said, lora_name=name)[:-1]} "
                            f"(it matches no layer of this model; {model}).")
        raise HostError(f"LoRA {name} matches no layer of this model (is it for another model family?); "
                        f"{model}. Use a LoRA made for {family}")
    note = None
    if unmatched:
        note = (f"{len(unmatched)} of {len(deltas)} modules of {name} matched no layer and were not applied "
                f"(e.g. {unmatched[0]})")
    return matched, note


def lora_file_family(path) -> str | None:
    """The family a LoRA file is for (:func:`lib_profile.families.lora_family`: its metadata, key names, and the
    input width of its cross-attention key/value modules), from the ``.safetensors`` header alone (no tensor is
    read); None for another format, an unreadable file, or one that says nothing."""
    from lib_profile.safetensors_header import read_header

    header = read_header(path, lambda k: ("attn2_to_k" in k or "attn2_to_v" in k) and ".lora_down." in k)
    if header is None:  # unreadable: the host's own load says what is wrong
        return None
    return lora_family(header.names, header.metadata, sorted({shape[-1] for shape in header.shapes.values()}))
