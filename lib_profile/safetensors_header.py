"""What a ``.safetensors`` file says about itself without reading a tensor: its tensor names, its metadata and the
shapes of the tensors asked for, from the format's JSON header (the ``safetensors`` package's lazy ``safe_open``;
format: huggingface/safetensors, "Format"). The family of a checkpoint or a LoRA is read from it
(:mod:`lib_profile.families`), in every host, so nothing is loaded to find out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


@dataclass(frozen=True)
class Header:
    names: list[str]  # the tensor names, in the header's order
    metadata: dict[str, str] = field(default_factory=dict)  # ``__metadata__`` (kohya's ``ss_*`` keys, ...)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # of the names asked for only


def read_header(path: str | Path, shapes_of: Callable[[str], bool] = lambda name: False) -> Optional[Header]:
    """The header of the ``.safetensors`` file at ``path``, with the shape of each tensor whose name ``shapes_of``
    accepts; None for another kind of file (by its suffix), a missing or empty file, or one that is not readable
    safetensors: the load that follows, if any, says what is wrong with it."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        if not path.is_file() or not path.stat().st_size:
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            names = list(handle.keys())
            return Header(names, dict(handle.metadata() or {}),
                          {n: tuple(int(d) for d in handle.get_slice(n).get_shape()) for n in names if shapes_of(n)})
    except Exception:  # noqa: BLE001 - any reader error (a truncated or foreign file, a bad header): not readable
        return None


def tensor_names(path: str | Path) -> Optional[list[str]]:
    """The tensor names of a ``.safetensors`` file (:func:`read_header`); None where it gives none."""
    header = read_header(path)
    return None if header is None else header.names


def checkpoint_file_family(path: str | Path) -> Optional[str]:
    """The family of a ``.safetensors`` checkpoint from its tensor names (:func:`.families.checkpoint_family`:
    ``"SD1.5"``, ``"SDXL"``, ``"SD2"``, ...); None for other files and when the names show no known model."""
    from lib_profile.families import checkpoint_family

    names = tensor_names(path)
    return None if names is None else checkpoint_family(names)
