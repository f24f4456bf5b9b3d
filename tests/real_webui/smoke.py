"""Drive an already running A1111 or Forge (or ``python -m lib_profile serve``) through Profile Studio's whole flow
over HTTP, and print a table of what each step did.

    python tests/real_webui/smoke.py --url http://127.0.0.1:7860 [--auth USER:PASS] [--webui-dir DIR]

Steps: the extension's version; a plain WebUI txt2img (``/sdapi/v1/txt2img``, fixed seed); an identity; six sample
selfies uploaded (multipart); a LoRA trained for a few steps (and listed by ``/sdapi/v1/loras``); a portrait
generated with it; that portrait explained (DAAM) and edited (Prompt-to-Prompt); real photos inverted on the
host's model: one of the identity's photos restyled (Plug-and-Play, keeping the person: their LoRA), an uploaded
photo edited (a word of its caption swapped) and explained (words of its caption), all with the ``direct``
inversion, and the restyle again with ``null-text`` (one iteration); the plain txt2img again,
compared with the first (Profile Studio must leave the WebUI as it found it: no LoRA, hook or setting left
behind); the identity deleted, then a scan for leftovers (its routes, its LoRA in ``/sdapi/v1/loras``, its
files; with ``--webui-dir`` also any file under the WebUI's folder whose path names the identity). Last, the whole
flow in one call (``POST /portraits`` with six base64 selfies and a name in another script: intake, training and a
portrait as one job), checked and deleted the same way.

It builds nothing and downloads nothing: start the WebUI yourself (with ``--api``). Against the standalone
``serve`` the WebUI-only steps say "skipped". Exit status 0 when no step failed. Output: one row per step
(``step | result | seconds | detail``), meant to be pasted into docs/real-webui.md with the date and versions.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the sample selfies ship with the extension
    sys.path.insert(0, str(ROOT))

NAME = "Smoke Check"
SLUG = "smoke-check"
PROMPT = "studio portrait of ohwx woman in a red sweater"
PLAIN = {"prompt": "a photo of a red car", "negative_prompt": "", "steps": 2, "width": 64, "height": 64,
         "seed": 42, "sampler_name": "Euler", "cfg_scale": 7, "batch_size": 1, "n_iter": 1}
TRAIN = {"steps": 4, "resolution": 64, "batch_size": 1, "validate_every": 4, "validation_images": 0,
         "save_every": 4, "log_every": 4, "select": "last", "device": "cpu"}
SETTINGS = {"width": 64, "height": 64, "steps": 4}
# a small inversion (size: the short side), in 2 steps; 128 px as in the recorded real-WebUI runs
INVERSION = {"method": "direct", "steps": 2, "size": 128}
NULL_TEXT = {**INVERSION, "method": "null-text", "null_text_iterations": 1}
CAPTION = "a photo of a woman in a red sweater"
RESTYLE_TARGET = "studio portrait photo of ohwx woman, soft studio light"
ONE_CALL_NAME = "Анна Смоук"  # a name in another script: its slug is transliterated, its display name kept


class Skip(Exception):
    """A step that does not apply to this server (e.g. the WebUI's own txt2img on the standalone serve)."""


class Smoke:
    name, slug = NAME, SLUG  # the identity the check makes and deletes (the slug is the name's)

    def __init__(self, url: str, auth: Optional[str] = None, timeout: float = 1800.0,
                 webui_dir: Optional[Path] = None, tone: str = "warm"):
        self.url = url.rstrip("/")
        self.base = f"{self.url}/sdapi/v1/profile-studio"
        user, _, password = (auth or "").partition(":")
        # a fresh connection per request: uvicorn closes idle keep-alive connections under a long poll
        self.http = httpx.Client(timeout=600, auth=(user, password) if auth else None,
                                 limits=httpx.Limits(max_keepalive_connections=0))
        self.timeout = timeout
        self.tone = tone
        self.webui_dir = webui_dir
        self.rows: list[tuple[str, str, float, str]] = []
        self.state: dict[str, Any] = {}

    # -- plumbing -------------------------------------------------------------------------------------------
    def step(self, name: str, run: Callable[[], str]) -> bool:
        started = time.monotonic()
        try:
            detail, result = run(), "ok"
        except Skip as why:
            detail, result = str(why), "skipped"
        except Exception as exc:  # noqa: BLE001 - every failure is a row of the table, the run goes on
            detail, result = f"{type(exc).__name__}: {exc}", "FAILED"
        self.rows.append((name, result, time.monotonic() - started, " ".join(str(detail).split())[:160]))
        print(f"{name}: {result} - {self.rows[-1][3]}", file=sys.stderr, flush=True)
        return result != "FAILED"

    def ok(self, response: httpx.Response, *codes: int) -> Any:
        if response.status_code not in (codes or (200,)):
            raise AssertionError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json() if "json" in response.headers.get("content-type", "") else response.content

    def wait(self, job: dict) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            job = self.ok(self.http.get(f"{self.base}/jobs/{job['id']}"))
            if job["state"] not in ("queued", "running"):
                if job["state"] != "done":
                    raise AssertionError(f"job {job['kind']} {job['state']}: {job.get('error')}")
                return job
            time.sleep(2)
        raise AssertionError(f"job {job['id']} not done after {self.timeout:.0f} s")

    def image(self, link: str) -> Image.Image:
        return Image.open(io.BytesIO(self.ok(self.http.get(self.url + link))))

    def webui(self) -> bool:
        return self.state.get("host") in ("a1111", "forge")

    # -- steps ----------------------------------------------------------------------------------------------
    def version(self) -> str:
        v = self.ok(self.http.get(f"{self.base}/version"))
        self.state["host"] = v.get("host")
        return f"{v.get('name')} {v.get('version')} on {v.get('host')}"

    def plain_txt2img(self, key: str) -> str:
        if not self.webui():
            raise Skip("not a WebUI: no /sdapi/v1/txt2img")
        data = self.ok(self.http.post(f"{self.url}/sdapi/v1/txt2img", json=PLAIN))
        raw = base64.b64decode(data["images"][0].split(",", 1)[-1])
        pixels = Image.open(io.BytesIO(raw)).convert("RGB")
        self.state[key] = pixels
        return f"{pixels.width}x{pixels.height}, pixels sha256 {hashlib.sha256(pixels.tobytes()).hexdigest()[:12]}"

    def identity(self) -> str:
        self.http.delete(f"{self.base}/identities/{self.slug}")  # a previous run's, if any
        info = self.ok(self.http.post(f"{self.base}/identities", json={"name": self.name, "class_word": "woman"}), 201)
        return f"slug {info['slug']}"

    def upload(self) -> str:
        from lib_profile import sample_photos

        files = []
        for name, picture in sample_photos.selfies()[:6]:
            buf = io.BytesIO()
            picture.save(buf, "JPEG", quality=92)
            files.append(("files", (f"{name}.jpg", buf.getvalue(), "image/jpeg")))
        report = self.ok(self.http.post(f"{self.base}/identities/{self.slug}/photos", files=files))
        if not report.get("ready"):
            raise AssertionError(f"not ready to train: {report.get('counts')}")
        self.state["photo"] = next(p["file"] for p in report["photos"] if p.get("status") == "accepted")
        return f"ready; counts {report.get('counts')}"

    def train(self) -> str:
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/train", json=TRAIN), 202))
        lora = {"name": job["result"]["lora"]}
        self.state["lora"] = lora["name"]
        listed = ""
        if self.webui():
            names = {x["name"] for x in self.ok(self.http.get(f"{self.url}/sdapi/v1/loras"))}
            if lora["name"] not in names:
                raise AssertionError(f"{lora['name']} is not in /sdapi/v1/loras")
            listed = ", listed by /sdapi/v1/loras"
        return f"{TRAIN['steps']} steps -> {lora['name']}{listed}"

    def generate(self) -> str:
        body = {"count": 1, "seed": 5, "prompt": PROMPT, "tone": self.tone, "settings": SETTINGS,
                "switches": {"upscale": False}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/identities/{self.slug}/generate", json=body), 202))
        first = job["result"]["images"][0]
        self.state["portrait"] = (job["id"], first["file"], job["links"])
        picture = self.image(job["links"]["image0"])
        text = picture.text.get("parameters", "")
        if f"<lora:{self.state['lora']}:" not in text:
            raise AssertionError("the portrait's infotext does not carry the identity's LoRA tag")
        stages = ", ".join(f"{s['stage'].split(':')[-1]} {s['status']}" for s in first.get("stages", []))
        return f"{picture.width}x{picture.height}, {self.tone} tone, LoRA tag in infotext; stages: {stages}"

    def explain(self) -> str:
        job_id, image, _links = self.state["portrait"]
        body = {"identity": self.slug, "job": job_id, "image": image, "words": ["sweater", "red"]}
        job = self.wait(self.ok(self.http.post(f"{self.base}/explain", json=body), 202))
        overlay = self.image(job["links"]["overlay:sweater"])
        return f"maps of {', '.join(job['result']['words'])}; overlay {overlay.width}x{overlay.height}"

    def edit(self) -> str:
        job_id, image, _links = self.state["portrait"]
        body = {"identity": self.slug, "job": job_id, "image": image, "mode": "swap", "replace": {"red": "blue"}}
        job = self.wait(self.ok(self.http.post(f"{self.base}/edit", json=body), 202))
        edited = self.image(job["links"]["edited"])
        text = edited.text.get("parameters", "")
        if "blue sweater" not in text or "Prompt-to-Prompt" not in text:
            raise AssertionError("the edited PNG's infotext lacks the edited prompt or the Prompt-to-Prompt field")
        return f"red -> blue; injected {job['result'].get('injected')}"

    # -- real photos (inverted on the host's model) -------------------------------------------------------------
    def pngs(self, job: dict, *names: str) -> str:
        """Each named link of ``job`` is a PNG with an infotext; returns their sizes."""
        sizes = []
        for name in names:
            picture = self.image(job["links"][name])
            if picture.format != "PNG" or not picture.text.get("parameters"):
                raise AssertionError(f"{name} is not a PNG with an infotext")
            sizes.append(f"{name} {picture.width}x{picture.height}")
        return ", ".join(sizes)

    def restyle(self, inversion: dict) -> str:
        body = {"identity": self.slug, "photo": self.state["photo"], "target_prompt": RESTYLE_TARGET, "strength": 0.2,
                "keep_person": True, "inversion": inversion}
        job = self.wait(self.ok(self.http.post(f"{self.base}/restyle", json=body), 202))
        res = job["result"]
        if res.get("method") != inversion["method"] or not res.get("loras") or "identity_similarity" not in res:
            raise AssertionError(f"the result lacks the method, the person's LoRA or the similarity: {res}")
        text = self.image(job["links"]["restyled"]).text.get("parameters", "")
        if not text.startswith(RESTYLE_TARGET) or "Restyle: " not in text or f"<lora:{self.state['lora']}:" not in text:
            raise AssertionError("the restyled PNG's infotext lacks the target prompt, the Restyle field or the LoRA")
        return (f"{inversion['method']} {inversion['steps']} steps; {self.pngs(job, 'photo', 'reconstruction', 'restyled')}"
                f"; LoRA {res['loras'][0]['weight']}, similarity {res['identity_similarity']}")

    def photo_image(self) -> str:
        from lib_profile import sample_photos

        buf = io.BytesIO()
        sample_photos.selfies()[-1][1].save(buf, "JPEG", quality=92)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    def edit_photo(self) -> str:
        body = {"identity": self.slug, "photo_image": self.photo_image(), "caption": CAPTION, "mode": "swap",
                "replace": {"red": "blue"}, "inversion": INVERSION}
        job = self.wait(self.ok(self.http.post(f"{self.base}/edit", json=body), 202))
        res = job["result"]
        text = self.image(job["links"]["edited"]).text.get("parameters", "")
        if res.get("pass") != "photo" or "blue sweater" not in text or "Prompt-to-Prompt" not in text:
            raise AssertionError("not a photo edit, or the edited PNG's infotext lacks the edit")
        return f"uploaded, red -> blue, direct; {self.pngs(job, 'source', 'reconstruction', 'edited')}"

    def explain_photo(self) -> str:
        body = {"identity": self.slug, "photo_image": self.photo_image(), "caption": CAPTION, "words": ["sweater", "red"],
                "inversion": INVERSION}
        job = self.wait(self.ok(self.http.post(f"{self.base}/explain", json=body), 202))
        res = job["result"]
        overlays = [self.image(job["links"][f"overlay:{w}"]) for w in ("sweater", "red")]
        if res.get("pass") != "photo" or set(res.get("words", [])) != {"sweater", "red"}:
            raise AssertionError(f"not a photo's explanation of both words: {res}")
        return (f"uploaded, direct; maps of {', '.join(res['words'])}; overlays "
                f"{', '.join(f'{o.width}x{o.height}' for o in overlays)}; {self.pngs(job, 'photo')}")

    def compare(self) -> str:
        if not self.webui():
            raise Skip("not a WebUI")
        before, after = self.state.get("plain_before"), self.state.get("plain_after")
        if before is None or after is None:
            raise AssertionError("a plain txt2img failed")
        if before.tobytes() != after.tobytes():
            import numpy as np

            diff = np.abs(np.asarray(before, np.int16) - np.asarray(after, np.int16))
            raise AssertionError(f"the plain txt2img changed after Profile Studio ran: max {diff.max()}/255, "
                                 f"mean {diff.mean():.2f}")
        return "identical pixels before and after"

    def delete(self) -> str:
        removed = self.ok(self.http.delete(f"{self.base}/identities/{self.slug}")).get("removed", [])
        return f"removed {len(removed)} item(s)"

    def leftovers(self) -> str:
        found = []
        if self.http.get(f"{self.base}/identities/{self.slug}").status_code != 404:
            found.append("the identity still answers")
        if "portrait" in self.state:
            link = self.state["portrait"][2]["image0"]
            if self.http.get(self.url + link).status_code != 404:
                found.append("its portrait is still served")
        if self.webui() and "lora" in self.state:
            self.http.post(f"{self.url}/sdapi/v1/refresh-loras")
            names = {x["name"] for x in self.ok(self.http.get(f"{self.url}/sdapi/v1/loras"))}
            if self.state["lora"] in names:
                found.append(f"{self.state['lora']} still in /sdapi/v1/loras")
        if self.webui_dir is not None:
            found += [str(p) for p in self.webui_dir.rglob(f"*{self.slug}*") if "extensions" not in p.parts][:5]
        if found:
            raise AssertionError("; ".join(found))
        return "none" + (f" (also scanned {self.webui_dir})" if self.webui_dir else "")

    def one_call(self) -> str:
        """``POST /portraits``: a new person from base64 photos, trained and portrayed in one job."""
        from lib_profile import sample_photos

        images = []
        for name, picture in sample_photos.selfies()[:6]:
            buf = io.BytesIO()
            picture.save(buf, "JPEG", quality=92)
            images.append({"name": f"{name}.jpg", "data": base64.b64encode(buf.getvalue()).decode()})
        body = {"name": ONE_CALL_NAME, "class_word": "woman", "images": images, "count": 1, "seed": 5,
                "prompt": PROMPT, "tone": self.tone, "settings": SETTINGS, "switches": {"upscale": False},
                "train": TRAIN}
        job = self.wait(self.ok(self.http.post(f"{self.base}/portraits", json=body), 202))
        slug, result = job["identity"], job["result"]
        self.state["one_call"] = (slug, job["links"]["image0"], result["lora"]["name"])
        info = self.ok(self.http.get(f"{self.base}/identities/{slug}"))
        if info.get("name") != ONE_CALL_NAME:
            raise AssertionError(f"display name {info.get('name')!r}, not {ONE_CALL_NAME!r}")
        picture = self.image(job["links"]["image0"])
        if f"<lora:{result['lora']['name']}:" not in picture.text.get("parameters", ""):
            raise AssertionError("the portrait's infotext does not carry the new LoRA's tag")
        listed = ""
        if self.webui():
            names = {x["name"] for x in self.ok(self.http.get(f"{self.url}/sdapi/v1/loras"))}
            if result["lora"]["name"] not in names:
                raise AssertionError(f"{result['lora']['name']} is not in /sdapi/v1/loras")
            listed = ", listed by /sdapi/v1/loras"
        return (f"slug {slug}; intake {result['intake']['counts']['accepted']} accepted; LoRA {result['lora']['name']}"
                f"{listed}; portrait {picture.width}x{picture.height}")

    def one_call_delete(self) -> str:
        slug, link, lora = self.state["one_call"]
        self.ok(self.http.delete(f"{self.base}/identities/{slug}"))
        found = [what for what, url in (("the person", f"{self.base}/identities/{slug}"), ("the portrait", self.url + link))
                 if self.http.get(url).status_code != 404]
        if self.webui():
            self.http.post(f"{self.url}/sdapi/v1/refresh-loras")
            if lora in {x["name"] for x in self.ok(self.http.get(f"{self.url}/sdapi/v1/loras"))}:
                found.append(f"{lora} in /sdapi/v1/loras")
        if self.webui_dir is not None:
            found += [str(p) for p in self.webui_dir.rglob(f"*{slug}*") if "extensions" not in p.parts][:5]
        if found:
            raise AssertionError("still there after delete: " + "; ".join(found))
        return "deleted; nothing left"

    def run(self) -> int:
        if not self.step("version", self.version):
            return self.table()
        self.step("plain txt2img (before)", lambda: self.plain_txt2img("plain_before"))
        flow = [("identity", self.identity), ("upload 6 selfies", self.upload), ("train", self.train),
                ("generate", self.generate), ("explain", self.explain), ("edit", self.edit)]
        for name, run in flow:
            if not self.step(name, run):
                break
        photos = [("restyle a photo (direct)", lambda: self.restyle(INVERSION)),
                  ("edit a photo (direct)", self.edit_photo), ("explain a photo (direct)", self.explain_photo),
                  ("restyle a photo (null-text)", lambda: self.restyle(NULL_TEXT))]
        for name, run in photos if "lora" in self.state else []:  # each on its own: one failing stops no other
            self.step(name, run)
        self.step("plain txt2img (after)", lambda: self.plain_txt2img("plain_after"))
        self.step("plain txt2img unchanged", self.compare)
        self.step("delete identity", self.delete)
        self.step("leftover scan", self.leftovers)
        if self.step("one call (POST /portraits)", self.one_call):
            self.step("one call: delete and scan", self.one_call_delete)
        return self.table()

    def table(self) -> int:
        print("| step | result | seconds | detail |\n|---|---|---:|---|")
        for name, result, seconds, detail in self.rows:
            print(f"| {name} | {result} | {seconds:.1f} | {detail.replace('|', '/')} |")
        return 1 if any(r[1] == "FAILED" for r in self.rows) else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the running WebUI, e.g. http://127.0.0.1:7860")
    parser.add_argument("--auth", help="USER:PASS when the WebUI runs with --api-auth")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a job may take (default 1800)")
    parser.add_argument("--webui-dir", type=Path, help="the WebUI's folder, to scan for leftover files")
    parser.add_argument("--tone", default="warm", help="the portrait's tone (default warm, the tab's default). "
                        "A checkpoint with random weights makes NaNs (A1111's NansException) for some prompts; "
                        "another tone changes the prompt")
    args = parser.parse_args(argv)
    return Smoke(args.url, args.auth, args.timeout, args.webui_dir, args.tone).run()


if __name__ == "__main__":
    sys.exit(main())
