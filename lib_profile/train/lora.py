"""Trainable LoRA layers on diffusers/transformers models, and their kohya-format export.

A :class:`LoRALinear` wraps a frozen ``nn.Linear``: ``y = W x + (alpha / rank) * up(down(x))`` with
``up`` starting at zero, so a fresh LoRA changes nothing. Names follow the modules' own paths, which
give the kohya keys A1111 and Forge load (SD1.5: ``lora_unet_<diffusers path>``, ``lora_te_<CLIP path>``; SDXL:
``lora_unet_<SGM path>``, ``lora_te1_``/``lora_te2_``: the key functions of :mod:`lib_profile.lora.keys`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from lib_profile.lora.keys import te_module_key, unet_module_key

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")
TEXT = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = self.alpha / rank
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(base.in_features)
            self.down.weight.copy_(torch.rand(self.down.weight.shape, generator=generator) * 2 * bound - bound)
            self.up.weight.zero_()
        self.down.to(base.weight.device)
        self.up.to(base.weight.device)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype) * self.scale


def _targets(model: nn.Module, suffixes: Iterable[str]) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and any(name.endswith(s) for s in suffixes)]


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, (nn.ModuleList, nn.Sequential)):
        parent[int(child)] = new
    else:
        setattr(parent, child, new)


def inject(unet: nn.Module, text_encoder: nn.Module | None, rank: int, alpha: float, seed: int,
           feed_forward: bool = False, train_text: bool = False, *,
           unet_key: Callable[[str], str] = unet_module_key,
           text_encoders: Optional[Sequence[tuple[nn.Module, Callable[[str], str]]]] = None) -> dict[str, LoRALinear]:
    """Wrap the targeted layers with LoRA; returns {kohya module key: layer} in a fixed order.

    ``unet_key``: diffusers module path -> kohya key (SD1.5's by default); ``text_encoders``: ``(model, key
    function)`` pairs whose attention trains when ``train_text`` (default: ``text_encoder`` with SD1.5's
    ``lora_te_`` keys)."""
    gen = torch.Generator().manual_seed(seed)
    layers: dict[str, LoRALinear] = {}
    suffixes = ATTENTION + (FEED_FORWARD if feed_forward else ())
    for name in _targets(unet, suffixes):
        layer = LoRALinear(unet.get_submodule(name), rank, alpha, gen)
        _replace(unet, name, layer)
        layers[unet_key(name)] = layer
    if text_encoders is None:
        text_encoders = [(text_encoder, te_module_key)] if text_encoder is not None else []
    if train_text:
        for model, key in text_encoders:
            for name in _targets(model, TEXT):
                layer = LoRALinear(model.get_submodule(name), rank, alpha, gen)
                _replace(model, name, layer)
                layers[key(name)] = layer
    return layers


def remove(unet: nn.Module, *text_encoders: nn.Module | None) -> None:
    """Put the original layers back."""
    for model in (unet, *text_encoders):
        if model is None:
            continue
        for name, module in list(model.named_modules()):
            if isinstance(module, LoRALinear):
                _replace(model, name, module.base)


def parameters(layers: dict[str, LoRALinear]) -> list[nn.Parameter]:
    return [p for layer in layers.values() for p in (layer.down.weight, layer.up.weight)]


def kohya_state(layers: dict[str, LoRALinear]) -> dict[str, torch.Tensor]:
    """The kohya tensors: ``<key>.lora_down.weight``, ``<key>.lora_up.weight``, ``<key>.alpha``."""
    out: dict[str, torch.Tensor] = {}
    for key, layer in layers.items():
        out[f"{key}.lora_down.weight"] = layer.down.weight.detach().float().cpu().contiguous()
        out[f"{key}.lora_up.weight"] = layer.up.weight.detach().float().cpu().contiguous()
        out[f"{key}.alpha"] = torch.tensor(layer.alpha)
    return out


def load_kohya_state(layers: dict[str, LoRALinear], state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for key, layer in layers.items():
            layer.down.weight.copy_(state[f"{key}.lora_down.weight"])
            layer.up.weight.copy_(state[f"{key}.lora_up.weight"])


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Average several LoRAs by their full deltas (up @ down), re-factored at the same rank.

    Averaging up and down separately would not average the deltas; the delta average is re-split
    with an SVD, exact when the rank allows it."""
    if len(states) == 1:
        return dict(states[0])
    out: dict[str, torch.Tensor] = {}
    keys = [k[: -len(".lora_down.weight")] for k in states[0] if k.endswith(".lora_down.weight")]
    for key in keys:
        rank = states[0][f"{key}.lora_down.weight"].shape[0]
        delta = sum(s[f"{key}.lora_up.weight"] @ s[f"{key}.lora_down.weight"] for s in states) / len(states)
        u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
        root = sv[:rank].sqrt()
        out[f"{key}.lora_up.weight"] = (u[:, :rank] * root).contiguous()
        out[f"{key}.lora_down.weight"] = (root[:, None] * vh[:rank]).contiguous()
        out[f"{key}.alpha"] = torch.tensor(float(rank))  # keeps alpha/rank = 1, as the deltas were scaled in
        scale = float(states[0][f"{key}.alpha"]) / rank
        out[f"{key}.lora_up.weight"] *= scale
    return out


def network_dims(state: dict[str, torch.Tensor]) -> tuple[int, float]:
    """``(rank, alpha)`` as the tensors of a kohya LoRA state hold them (``lora_down`` rows, ``.alpha``): the
    values ``ss_network_dim`` / ``ss_network_alpha`` must state. The most common pair if layers differ."""
    from collections import Counter

    pairs = Counter()
    for key, value in state.items():
        if key.endswith(".lora_down.weight"):
            base = key[: -len(".lora_down.weight")]
            rank = int(value.shape[0])
            alpha = float(state[f"{base}.alpha"]) if f"{base}.alpha" in state else float(rank)
            pairs[(rank, alpha)] += 1
    if not pairs:
        raise ValueError("the LoRA state has no lora_down weights")
    return pairs.most_common(1)[0][0]


def metadata_strings(meta: dict[str, Any]) -> dict[str, str]:
    import json

    return {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
