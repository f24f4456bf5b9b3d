"""WebUI-style infotext ("parameters" PNG text) for a generated image, and writing it into PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from PIL import Image, PngImagePlugin


def _quote(value: Any) -> str:
    text = str(value)
    if "," in text or ":" in text or '"' in text or "\n" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def infotext(params: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """``prompt\\nNegative prompt: ...\\nSteps: 20, Sampler: Euler a, ...`` as the WebUI writes it."""
    fields: dict[str, Any] = {
        "Steps": params.get("steps"),
        "Sampler": params.get("sampler"),
        "Schedule type": params.get("scheduler"),
        "CFG scale": params.get("cfg_scale"),
        "Seed": params.get("seed"),
        # the first pass's size, as the WebUI writes it (a hires fix pass is its "Hires upscale" times that)
        "Size": "x".join(str(v) for v in params.get("first_pass_size") or (params.get("width"), params.get("height")))
        if params.get("width") else None,
        "Model hash": params.get("model_hash"),
        "Model": params.get("model"),
        "Denoising strength": params.get("denoising_strength") if params.get("kind") != "txt2img" else None,
        "Clip skip": params.get("clip_skip") if (params.get("clip_skip") or 1) > 1 else None,
    }
    if params.get("kind") == "txt2img" and (params.get("hires_scale") or 1) > 1:  # the WebUI's hires fix fields
        fields.update({"Denoising strength": params.get("hires_denoising"), "Hires upscale": params["hires_scale"],
                       "Hires steps": params.get("hires_steps") or None, "Hires upscaler": params.get("hires_upscaler")})
    loras = params.get("loras") or []
    if loras:
        fields["Lora weights"] = ", ".join(f"{Path(x['path']).stem}: {x['weight']}" for x in loras)
    for i, unit in enumerate(params.get("controlnets") or []):
        fields[f"ControlNet {i}"] = (f"Kind: {unit['kind']}, Model: {Path(unit['model']).stem}, Weight: {unit['weight']}, "
                                     f"Guidance Start: {unit['guidance_start']}, Guidance End: {unit['guidance_end']}")
    if params.get("lora_notes"):  # LoRA modules that matched no layer: the file says what was not applied
        fields["LoRA notes"] = "; ".join(params["lora_notes"])
    fields.update(extra or {})
    prompt = params.get("prompt") or ""
    for lora in loras:
        tag = f"<lora:{Path(lora['path']).stem}:{lora['weight']}>"
        if tag not in prompt:
            prompt = f"{prompt}, {tag}" if prompt else tag
    lines = [prompt]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None and v != ""))
    return "\n".join(lines)


def save_png(image: Image.Image, path: str | Path, text: str) -> Path:
    """Write a PNG with its infotext in the ``parameters`` chunk, atomically."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    tmp = path.with_name(path.name + ".partial")
    image.save(tmp, format="PNG", pnginfo=info)
    tmp.replace(path)
    return path
