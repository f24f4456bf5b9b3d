"""The Profile Studio tab; the same code runs on gradio 3.41 (A1111) and 4.40 (Forge).

Portable choices (webui-host.md section 10): constructor kwargs only (no ``.style``), ``gr.File`` for
uploads (file objects on 3.41, paths on 4.x: ``getattr(f, "name", f)``), ``gr.update``, no gradio
internals (and no ``from __future__ import annotations``: gradio reads ``gr.SelectData`` hints).
Every button calls the same :class:`~lib_profile.service.Studio` the HTTP API uses; long
work runs as a background job whose status the tab polls.
"""

from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import EXTENSION_NAME, __version__
from lib_profile.hosts.base import HostError

CSS_ID = "profile_studio"
PASSES = {"first pass": None, "face detail pass": "detail", "refine pass": "refine"}  # which pass, by its stage kind
EDIT_PASSES = ["first pass", "refine pass"]  # Edit: the passes with a prompt of their own to edit


def _path(f) -> str:
    return getattr(f, "name", f)


def intake_markdown(report: dict[str, Any]) -> str:
    c = report["counts"]
    need = max(0, report["min_photos"] - c["accepted"])
    advice = "Ready to train: go to **2. Train**." if report["ready"] else \
        f"Add at least {need} more good photo{'s' if need != 1 else ''} (see the reasons below)."
    lines = [f"**{c['accepted']} of {c['total']} photos accepted.** {advice}"]
    for photo in report["photos"]:
        if photo["status"] == "accepted":
            sim = photo.get("identity_similarity")
            lines.append(f"- **accepted** {photo['file']}" + (f" (same person: {sim:.2f})" if sim is not None else ""))
        else:
            lines.append(f"- **rejected** {photo['file']}: " + "; ".join(r["message"] for r in photo["reasons"]))
    return "\n".join(lines)


def job_markdown(job: Optional[dict[str, Any]]) -> str:
    if not job:
        return ""
    pct = int(round(100 * (job.get("progress") or 0)))
    eta = f", about {int(job['eta_s'])} s left" if job.get("eta_s") and job["state"] == "running" else ""
    bar = f"<progress value='{pct}' max='100' style='width:100%'></progress>"
    where = "" if job["state"] == "done" else f"{job.get('stage') or ''} "  # a finished job's last stage says nothing
    text = [f"**{job['kind'].capitalize()} job {job['id']}: {job['state']}** — {where}{pct}%{eta}", bar]
    text += [f"- {msg}" for msg in job.get("messages", [])[-5:]]
    return "\n\n".join(text)


def build_tab(studio: Optional[Callable[[], Any]] = None):
    """The tab's ``gr.Blocks``. ``studio()`` returns the service (made on first use)."""
    import gradio as gr

    def identities() -> list[str]:
        return [x["slug"] for x in studio().store.list()] if studio else []

    def choices_update(value=None):
        names = identities()
        return gr.update(choices=names, value=value if value in names else (names[0] if names else None))

    def safe(fn):
        """Errors become a message in the status box instead of a red gradio error."""
        def wrapper(*args):
            try:
                return fn(*args)
            except HostError as exc:
                return error_outputs(fn, f"⚠️ {exc}")
        wrapper.__name__ = fn.__name__
        return wrapper

    outputs_count: dict[str, int] = {}

    def error_outputs(fn, message):
        n = outputs_count[fn.__name__]
        return tuple([message] + [gr.update()] * (n - 1)) if n > 1 else message

    with gr.Blocks(analytics_enabled=False, elem_id=CSS_ID) as blocks:
        gr.Markdown(f"## {EXTENSION_NAME} <small>{__version__}</small>\n"
                    "Upload about ten everyday photos of one person, train their face LoRA, then make studio "
                    "portraits in the pose and colour look you pick.")
        job_id = gr.State(None)
        with gr.Row():
            person = gr.Dropdown(label="Person", choices=[], value=None, elem_id=f"{CSS_ID}_person",
                                 allow_custom_value=False, interactive=True)
            new_name = gr.Textbox(label="New person's name", placeholder="e.g. Alice", elem_id=f"{CSS_ID}_new_name")
            class_word = gr.Radio(["woman", "man", "person"], value="person", label="Class")
            create = gr.Button("Create", elem_id=f"{CSS_ID}_create")
        status = gr.Markdown("", elem_id=f"{CSS_ID}_status")

        with gr.Tab("1. Photos"):
            photos = gr.File(label="Photos (about 10; JPEG, PNG, WebP, HEIC)", file_count="multiple",
                             file_types=["image", ".heic", ".heif"], elem_id=f"{CSS_ID}_photos")
            check = gr.Button("Check photos", variant="primary", elem_id=f"{CSS_ID}_check")
            with gr.Row():
                report = gr.Markdown("", elem_id=f"{CSS_ID}_report")
                sheet = gr.Image(label="Contact sheet", type="filepath", interactive=False,
                                 elem_id=f"{CSS_ID}_sheet")

        with gr.Tab("2. Train"):
            with gr.Row():
                steps = gr.Slider(10, 3000, value=800, step=10, label="Training steps")
                train = gr.Button("Train", variant="primary", elem_id=f"{CSS_ID}_train")
                cancel = gr.Button("Cancel", elem_id=f"{CSS_ID}_cancel")
                resume = gr.Button("Resume", elem_id=f"{CSS_ID}_resume")

        with gr.Tab("3. Portraits"):
            from lib_profile.studio.pose import list_poses, thumbnail_path
            from lib_profile.studio.tone import list_tones

            pose_list = list_poses()
            with gr.Row():
                with gr.Column():
                    poses = gr.Gallery(value=[(str(thumbnail_path(p.name)), p.name) for p in pose_list],
                                       label="Pose (click one)", columns=6, height=260, allow_preview=False,
                                       elem_id=f"{CSS_ID}_poses")
                    pose = gr.Textbox(label="Pose", value=pose_list[0].name if pose_list else "",
                                      elem_id=f"{CSS_ID}_pose")
                    pose_photo = gr.Image(label="...or the pose of a reference photo", type="filepath")
                with gr.Column():
                    tone = gr.Radio([t.name for t in list_tones()], value="warm", label="Colour look")
                    count = gr.Slider(1, 16, value=4, step=1, label="How many")
                    seed = gr.Number(value=-1, label="Seed (-1: random)", precision=0)
                    use_adetailer = gr.Checkbox(False, label="Use the ADetailer extension for faces (WebUI only)")
                    go = gr.Button("Generate", variant="primary", elem_id=f"{CSS_ID}_generate")
            gallery = gr.Gallery(label="Portraits (identity similarity in the caption)", columns=4, height=520,
                                 object_fit="contain", elem_id=f"{CSS_ID}_gallery")
            with gr.Row():
                before = gr.Image(label="Before the face detail pass", type="filepath", interactive=False)
                after = gr.Image(label="After", type="filepath", interactive=False)
            downloads = gr.File(label="Download", file_count="multiple", interactive=False)

        with gr.Tab("4. Explain"):
            gr.Markdown("Which part of a portrait each prompt word drives (DAAM): pick a portrait, type words "
                        "of its prompt (whole words, any case; \"red#2\": its second \"red\"). The maps belong to "
                        "the pass you pick: the first pass lays the portrait out; the face detail pass repaints "
                        "the face (its maps lie on the face), the refine pass sharpens the whole picture (their "
                        "prompts add their own words).")
            with gr.Row():
                portrait = gr.Dropdown(label="Portrait", choices=[], elem_id=f"{CSS_ID}_portrait",
                                       allow_custom_value=False)
                which_pass = gr.Radio(list(PASSES), value="first pass", label="Pass", elem_id=f"{CSS_ID}_pass")
                words = gr.Textbox(label="Words (comma separated)", placeholder="eyes, smile, sweater",
                                   elem_id=f"{CSS_ID}_words")
                explain_btn = gr.Button("Explain", variant="primary", elem_id=f"{CSS_ID}_explain")
            maps = gr.Gallery(label="Word maps", columns=4, height=420, object_fit="contain", elem_id=f"{CSS_ID}_maps")

        with gr.Tab("5. Edit"):
            gr.Markdown("Edit a portrait by editing its prompt (Prompt-to-Prompt): the layout and the person "
                        "stay. Swap words (\"red -> blue\"), refine (a new prompt with words added), or "
                        "re-weight words (\"smiling=1.5\"). The edit then goes through the portrait's own face "
                        "detail, refine and upscale passes: before and after are finished portraits. Pass "
                        "\"refine pass\" edits that pass's own prompt instead (e.g. \"sharp -> soft\").")
            with gr.Row():
                edit_portrait = gr.Dropdown(label="Portrait", choices=[], allow_custom_value=False,
                                            elem_id=f"{CSS_ID}_edit_portrait")
                edit_pass = gr.Radio(EDIT_PASSES, value="first pass", label="Pass", elem_id=f"{CSS_ID}_edit_pass")
                mode = gr.Radio(["swap", "refine", "reweight"], value="swap", label="Edit")
            with gr.Row():
                swaps = gr.Textbox(label="Swap (old -> new, comma separated)", placeholder="red -> blue",
                                   elem_id=f"{CSS_ID}_swaps")
                target = gr.Textbox(label="...or the whole edited prompt (refine)")
                weights = gr.Textbox(label="Word weights (word=c, c in -2..2)", placeholder="smiling=1.5")
            with gr.Row():
                tau = gr.Slider(0, 1, value=0.8, step=0.05, label="Keep the layout for this part of the steps")
                self_tau = gr.Slider(0, 1, value=0.4, step=0.05, label="Keep the structure (self-attention) for")
                blend = gr.Textbox(label="Change only where these words are (local blend)", placeholder="sweater")
                edit_btn = gr.Button("Edit", variant="primary", elem_id=f"{CSS_ID}_edit")
            with gr.Row():
                edit_before = gr.Image(label="Before", type="filepath", interactive=False, elem_id=f"{CSS_ID}_edit_before")
                edit_after = gr.Image(label="After", type="filepath", interactive=False, elem_id=f"{CSS_ID}_edit_after")
        refresh = gr.Button("Refresh status", size="sm", elem_id=f"{CSS_ID}_refresh")
        poll = gr.Button("Poll", visible=False, elem_id=f"{CSS_ID}_poll")  # clicked by javascript/profile_studio.js

        # -------------------------------------------------------------- handlers
        def do_create(name, word):
            record = studio().create_identity(name, word)
            return f"Created **{record['name']}**. Now add photos.", choices_update(record["slug"])

        def do_check(slug, files):
            if not slug:
                raise HostError("Create or choose a person first")
            if not files:
                raise HostError("Choose some photos first")
            items = [(Path(_path(f)).name, Path(_path(f)).read_bytes()) for f in files]
            rep = studio().add_photos(slug, items)
            sheet_path = str(studio().identity_file(slug, "contact_sheet"))
            return "Photos checked.", intake_markdown(rep), sheet_path

        def do_train(slug, n):
            if not slug:
                raise HostError("Create or choose a person first")
            job = studio().train(slug, {"steps": int(n)})
            return job_markdown(job), job["id"]

        def do_cancel(jid):
            if not jid:
                raise HostError("No job to cancel")
            return job_markdown(studio().jobs.cancel(jid)), jid

        def do_resume(jid):
            if not jid:
                raise HostError("No training to resume")
            job = studio().resume(jid)
            return job_markdown(job), job["id"]

        def do_generate(slug, pose_name, photo, tone_name, n, first_seed, adetailer):
            if not slug:
                raise HostError("Create or choose a person first")
            photo_bytes = Path(_path(photo)).read_bytes() if photo else None
            job = studio().generate(slug, None if photo_bytes else (pose_name or None), tone_name, int(n),
                                    int(first_seed), pose_photo=photo_bytes,
                                    detail_engine="adetailer" if adetailer else "builtin")
            return job_markdown(job), job["id"]

        def portraits(slug):
            if not slug or not studio:
                return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
            names = [f"{s['job']}/{img}" for s in studio().outputs(slug) for img in s["images"]]
            value = names[0] if names else None
            return gr.update(choices=names, value=value), gr.update(choices=names, value=value)

        def split(choice):
            if not choice or "/" not in choice:
                raise HostError("Make portraits first (3. Portraits), then pick one")
            return choice.split("/", 1)

        def stage_of(slug, job_name, image, which):
            """The plan index of the pass picked by name (None: the first pass)."""
            if not PASSES.get(which):
                return None
            stage = studio().stage_index(slug, job_name, image, PASSES[which])
            if stage is None:
                raise HostError(f"That portrait was made without a {which}")
            return stage

        def do_explain(slug, choice, text, which="first pass"):
            job_name, image = split(choice)
            stage = stage_of(slug, job_name, image, which)
            job = studio().explain(slug, [w.strip() for w in (text or "").split(",")], job_name, image, stage=stage)
            return job_markdown(job), job["id"]

        def do_edit(slug, choice, how, swap_text, target_text, weight_text, cross, self_steps, blend_text,
                    which="first pass"):
            job_name, image = split(choice)
            replace = {}
            for pair in filter(None, (x.strip() for x in (swap_text or "").split(","))):
                old, arrow, new = pair.partition("->")
                if not arrow:
                    raise HostError(f"Write swaps as 'old -> new', not {pair!r}")
                replace[old.strip()] = new.strip()
            word_weights = {}
            for pair in filter(None, (x.strip() for x in (weight_text or "").split(","))):
                word, eq, value = pair.rpartition("=")
                try:
                    word_weights[word.strip()] = float(value)
                except ValueError:
                    raise HostError(f"Write weights as 'word=1.5', not {pair!r}") from None
            job = studio().edit(slug, target_text or None, how, job_name, image, cross_steps=float(cross),
                                self_steps=float(self_steps), weights=word_weights,
                                blend_words=[w.strip() for w in (blend_text or "").split(",") if w.strip()],
                                replace=replace or None, stage=stage_of(slug, job_name, image, which))
            return job_markdown(job), job["id"]

        def do_poll(jid):
            keep = gr.update()
            if not jid or not studio:
                return (keep,) * 8
            job = studio().jobs.get(jid)
            result = job.get("result") or {}
            if job["state"] != "done" or not result:
                return (job_markdown(job),) + (keep,) * 7
            folder = Path(result["folder"])
            if job["kind"] == "explain":
                overlays = [(str(folder / f["overlay"]), w) for w, f in result["words"].items()]
                return (job_markdown(job),) + (keep,) * 4 + (overlays, keep, keep)
            if job["kind"] == "edit":
                return (job_markdown(job),) + (keep,) * 5 + (str(folder / result["source"]),
                                                              str(folder / result["edited"]))
            if job["kind"] != "generate" or not result.get("images"):
                return (job_markdown(job),) + (keep,) * 7
            pics = [(str(folder / i["file"]), f"{i['file']} · identity "
                     + (f"{i['identity_similarity']:.2f}" if i["identity_similarity"] is not None else "n/a"))
                    for i in result["images"]]
            first = result["images"][0]
            before_path = str(folder / first["before_detail"]) if first.get("before_detail") else None
            files = [p for p, _c in pics] + [str(folder / "plan.json")]
            return job_markdown(job), pics, before_path, str(folder / first["file"]), files, keep, keep, keep

        def pick_pose(evt: gr.SelectData):
            return pose_list[evt.index].name if 0 <= evt.index < len(pose_list) else gr.update()

        for fn, n in ((do_create, 2), (do_check, 3), (do_train, 2), (do_cancel, 2), (do_resume, 2),
                      (do_generate, 2), (do_explain, 2), (do_edit, 2)):
            outputs_count[fn.__name__] = n
        create.click(safe(do_create), [new_name, class_word], [status, person])
        check.click(safe(do_check), [person, photos], [status, report, sheet])
        poses.select(pick_pose, None, [pose])
        job_starts = [(train, do_train, [person, steps]), (cancel, do_cancel, [job_id]), (resume, do_resume, [job_id]),
                      (go, do_generate, [person, pose, pose_photo, tone, count, seed, use_adetailer]),
                      (explain_btn, do_explain, [person, portrait, words, which_pass]),
                      (edit_btn, do_edit, [person, edit_portrait, mode, swaps, target, weights, tau, self_tau, blend,
                                            edit_pass])]
        for button, fn, inputs in job_starts:
            button.click(safe(fn), inputs, [status, job_id])
        person.change(portraits, [person], [portrait, edit_portrait])
        polled = [status, gallery, before, after, downloads, maps, edit_before, edit_after]
        refresh.click(do_poll, [job_id], polled)
        refresh.click(portraits, [person], [portrait, edit_portrait])
        blocks.load(lambda: choices_update(), None, [person])
        poll.click(do_poll, [job_id], polled, show_progress="hidden")
        # the poller: the WebUI loads javascript/ itself; standalone, the page gets it here (it installs once)
        js = (Path(__file__).resolve().parents[2] / "javascript" / "profile_studio.js").read_text("utf-8")
        gradio_4 = int(gr.__version__.split(".")[0]) >= 4
        blocks.load(None, None, None, **{"js" if gradio_4 else "_js": f"() => {{ {js} }}"})
    return blocks
