"""Drive an already running A1111 or Forge that has an SDXL checkpoint loaded (selected) through Profile Studio's
SDXL path over HTTP, and print a table of what each step did.

    python tests/real_webui/sdxl.py --url http://127.0.0.1:7860 [--train] [--sd15-lora NAME] [--size 256]

Steps: the extension's version and the WebUI's selected checkpoint; a plain WebUI txt2img at ``--size`` px (2
steps); an identity with six sample selfies; with ``--train`` a face LoRA trained by the extension's trainer process
on the WebUI's SDXL checkpoint file (``--train-steps`` steps at ``--size`` px), checked to carry kohya's SDXL keys
(``/sdapi/v1/loras`` metadata: ``ss_base_model_version`` sdxl); a portrait job at ``--size`` px, 2 steps, no
face detail/refine/upscale (random weights draw no face), its infotext carrying the LoRA tag when one was trained,
and then the same portrait at LoRA weight 0, which must differ (the WebUI applied the trained LoRA); with ``--pose``
the portrait with a pose, through the WebUI's SDXL pose ControlNet found by its usual file name (its infotext must
name the unit, and the picture must differ from the unposed one);
the portrait explained (DAAM maps of "sweater" and "red") and edited (Prompt-to-Prompt, red -> blue); real photos
inverted on the WebUI's SDXL model (Direct Inversion, 2 steps, 128 px): with ``--train`` one of the identity's
photos restyled keeping the person (their LoRA), and an uploaded photo edited (red -> blue) and explained; with
``--sd15-lora NAME`` (an SD1.5 LoRA in
the WebUI's Lora folder) a portrait whose prompt tags it refused (400) naming both families; with ``--sdxl-lora
NAME`` (an SDXL LoRA there) the portrait again with its tag, which must name it and change the picture (run
last: the heaviest step). Last, the identity is deleted. It builds nothing and downloads nothing: load the SDXL checkpoint in the WebUI first (its checkpoint menu,
or ``sd_model_checkpoint`` in config.json). Exit status 0 when no step failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import re
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.real_webui.smoke import INVERSION, Skip, Smoke  # noqa: E402

SLUG = "sdxl-check"
PROMPT = "studio portrait photo of ohwx woman in a red sweater"
OFF = {"detail": False, "detail2": False, "refine": False, "upscale": False}
POSE = "frontal_shoulders"


class SdxlCheck(Smoke):
    name, slug = "SDXL Check", SLUG
    def __init__(self, url: str, size: int, train_steps: int, sd15_lora: Optional[str],
                 sdxl_lora: Optional[str] = None, **kw):
        super().__init__(url, **kw)
        self.size, self.train_steps, self.sd15_lora, self.sdxl_lora = size, train_steps, sd15_lora, sdxl_lora
        self.skip_plain, self.pose = False, False

    def checkpoint(self) -> str:
        options = self.ok(self.http.get(f"{self.url}/sdapi/v1/options"))
        return f"selected {options.get('sd_model_checkpoint')}"

    def plain(self) -> str:
        body = {"prompt": "a photo of a red car", "steps": 2, "width": self.size, "height": self.size, "seed": 42,
                "sampler_name": "Euler", "cfg_scale": 7}
        data = self.ok(self.http.post(f"{self.url}/sdapi/v1/txt2img", json=body))
        from PIL import Image

        picture = Image.open(io.BytesIO(base64.b64decode(data["images"][0].split(",", 1)[-1])))
        return f"{picture.width}x{picture.height}; {_info_model(data)}"

    def train(self) -> str:
        options = {"steps": self.train_steps, "resolution": self.size, "batch_size": 1, "validation_images": 0,
                   "save_every": self.train_steps, "log_every": 1, "select": "last", "device": "cpu",
                   "low_memory": True}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/train", json=options), 202))
        name = job["result"]["lora"]
        self.state["lora"] = name
        listed = {x["name"]: x for x in self.ok(self.http.get(f"{self.url}/sdapi/v1/loras"))}
        if name not in listed:
            raise AssertionError(f"{name} is not in /sdapi/v1/loras")
        meta = listed[name].get("metadata") or {}
        if "sdxl" not in str(meta.get("ss_base_model_version", "")):
            raise AssertionError(f"ss_base_model_version is {meta.get('ss_base_model_version')!r}, not SDXL's")
        return f"{self.train_steps} steps at {self.size} px -> {name}, listed, ss_base_model_version " \
               f"{meta.get('ss_base_model_version')}"

    def generate(self) -> str:
        body = {"count": 1, "seed": 5, "prompt": PROMPT, "tone": "neutral", "switches": OFF,
                "settings": {"width": self.size, "height": self.size, "steps": 2}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body), 202))
        first = job["result"]["images"][0]
        self.state["portrait"] = (job["id"], first["file"], job["links"])
        picture = self.image(job["links"]["image0"])
        text = picture.text.get("parameters", "")
        lora = self.state.get("lora")
        if lora and f"<lora:{lora}:" not in text:
            raise AssertionError("the portrait's infotext does not carry the identity's LoRA tag")
        if "Model: sdxl" not in text and "sdxl" not in text.lower():
            raise AssertionError(f"the infotext names no SDXL model: {text[-200:]}")
        stages = ", ".join(f"{s['stage'].split(':')[-1]} {s['status']}" for s in first.get("stages", []))
        return (f"{picture.width}x{picture.height}" + (f", LoRA {lora} in infotext" if lora else "")
                + f"; stages: {stages}; infotext tail: {text.splitlines()[-1][-120:]}")

    def trained_lora_counts(self) -> str:
        """The identity's portrait again at LoRA weight 0 (same seed): it must differ from the one at the default
        weight, so the WebUI applied the LoRA our trainer wrote (an untrained LoRA is exactly zero)."""
        import numpy as np

        body = {"count": 1, "seed": 5, "prompt": PROMPT, "tone": "neutral", "switches": OFF, "lora_weight": 0,
                "settings": {"width": self.size, "height": self.size, "steps": 2}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body), 202))
        zero = np.asarray(self.image(job["links"]["image0"]).convert("RGB"), np.int16)
        base = np.asarray(self.image(self.state["portrait"][2]["image0"]).convert("RGB"), np.int16)
        diff = np.abs(zero - base)
        if not diff.any():
            raise AssertionError("the portrait at LoRA weight 0 is the one at the default weight: the trained "
                                 "LoRA changed nothing")
        return f"differs from weight 0: mean |diff| {diff.mean():.2f}/255, {(diff > 0).mean():.0%} of values"

    def generate_posed(self) -> str:
        """The portrait again (same seed) with a pose: the job picks the WebUI's SDXL pose ControlNet by its usual
        file name, the WebUI's infotext names the unit, and the picture differs from the one without the pose."""
        import numpy as np

        body = {"count": 1, "seed": 5, "prompt": PROMPT, "tone": "neutral", "switches": OFF, "pose": POSE,
                "settings": {"width": self.size, "height": self.size, "steps": 2}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body), 202))
        picture = self.image(job["links"]["image0"])
        text = picture.text.get("parameters", "")
        units = re.findall(r'ControlNet \d+: "[^"]*"', text)  # the WebUI's unit text, whole
        if not units:
            raise AssertionError(f"the infotext names no ControlNet unit: {text[-400:]}")
        base = self.image(self.state["portrait"][2]["image0"]).convert("RGB")
        diff = np.abs(np.asarray(picture.convert("RGB"), np.int16) - np.asarray(base, np.int16))
        if not diff.any():
            raise AssertionError("the posed picture is the one without the pose")
        notes = [n for i in job["result"]["images"] for s in i.get("stages", []) for n in s.get("notes", [])]
        return (f"{picture.width}x{picture.height}; infotext: {'; '.join(units)[:160]}; differs from the unposed "
                f"portrait (mean |diff| {diff.mean():.1f}/255); notes: {notes[:2]}")

    def generate_with(self, lora: str) -> str:
        """The same portrait with ``<lora:LORA:1>`` (an SDXL LoRA in the WebUI's Lora folder) in its prompt: the
        infotext names it and the picture differs from the one without (same seed): the WebUI applied it."""
        import numpy as np

        body = {"count": 1, "seed": 5, "prompt": f"{PROMPT} <lora:{lora}:1>", "tone": "neutral", "switches": OFF,
                "settings": {"width": self.size, "height": self.size, "steps": 2}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body), 202))
        picture = self.image(job["links"]["image0"])
        text = picture.text.get("parameters", "")
        if f"<lora:{lora}:" not in text:
            raise AssertionError(f"the infotext lacks the LoRA tag: {text[:300]}")
        base = self.image(self.state["portrait"][2]["image0"]).convert("RGB")
        diff = np.abs(np.asarray(picture.convert("RGB"), np.int16) - np.asarray(base, np.int16))
        if not diff.any():
            raise AssertionError("the picture with the LoRA is the one without it")
        stages = ", ".join(f"{s['stage'].split(':')[-1]} {s['status']}" for s in job["result"]["images"][0]
                           .get("stages", []))
        return (f"{picture.width}x{picture.height}; infotext has the tag; differs from the portrait "
                f"without it (mean |diff| {diff.mean():.1f}/255); stages: {stages}")

    def sd15_lora_refused(self) -> str:
        if not self.sd15_lora:
            raise Skip("no --sd15-lora given")
        body = {"count": 1, "seed": 5, "prompt": f"{PROMPT} <lora:{self.sd15_lora}:0.8>", "switches": OFF,
                "settings": {"width": self.size, "height": self.size, "steps": 2}}
        r = self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body)
        if r.status_code != 400 or "is for SD1.5 and the checkpoint is SDXL" not in r.text:
            raise AssertionError(f"HTTP {r.status_code}: {r.text[:200]}")
        return f"400: {r.json().get('detail', r.text)[:150]}"

    def run(self) -> int:
        if not self.step("version", self.version):
            return self.table()
        self.step("checkpoint", self.checkpoint)
        if not self.skip_plain:
            self.step(f"plain txt2img {self.size} px", self.plain)
        for name, run in (("identity", self.identity), ("upload 6 selfies", self.upload)):
            if not self.step(name, run):
                return self.table()
        if self.train_steps:
            self.step("train (SDXL)", self.train)
        self.step("generate", self.generate)
        if self.train_steps:
            self.step("trained LoRA changes the portrait", self.trained_lora_counts)
        if self.pose:
            self.step(f"generate with the pose {POSE} (SDXL ControlNet)", self.generate_posed)
        self.step("explain the portrait", self.explain)
        self.step("edit the portrait (red -> blue)", self.edit)
        photos = [("edit a photo (direct)", self.edit_photo), ("explain a photo (direct)", self.explain_photo)]
        if "lora" in self.state:
            photos.insert(0, ("restyle a photo (direct)", lambda: self.restyle(INVERSION)))
        for name, run in photos:  # each on its own: one failing stops no other
            self.step(name, run)
        self.step("SD1.5 LoRA refused", self.sd15_lora_refused)
        if self.sdxl_lora:  # last: the heaviest step (the WebUI keeps a copy of every weight a LoRA changes)
            self.step(f"generate with <lora:{self.sdxl_lora}:1>", lambda: self.generate_with(self.sdxl_lora))
        self.step("delete identity", self.delete_sdxl)
        return self.table()

    def delete_sdxl(self) -> str:
        removed = self.ok(self.http.delete(f"{self.base}/identities/{self.slug}")).get("removed", [])
        return f"removed {len(removed)} item(s)"


def _info_model(data: dict) -> str:
    import json

    try:
        info = json.loads(data.get("info") or "{}")
    except ValueError:
        return ""
    return f"model {info.get('sd_model_name')} [{info.get('sd_model_hash')}]"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--auth")
    parser.add_argument("--size", type=int, default=256, help="portrait and training side in px (default 256)")
    parser.add_argument("--train", action="store_true", help="train an SDXL face LoRA first (slow on a CPU)")
    parser.add_argument("--train-steps", type=int, default=1)
    parser.add_argument("--sd15-lora", help="an SD1.5 LoRA's name in the WebUI's Lora folder, to see it refused")
    parser.add_argument("--sdxl-lora", help="an SDXL LoRA's name in the WebUI's Lora folder: a portrait with its tag")
    parser.add_argument("--skip-plain", action="store_true", help="no plain WebUI txt2img first")
    parser.add_argument("--pose", action="store_true",
                        help="a portrait with a pose too (an SDXL pose ControlNet in the WebUI's ControlNet folder)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    check = SdxlCheck(args.url, args.size, args.train_steps if args.train else 0, args.sd15_lora, args.sdxl_lora, auth=args.auth,
                      timeout=args.timeout)
    check.skip_plain, check.pose = args.skip_plain, args.pose
    return check.run()


if __name__ == "__main__":
    sys.exit(main())
