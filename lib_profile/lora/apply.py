"""Apply kohya LoRA files to diffusers/transformers modules by merging their deltas, and undo it.

Merging is what the WebUI does (weights changed in place, originals kept): generation then runs
at full speed, and restoring the saved originals gives the model back bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lib_profile.hosts.base import HostError
from lib_profile.lora.keys import module_table

_PARTS = ("lora_down.weight", "lora_up.weight", "alpha", "lora_mid.weight")


@dataclass
class LoraDelta:
    module_key: str
    down: Any
    up: Any
    alpha: float | None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, weight_shape) -> Any:
        scale = (self.alpha / self.rank) if self.alpha is not None else 1.0
        up = self.up.flatten(1).float()
        down = self.down.flatten(1).float()
        return ((up @ down) * scale).reshape(weight_shape)


def read_lora(path: str | Path) -> tuple[list[LoraDelta], dict[str, str]]:
    """The deltas and metadata of a kohya-format LoRA file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HostError(f"LoRA file not found: {path}")
    if path.suffix != ".safetensors":
        raise HostError(f"LoRA {path.name}: only .safetensors LoRA files are read")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001
        raise HostError(f"Cannot read LoRA file {path.name}: {exc}") from exc
    groups: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        module, _, part = key.partition(".")
        groups.setdefault(module, {})[part] = tensor
    deltas = []
    for module, parts in groups.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            continue
        if "lora_mid.weight" in parts:
            raise HostError(f"LoRA {path.name}: LoCon/mid-weight modules are not supported ({module})")
        alpha = parts.get("alpha")
        deltas.append(LoraDelta(module, parts["lora_down.weight"], parts["lora_up.weight"],
                                float(alpha) if alpha is not None else None))
    if not deltas:
        raise HostError(f"LoRA {path.name} holds no lora_down/lora_up pairs: not a kohya-format LoRA")
    return deltas, meta


def read_metadata(path: str | Path) -> dict[str, str]:
    """A LoRA file's safetensors metadata, without loading its tensors ({} when unreadable)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - callers report a missing or broken file themselves
        return {}


@contextmanager
def applied(loras: list[tuple[str | Path, float]], unet, text_encoder) -> Iterator[list[str]]:
    """Merge each (file, weight) into ``unet``/``text_encoder`` for the block; restore on exit.

    Yields the module keys no model layer matched (the WebUI ignores those silently; we report them).
    """
    import torch

    active = [(p, w) for p, w in loras if w != 0]
    if not active:
        yield []
        return
    table = module_table(unet, text_encoder)
    backups: dict[int, tuple[Any, Any]] = {}
    unmatched: list[str] = []
    try:
        with torch.no_grad():
            for path, weight in active:
                deltas, _meta = read_lora(path)
                hits = 0
                for d in deltas:
                    module = table.get(d.module_key)
                    if module is None:
                        unmatched.append(d.module_key)
                        continue
                    hits += 1
                    if id(module) not in backups:
                        backups[id(module)] = (module, module.weight.detach().clone())
                    w = module.weight
                    w.add_((d.delta(w.shape) * weight).to(device=w.device, dtype=w.dtype))
                if hits == 0:
                    raise HostError(f"LoRA {Path(path).name} matches no layer of this SD1.5 model "
                                    "(is it an SDXL or SD2 LoRA?)")
        yield unmatched
    finally:
        with torch.no_grad():
            for module, original in backups.values():
                module.weight.copy_(original)
