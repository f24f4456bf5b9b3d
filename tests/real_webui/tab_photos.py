"""Run the tab's real-photo views in an already running A1111 or Forge through gradio's own API: the handlers the
tab's buttons call, in the WebUI's gradio, with the inputs a user sets (no browser).

    <the WebUI's venv>/bin/python tests/real_webui/tab_photos.py --url http://127.0.0.1:7860

It makes a person over REST ("Tab Check", six sample selfies, no LoRA), then, as the page does on load and on choosing the person, fills the Person list and the photo pickers,
and clicks, by ``fn_index`` found in the
page's ``/config`` from the buttons' ``elem_id``: "6. Restyle"'s Restyle (one of the person's photos, direct
inversion, 4 steps at 128 px, keep the person off), "4. Explain" with the source "photo" (words of the caption) and
"5. Edit" with the source "photo" (a word swap). Each job is waited for over REST, then the tab's "Refresh status"
handler is called with its id and must show its images. The person is deleted at the end. Needs ``gradio_client``
(0.5 with gradio 3.41, 1.x with gradio 4); prints one ``step | result | seconds | detail`` row a view.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SLUG = "tab-check"
LABEL = "Tab Check"  # how the Person list shows it
CAPTION = "a photo of a woman in a red sweater"


def main() -> int:
    from gradio_client import Client

    from lib_profile import sample_photos
    from lib_profile.ui.portraits_section import DEFAULT_SIZE
    from lib_profile.ui.restyle_section import SIZE_LABEL

    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--portrait-size", metavar="WxH", help="also click 3. Portraits' Generate at the default "
                        "Size and check the job's plan is WxH (the checkpoint family's 2:3: 512x768 SD1.5, 832x1216 "
                        "SDXL); the job is cancelled once its plan is written")
    args = parser.parse_args()
    url = args.url.rstrip("/")
    rest = httpx.Client(base_url=f"{url}/sdapi/v1/profile-studio", timeout=600)
    rest.delete(f"/identities/{SLUG}")
    rest.post("/identities", json={"name": "Tab Check", "class_word": "woman"}).raise_for_status()
    files = []
    for name, picture in sample_photos.selfies()[:6]:
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=92)
        files.append(("files", (f"{name}.jpg", buf.getvalue(), "image/jpeg")))
    report = rest.post(f"/identities/{SLUG}/photos", files=files).json()
    photo = next(p["file"] for p in report["photos"] if p["status"] == "accepted")

    config = httpx.get(f"{url}/config", timeout=60).json()
    comps = {c["id"]: c for c in config["components"]}

    def elem(cid):
        return comps.get(cid, {}).get("props", {}).get("elem_id")

    def targets(dep):  # gradio 3.41: ids + "trigger"; gradio 4: [id, event] pairs
        return [t[0] if isinstance(t, list) else t for t in dep["targets"]]

    def handler(button, n_outputs=None):
        for i, dep in enumerate(config["dependencies"]):
            if any(elem(t) == button for t in targets(dep)) and (n_outputs is None or len(dep["outputs"]) == n_outputs):
                return i, dep
        raise LookupError(f"no handler on #{button}")

    def inputs(dep, given):
        """The inputs of ``dep`` as the page has them, with ``given`` (by elem_id, else label) set."""
        out = []
        for cid in dep["inputs"]:
            props = comps[cid].get("props", {})
            key = props.get("elem_id") if props.get("elem_id") in given else props.get("label")
            out.append(given[key] if key in given else props.get("value"))
        return out

    try:  # gradio_client 0.5: raw outputs (the poll answers gr.update dicts for its images); 1.x has no such switch
        client = Client(url, serialize=False)
    except TypeError:
        client = Client(url)
    rows = []
    person = next(c for c in comps.values() if c.get("props", {}).get("elem_id") == "profile_studio_person")["id"]
    for i, dep in enumerate(config["dependencies"]):  # as the page does on load: the Person list (gradio 4 checks
        if dep["outputs"] == [person] and not dep["inputs"]:  # a dropdown's value against its session's choices)
            client.predict(fn_index=i)
    index, _ = handler("profile_studio_refresh", 3)  # the photo pickers' choices, as choosing the person does
    client.predict(LABEL, fn_index=index)

    def view(name, button, given, links, want):
        started = time.monotonic()
        try:
            index, dep = handler(button)
            answer = client.predict(*inputs(dep, given), fn_index=index)
            status = answer[0] if isinstance(answer, (list, tuple)) else answer  # the job id is a gr.State: the
            found = re.search(r"job ([0-9a-f]{12})\b", status or "")  # client leaves it out; the status names it
            job_id = found and found.group(1)
            if not job_id:
                raise AssertionError(f"no job: {status}")
            while (job := rest.get(f"/jobs/{job_id}").json())["state"] in ("queued", "running"):
                time.sleep(2)
            if job["state"] != "done":
                raise AssertionError(f"job {job['state']}: {job.get('error')}")
            poll_index, _ = handler("profile_studio_refresh", 10)
            shown = client.predict(fn_index=poll_index)  # its input, the job id, is the session's gr.State
            missing = [x for x in links if x not in job["links"]]
            if missing:
                raise AssertionError(f"links missing: {missing}")
            # the poll's outputs: status, gallery, before, after, downloads, word maps, edit before/after, restyle
            # before/after; those it does not change come back as bare updates
            images = {i: x for i, x in enumerate(shown) if i and x and x != {"__type__": "update"}}
            if set(images) != set(want):
                raise AssertionError(f"the tab's poll filled outputs {sorted(images)}, not {want}: {shown[0][:200]}")
            maps = f", {len(images[5])} word maps" if 5 in images else ""
            detail = (f"job {job['kind']} done ({job['result'].get('method')}, {job['result'].get('steps') or job['result'].get('inversion_steps')} steps); "
                      f"the tab's poll shows {len(images)} output(s){maps}; {status.split(':')[0].strip('*')}")
            rows.append((name, "ok", time.monotonic() - started, detail))
        except Exception as exc:  # noqa: BLE001 - a row of the table
            rows.append((name, "FAILED", time.monotonic() - started, f"{type(exc).__name__}: {exc}"[:200]))
        print(rows[-1], file=sys.stderr, flush=True)

    photo_row = {"Source": "photo", "Photo": photo, "Inversion steps": 4, SIZE_LABEL: 128}
    view("tab: 6. Restyle (direct)", "profile_studio_restyle",
         {"profile_studio_person": LABEL, "profile_studio_restyle_photo": photo, "profile_studio_restyle_caption": CAPTION,
          "profile_studio_restyle_target": "studio portrait photo of a woman, soft studio light",
          "Keep the person (their LoRA; needs training first)": False, "Inversion": "direct", "Steps": 4,
          SIZE_LABEL: 128, "...or upload a photo (used instead when given)": None},
         ["photo", "reconstruction", "restyled"], [8, 9])
    view("tab: 4. Explain a photo", "profile_studio_explain",
         {"profile_studio_person": LABEL, "profile_studio_words": "sweater, red", **photo_row,
          "profile_studio_explain_caption": CAPTION}, ["photo", "overlay:sweater", "overlay:red"], [5])
    view("tab: 5. Edit a photo", "profile_studio_edit",
         {"profile_studio_person": LABEL, "profile_studio_swaps": "red -> blue", **photo_row,
          "profile_studio_edit_caption": CAPTION}, ["source", "reconstruction", "edited"], [6, 7])
    if args.portrait_size:
        started = time.monotonic()
        try:
            index, dep = handler("profile_studio_generate")
            status = client.predict(*inputs(dep, {"profile_studio_person": LABEL, "How many": 1,
                                                  "profile_studio_size": DEFAULT_SIZE, "profile_studio_steps": 8}),
                                    fn_index=index)
            status = status[0] if isinstance(status, (list, tuple)) else status
            job_id = re.search(r"job ([0-9a-f]{12})\b", status or "").group(1)
            while (plan := rest.get(f"/files/{SLUG}/{job_id}/plan.json")).status_code != 200:
                if rest.get(f"/jobs/{job_id}").json()["state"] not in ("queued", "running"):
                    raise AssertionError("the job ended before its plan was written")
                time.sleep(2)
            rest.post(f"/jobs/{job_id}/cancel")
            size = f"{plan.json()['width']}x{plan.json()['height']}"
            if size != args.portrait_size:
                raise AssertionError(f"the plan is {size}, not {args.portrait_size}")
            rows.append(("tab: 3. Portraits, Generate at the default Size", "ok", time.monotonic() - started,
                         f"plan {size} (job {job_id}, cancelled once planned)"))
        except Exception as exc:  # noqa: BLE001 - a row of the table
            rows.append(("tab: 3. Portraits, Generate at the default Size", "FAILED", time.monotonic() - started,
                         f"{type(exc).__name__}: {exc}"[:200]))
    rest.delete(f"/identities/{SLUG}")
    print("| step | result | seconds | detail |\n|---|---|---:|---|")
    for name, result, seconds, detail in rows:
        print(f"| {name} | {result} | {seconds:.1f} | {detail.replace('|', '/')} |")
    return 1 if any(r[1] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
