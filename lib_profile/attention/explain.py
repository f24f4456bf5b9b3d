"""Explain a portrait: generate it (same seed and settings) with DAAM recording, then word heat maps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lib_profile import paths
from lib_profile.attention.daam import DaamRecorder, TokenMap, overlay
from lib_profile.hosts.base import Host, HostError, RunControl, Txt2ImgRequest


@dataclass
class Explanation:
    image: Image.Image
    maps: dict[str, np.ndarray]  # word -> (h, w) in 0..1
    words: list[str]  # every word of the prompt one can ask about
    seed: int
    sampling_pass: str = "first"  # which pass the maps belong to: first, hires (fix), or a plan stage's kind
    infotext: str = ""  # the generation's infotext, when it was one txt2img call
    summed: dict = field(default_factory=dict)  # what the maps sum: steps, evaluations, layers (DaamRecorder.summed)
    notes: list[str] = field(default_factory=list)  # what the run did not do as asked (LoRA modules matching no layer)

    def mask(self, word: str, threshold: float = 0.4) -> Image.Image:
        return Image.fromarray(((self.maps[word] > threshold) * 255).astype(np.uint8), "L")

    def overlays(self) -> dict[str, Image.Image]:
        return {w: overlay(self.image, m, w) for w, m in self.maps.items()}


def tokenizer():
    from lib_profile.prompts.tokenizer import load_tokenizer

    return load_tokenizer(str(paths.tokenizer_dir()))


def recording(host: Host, prompt: str, words: list[str], layers, steps, sampling_pass: int = 0):
    """The prompt's tokens as the host reads them, each wanted word's positions, and a recorder for them.
    HostError for a prompt that changes with the step (``[a:b:when]``, ``[a|b]``): its words move between steps."""
    from lib_profile.prompts.schedule import refuse_scheduled

    host.check_attention_control("Explain (DAAM word maps)")
    refuse_scheduled(prompt, "Explain (DAAM word maps)")
    tok = tokenizer()
    tokens = TokenMap.for_host(host, tok, prompt)
    wanted = {w: tokens.positions(tok, w) for w in dict.fromkeys(w.strip() for w in words if w.strip())}
    if not wanted:
        raise HostError(f"Choose words to explain; the prompt's words are: {', '.join(tokens.words())}")
    recorder = DaamRecorder(positions=[p for ps in wanted.values() for p in ps], layers=layers, steps=steps,
                            sampling_pass=sampling_pass)
    return tokens, wanted, recorder


def check_hires_pass(req: Txt2ImgRequest, hires_pass: bool) -> None:
    """Asking for the hires pass's maps needs a request made with hires fix."""
    if hires_pass and not req.hires:
        raise HostError("There is no hires fix pass to explain: set hires_scale above 1 (for a new prompt, in its "
                        "settings, e.g. {\"hires_scale\": 2}), or explain the first pass")


def explain(host: Host, req: Txt2ImgRequest, words: list[str], layers: Optional[tuple[int, int]] = None,
            steps: Optional[tuple[int, int]] = None, control: Optional[RunControl] = None,
            hires_pass: bool = False) -> Explanation:
    """Make the image of ``req`` (one image) and the DAAM map of each of ``words``: of its first sampling pass,
    or with ``hires_pass`` of its hires fix pass (``steps`` then counts that pass's steps)."""
    if req.batch_size != 1:
        raise HostError("Explain makes one image at a time (batch size 1)")
    check_hires_pass(req, hires_pass)
    tokens, wanted, recorder = recording(host, req.prompt, words, layers, steps, int(hires_pass))
    base = control or RunControl()
    result = host.txt2img(req, RunControl(base.on_step, base.should_interrupt, recorder))
    image = result.images[0]
    maps = {w: recorder.word_map(ps, image.size) for w, ps in wanted.items()}
    return Explanation(image, maps, tokens.words(), result.seeds[0], "hires" if hires_pass else "first",
                       result.infotexts[0] if result.infotexts else "", recorder.summed(), run_notes(result.params))


def save(explanation: Explanation, out: str | Path, threshold: Optional[float] = None) -> dict:
    """``image.png`` (with the generation's infotext: DAAM leaves the image as a plain generation makes it, so
    PNG Info -> txt2img makes it again), ``<word>.png`` overlays (and ``<word>-mask.png`` with a threshold),
    ``explain.json``."""
    from lib_profile.infotext import save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if explanation.infotext:
        save_png(explanation.image, out / "image.png", explanation.infotext)
    else:
        explanation.image.save(out / "image.png")
    files = {}
    for i, (word, picture) in enumerate(explanation.overlays().items()):
        name = f"{i:02d}-{''.join(c if c.isalnum() else '_' for c in word)[:40]}"
        picture.save(out / f"{name}.png")
        np.save(out / f"{name}.npy", explanation.maps[word].astype(np.float32))
        files[word] = {"overlay": f"{name}.png", "map": f"{name}.npy"}
        if threshold is not None:
            explanation.mask(word, threshold).save(out / f"{name}-mask.png")
            files[word]["mask"] = f"{name}-mask.png"
    report = {"image": "image.png", "seed": explanation.seed, "pass": explanation.sampling_pass, "words": files,
              "prompt_words": explanation.words, "summed": explanation.summed, "notes": explanation.notes}
    (out / "explain.json").write_text(json.dumps(report, indent=1), "utf-8")
    return report


def explain_stage(host: Host, plan, seed: int, stage_index: int, words: list[str],
                  layers: Optional[tuple[int, int]] = None, steps: Optional[tuple[int, int]] = None,
                  control: Optional[RunControl] = None) -> Explanation:
    """The word maps of one later pass of a studio portrait (a detail or refine pass), made again from its
    plan and seed; a detail pass's maps are placed on the face box it repainted."""
    from lib_profile.studio.run import replay, stage_prompt

    stage = plan.stages[stage_index] if 0 <= stage_index < len(plan.stages) else None
    if stage is None:
        raise HostError(f"The plan has no stage {stage_index}")
    tokens, wanted, recorder = recording(host, stage_prompt(plan, stage), words, layers, steps)
    base = control or RunControl()
    image, info = replay(plan, host, seed, stage_index, RunControl(base.on_step, base.should_interrupt, recorder),
                         base)
    if stage.kind == "detail" and not info.get("faces"):
        raise HostError("No face was found at that point, so the detail pass did not run: nothing to explain")
    region = info.get("region")
    maps = {}
    for word, positions in wanted.items():
        if region:
            x0, y0, x1, y1 = (int(v) for v in region)
            full = np.zeros((image.height, image.width), np.float32)
            full[y0:y1, x0:x1] = recorder.word_map(positions, (x1 - x0, y1 - y0))
            maps[word] = full
        else:
            maps[word] = recorder.word_map(positions, image.size)
    return Explanation(image, maps, tokens.words(), seed, stage.kind, summed=recorder.summed(),
                       notes=run_notes(info.get("params") or {}))


def run_notes(params: dict) -> list[str]:
    """What a host's run did not do as asked, from its params: LoRA modules that matched no layer
    (``lora_notes``) and the host's own notes (``notes``: e.g. a missing ControlNet model)."""
    return list(dict.fromkeys([*(params.get("lora_notes") or []), *(params.get("notes") or [])]))
