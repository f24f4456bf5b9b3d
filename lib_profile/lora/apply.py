"""Apply kohya LoRA files to diffusers/transformers modules by merging their deltas, and undo it.

Merging is what the WebUI does (weights changed in place, originals kept): generation then runs
at full speed, and restoring the saved originals gives the model back bit for bit. DoRA files (a
``dora_scale`` per module) are merged as A1111 1.10 merges them (``network.py``,
``apply_weight_decompose``). LyCORIS LoHa/LoKr/LoCon files are refused with a clear message. Every
file is read and checked against the model (:mod:`lib_profile.lora.family`) before any weight changes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lib_profile.families import SD15
from lib_profile.hosts.base import HostError
from lib_profile.lora.family import check_fit
from lib_profile.lora.keys import module_table

_PARTS = ("lora_down.weight", "lora_up.weight", "alpha", "lora_mid.weight", "dora_scale")
_LYCORIS = {"hada_w1_a": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr", "lokr_w2": "LoKr", "lokr_w2_a": "LoKr",
            "oft_blocks": "OFT", "oft_diag": "OFT", "diff": "full-weight (diff)", "w_norm": "norm"}


@dataclass
class LoraDelta:
    module_key: str
    down: Any
    up: Any
    alpha: float | None
    dora_scale: Any = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, weight_shape) -> Any:
        """``up @ down * alpha / rank`` as a float32 tensor of ``weight_shape`` (at weight 1; no DoRA)."""
        scale = (self.alpha / self.rank) if self.alpha is not None else 1.0
        up = self.up.flatten(1).float()
        down = self.down.flatten(1).float()
        return ((up @ down) * scale).reshape(weight_shape)

    def merged_delta(self, weight) -> Any:
        """What to add to ``weight`` (the layer's current weight) at LoRA weight 1, float32: :meth:`delta`, or for
        DoRA A1111 1.10's ``apply_weight_decompose``: ``(W + d) * dora_scale / norm(W + d) - W``, the norm taken
        over all but dim 1 (per input channel, shape ``(1, in, 1...)``), broadcast against ``dora_scale`` as
        the file holds it."""
        import torch

        orig = weight.detach().float()
        updown = self.delta(weight.shape).to(orig.device)
        if self.dora_scale is None:
            return updown
        merged = updown + orig
        norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
                .reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1))
        scale = self.dora_scale.to(device=orig.device, dtype=torch.float32)
        return merged * (scale / norm) - orig


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
        kinds = {_LYCORIS[p] for p in parts if p in _LYCORIS}
        if kinds:
            raise HostError(f"LoRA {path.name} is a LyCORIS {'/'.join(sorted(kinds))} file ({module}); the diffusers "
                            "host applies kohya LoRA and DoRA files only: use it in the WebUI, or a plain LoRA")
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            continue
        if "lora_mid.weight" in parts:
            raise HostError(f"LoRA {path.name}: LoCon/mid-weight modules are not supported ({module})")
        alpha = parts.get("alpha")
        deltas.append(LoraDelta(module, parts["lora_down.weight"], parts["lora_up.weight"],
                                float(alpha) if alpha is not None else None, parts.get("dora_scale")))
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


def prepare(loras: list[tuple[str | Path, float]], unet, text_encoder, text_encoder_2=None,
            family: str = SD15.name) -> tuple[list[tuple[list, float]], list[str]]:
    """Read every (file, weight) with a non-zero weight and check it against the model, changing nothing:
    ``([(matched (delta, module) pairs, weight) per LoRA], notes)``. HostError for a file that cannot be read
    or is for another model family (:func:`lib_profile.lora.family.check_fit`). ``text_encoder_2`` and
    ``family``: SDXL's second encoder and the model's family name."""
    active = [(p, w) for p, w in loras if w != 0]
    if not active:
        return [], []
    table = module_table(unet, text_encoder, text_encoder_2)
    width = (dict(unet.config).get("cross_attention_dim") if unet is not None else None)
    width = width if isinstance(width, int) else None
    plans, notes = [], []
    for path, weight in active:
        deltas, meta = read_lora(path)
        matched, note = check_fit(Path(path).stem, deltas, table, meta, width, family)
        plans.append((matched, weight))
        if note:
            notes.append(note)
    return plans, notes


def check(loras: list[tuple[str | Path, float]], unet, text_encoder, text_encoder_2=None,
          family: str = SD15.name) -> list[str]:
    """:func:`prepare` for its verdict only: the notes, or HostError."""
    return prepare(loras, unet, text_encoder, text_encoder_2, family)[1]


@contextmanager
def applied(loras: list[tuple[str | Path, float]], unet, text_encoder, text_encoder_2=None,
            family: str = SD15.name) -> Iterator[list[str]]:
    """Merge each (file, weight) into ``unet``/``text_encoder`` for the block; restore on exit.

    Every file is read and checked first (HostError before any weight changes). Yields the notes, one per
    LoRA some of whose modules matched no layer ("40 of 128 modules of x matched no layer ..."); the WebUI
    skips those silently."""
    import torch

    plans, notes = prepare(loras, unet, text_encoder, text_encoder_2, family)
    backups: dict[int, tuple[Any, Any]] = {}
    try:
        with torch.no_grad():
            for matched, weight in plans:
                for d, module in matched:
                    if id(module) not in backups:
                        backups[id(module)] = (module, module.weight.detach().clone())
                    w = module.weight
                    w.add_((d.merged_delta(w) * weight).to(device=w.device, dtype=w.dtype))
        yield notes
    finally:
        with torch.no_grad():
            for module, original in backups.values():
                module.weight.copy_(original)
