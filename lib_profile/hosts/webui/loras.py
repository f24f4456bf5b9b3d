"""What the WebUI keeps about LoRA files, kept true when we publish or delete one.

The WebUI lists LoRAs (``/sdapi/v1/loras``, Extra Networks) from a scan it makes at start-up and on its
Refresh button; it caches each file's hashes and safetensors metadata under ``"lora/<name>"`` (A1111 1.10's
``modules/cache.py``, also in Forge) and writes the last generation's parameters, LoRA tags included, to
``params.txt`` in its data folder. ``modules`` is imported inside the functions only.
"""

from __future__ import annotations

import sys
from pathlib import Path

CACHE_SUBSECTIONS = ("hashes", "hashes-addnet", "safetensors-metadata")


def refresh_list() -> bool:
    """Rescan the Lora folders as the WebUI's refresh does (``networks.list_available_networks``, the built-in
    Lora extension's module in A1111 and Forge); False where there is no such module."""
    networks = sys.modules.get("networks")
    refresh = getattr(networks, "list_available_networks", None)
    if not callable(refresh):
        return False
    refresh()
    return True


def forget(name: str) -> list[str]:
    """Take a deleted LoRA ``name`` (its file stem) out of the WebUI's caches and out of ``params.txt``; returns
    what was cleaned."""
    cleaned: list[str] = []
    try:
        from modules import cache
    except ImportError:
        cache = None
    if cache is not None and hasattr(cache, "cache"):
        for subsection in CACHE_SUBSECTIONS:
            store = cache.cache(subsection)
            if store.pop(f"lora/{name}", None) is not None:
                cleaned.append(f"cache {subsection}")
        if hasattr(cache, "dump_cache"):
            cache.dump_cache()
    try:
        from modules import paths
    except ImportError:
        return cleaned
    params = Path(getattr(paths, "data_path", "")) / "params.txt"
    if params.is_file() and name in params.read_text("utf-8", "replace"):
        params.unlink()  # the last generation's parameters name the person's LoRA: forget them as well
        cleaned.append("params.txt")
    return cleaned


def find(name: str, lora_dir: Path) -> str | None:
    """The file the WebUI's Lora extension applies for a ``<lora:NAME:W>`` tag: its list
    (``networks.available_networks``, by name and alias), else a ``NAME.safetensors`` under ``lora_dir``; None."""
    networks = sys.modules.get("networks")
    for table in ("available_networks", "available_network_aliases"):
        entry = (getattr(networks, table, None) or {}).get(name)
        if getattr(entry, "filename", None):
            return str(entry.filename)
    if "/" in name or "\\" in name or name in (".", "..") or not Path(lora_dir).is_dir():
        return None
    from lib_profile.lora.tags import glob_escape

    hits = sorted(p for p in Path(lora_dir).rglob(f"{glob_escape(name)}.safetensors") if p.is_file())
    return str(hits[0]) if hits else None


def tagged_files(prompts: list[str], lora_dir: Path) -> list[str]:
    """The files of the LoRAs the prompts' ``<lora:NAME:W>`` tags name, as the WebUI's Lora extension finds them
    (:func:`find`); names it does not know are left to it ("Lora not found" in the pass's comments)."""
    from lib_profile.prompts.parse import extract_networks

    names = {n.name for text in prompts for n in extract_networks(text or "")[1] if n.kind in ("lora", "lyco")}
    return [f for f in (find(name, lora_dir) for name in sorted(names)) if f]


def check_family(files: list[str], family: str) -> None:
    """HostError when one of the LoRA ``files`` is for another model family than the checkpoint's ``family``: an
    SD1.5 LoRA with an SDXL checkpoint, or the reverse (its metadata, key names or text width say so:
    :func:`lib_profile.lora.family.lora_file_family`, the header alone is read). The WebUI's Lora extension would
    otherwise apply the layers whose names happen to match, or fail in its console."""
    from lib_profile.families import check_compatible
    from lib_profile.hosts.base import HostError
    from lib_profile.lora.family import lora_file_family

    for path in dict.fromkeys(files):
        problem = check_compatible(family, lora_family=lora_file_family(path), lora_name=Path(path).stem)
        if problem:
            raise HostError(problem)
