"""The Profile Studio tab; the same code runs on gradio 3.41 (A1111) and 4.40 (Forge).

Portable choices (docs/webui-hosts.md, "Gradio 3.41 and 4.40"): constructor kwargs only (no ``.style``), ``gr.File`` for
uploads (file objects on 3.41, paths on 4.x: ``getattr(f, "name", f)``), ``gr.update``, no gradio
internals (and no ``from __future__ import annotations``: gradio reads ``gr.SelectData`` hints).
Every button calls the same :class:`~lib_profile.service.Studio` the HTTP API uses; long
work runs as a background job whose status the tab polls.
"""

from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import EXTENSION_NAME, __version__
from lib_profile.hosts.base import HostError
from lib_profile.store.identities import Conflict

CSS_ID = "profile_studio"
SIZES = {"512 x 768 (2:3)": (512, 768), "384 x 576 (2:3, quick try)": (384, 576), "512 x 512 (square)": (512, 512),
         "768 x 1152 (2:3, large)": (768, 1152)}
DEFAULT_SIZE = "512 x 768 (2:3)"
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
    note = (report.get("face_detector") or {}).get("note")
    if note:  # e.g. mediapipe cannot run beside the WebUI's protobuf: faces were found with dlib
        lines.append(f"_Face detection: {report['face_detector']['name']}. {note}_")
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
    ahead = job.get("waiting_for")
    if job["state"] == "queued" and ahead:
        where = f"waiting for {ahead['kind']} job {ahead['id']} to finish - "
    text = [f"**{job['kind'].capitalize()} job {job['id']}: {job['state']}** — {where}{pct}%{eta}", bar]
    text += [f"- {msg}" for msg in job.get("messages", [])[-5:]]
    return "\n\n".join(text)


def person_labels(records: list[dict[str, Any]]) -> dict[str, str]:
    """What the Person list shows for each identity (its name; the slug beside a name two people share), by
    label -> slug. gradio 3.41's dropdowns hold plain strings, so the label is mapped back to the slug."""
    names = [r["name"] or r["slug"] for r in records]
    return {(n if names.count(n) == 1 else f"{n} ({r['slug']})"): r["slug"] for n, r in zip(names, records)}


def portrait_labels(sets: list[dict[str, Any]]) -> dict[str, str]:
    """What the Portrait lists show for each portrait (when its set was made, and its file) -> ``"job/file"``."""
    import time

    out: dict[str, str] = {}
    for s in sets:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["created"])) if s.get("created") else s["job"]
        for image in s["images"]:
            label = f"{when} · {image}"
            out[label if label not in out else f"{label} ({s['job']})"] = f"{s['job']}/{image}"
    return out


def wait_for_uploads(paths: list[str], timeout: float = 30.0, settle: float = 0.3) -> None:
    """Wait until every uploaded file has its bytes (not empty, size steady over ``settle`` s): a click on Check
    while the browser still uploads read empty files. Raises HostError when they do not arrive in ``timeout``."""
    import os
    import time

    def sizes():
        return [os.path.getsize(p) if os.path.exists(p) else 0 for p in paths]

    deadline = time.monotonic() + timeout
    last = sizes()
    while True:
        time.sleep(settle)
        now = sizes()
        if all(now) and now == last:
            return
        if time.monotonic() > deadline:
            empty = [Path(p).name for p, n in zip(paths, now) if not n]
            raise HostError("The photos are still uploading" + (f" ({', '.join(empty)} not arrived yet)" if empty
                                                                else "") + "; wait until they finish, then check again")
        last = now


def build_tab(studio: Optional[Callable[[], Any]] = None):
    """The tab's ``gr.Blocks``. ``studio()`` returns the service (made on first use)."""
    import gradio as gr

    def labels() -> dict[str, str]:
        return person_labels(studio().store.list()) if studio else {}

    def to_slug(label: Optional[str]) -> Optional[str]:
        """The slug of the person picked (a label of the list; a slug is taken as it is)."""
        if not label:
            return None
        return labels().get(label, label)

    def choices_update(slug=None):
        names = labels()
        value = next((lab for lab, s in names.items() if s == slug), None) or (next(iter(names)) if names else None)
        return gr.update(choices=list(names), value=value)

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
            class_word = gr.Radio(["woman", "man", "person"], value="person", label="Class",
                                  elem_id=f"{CSS_ID}_class")
            create = gr.Button("Create", elem_id=f"{CSS_ID}_create")
        status = gr.Markdown("", elem_id=f"{CSS_ID}_status")

        with gr.Tab("1. Photos"):
            photos = gr.File(label="Photos (about 10; JPEG, PNG, WebP, HEIC)", file_count="multiple",
                             file_types=["image", ".heic", ".heif"], elem_id=f"{CSS_ID}_photos")
            check = gr.Button("Check photos", variant="primary", elem_id=f"{CSS_ID}_check")
            with gr.Row():
                photo_list = gr.Dropdown(label="This person's photos (pick any to remove)", choices=[],
                                         multiselect=True, elem_id=f"{CSS_ID}_photo_list")
                remove = gr.Button("Remove picked photos", size="sm", elem_id=f"{CSS_ID}_remove")
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
                    # titles, 4 a row, no fixed height: every pose whole, its caption readable
                    poses = gr.Gallery(value=[(str(thumbnail_path(p.name)), p.title) for p in pose_list],
                                       label="Pose (click one)", columns=4, allow_preview=False,
                                       elem_id=f"{CSS_ID}_poses")
                    pose = gr.Textbox(label="Pose", value=pose_list[0].name if pose_list else "",
                                      elem_id=f"{CSS_ID}_pose")
                    pose_photo = gr.Image(label="...or the pose of a reference photo", type="filepath")
                with gr.Column():
                    tone = gr.Radio([t.name for t in list_tones()], value="warm", label="Colour look")
                    count = gr.Slider(1, 16, value=4, step=1, label="How many")
                    with gr.Row():
                        size = gr.Dropdown(list(SIZES), value=DEFAULT_SIZE, label="Size (width x height)",
                                           elem_id=f"{CSS_ID}_size")
                        steps_n = gr.Slider(8, 60, value=25, step=1, label="Steps (fewer: a quicker try)",
                                            elem_id=f"{CSS_ID}_steps")
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
            return f"Created **{record['name']}**. Now add photos.", choices_update(record["slug"]), ""

        def photo_choices(slug):
            return gr.update(choices=studio().store.get(slug)["photos"] if slug else [], value=[])

        def intake_view(slug, rep):
            """(report, contact sheet, photo list) for an intake report (None: no photo left)."""
            if rep is None:
                return "No photos yet.", None, photo_choices(slug)
            return intake_markdown(rep), str(studio().identity_file(slug, "contact_sheet")), photo_choices(slug)

        def do_check(person_label, files):
            slug = to_slug(person_label)
            if not slug:
                raise HostError("Create or choose a person first")
            if not files:
                raise HostError("No photos have arrived yet: choose some, and if they are still uploading, wait "
                                "until they finish, then press Check photos")
            paths = [_path(f) for f in files]
            wait_for_uploads(paths)
            items = [(Path(p).name, Path(p).read_bytes()) for p in paths]
            rep = studio().add_photos(slug, items)
            return ("Photos checked.", *intake_view(slug, rep), None)  # the upload box empties: a second click adds nothing

        def do_remove(person_label, names):
            slug = to_slug(person_label)
            if not slug or not names:
                raise HostError("Pick the photos to remove in the list first")
            rep = studio().remove_photos(slug, list(names))
            return (f"Removed {len(names)} photo(s).", *intake_view(slug, rep))

        def do_train(person_label, n):
            slug = to_slug(person_label)
            if not slug:
                raise HostError("Create or choose a person first")
            try:
                job = studio().train(slug, {"steps": int(n)})
            except Conflict as exc:  # show the job that holds the person, so it can be watched or cancelled
                job = studio().current_job(slug)
                if job is None:
                    raise
                return f"⚠️ {exc}\n\n" + job_markdown(job), job["id"]
            return job_markdown(job), job["id"]

        def on_person(person_label):
            """A person picked (or the page loaded): their class, photos, portraits and running or last job."""
            slug = to_slug(person_label)
            if not slug or not studio:
                return (gr.update(),) * 4 + portraits(None) + ("", None)
            record = studio().store.get(slug)
            report_md, sheet_path, photo_update = intake_view(slug, record["intake"])
            job = studio().current_job(slug)
            return (gr.update(value=record["class_word"]), photo_update, report_md, sheet_path, *portraits(slug),
                    job_markdown(job), job["id"] if job else None)

        def do_cancel(jid):
            if not jid:
                raise HostError("No job to cancel")
            return job_markdown(studio().jobs.cancel(jid)), jid

        def do_resume(jid):
            if not jid:
                raise HostError("No training to resume")
            job = studio().resume(jid)
            return job_markdown(job), job["id"]

        def do_generate(person_label, pose_name, photo, tone_name, n, first_seed, adetailer, size_name=DEFAULT_SIZE,
                        n_steps=25):
            slug = to_slug(person_label)
            if not slug:
                raise HostError("Create or choose a person first")
            photo_bytes = Path(_path(photo)).read_bytes() if photo else None
            width, height = SIZES.get(size_name, SIZES[DEFAULT_SIZE])
            job = studio().generate(slug, None if photo_bytes else (pose_name or None), tone_name, int(n),
                                    int(first_seed), pose_photo=photo_bytes,
                                    detail_engine="adetailer" if adetailer else "builtin",
                                    settings={"width": width, "height": height, "steps": int(n_steps)})
            return job_markdown(job), job["id"]

        def portraits(person_label):
            slug = to_slug(person_label)
            if not slug or not studio:
                return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
            names = list(portrait_labels(studio().outputs(slug)))
            value = names[0] if names else None
            return gr.update(choices=names, value=value), gr.update(choices=names, value=value)

        def pass_names(person_label, choice, names):
            """The passes of ``names`` the picked portrait was made with (a refine switched off is not offered)."""
            slug = to_slug(person_label)
            choice = to_portrait(slug, choice)
            if not slug or not choice or "/" not in choice:
                return gr.update(choices=names, value=names[0])
            job_name, image = choice.split("/", 1)
            try:
                have = [n for n in names if not PASSES[n] or studio().stage_index(slug, job_name, image, PASSES[n])
                        is not None]
            except HostError:
                have = names[:1]
            return gr.update(choices=have, value=have[0])

        def passes_of(person_label, choice):
            return pass_names(person_label, choice, list(PASSES))

        def edit_passes_of(person_label, choice):
            return pass_names(person_label, choice, EDIT_PASSES)

        def to_portrait(slug, choice):
            """``"job/file"`` of the portrait picked (a label of the list; ``"job/file"`` is taken as it is)."""
            if not slug or not choice:
                return choice
            return portrait_labels(studio().outputs(slug)).get(choice, choice)

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

        def do_explain(person_label, choice, text, which="first pass"):
            slug = to_slug(person_label)
            job_name, image = split(to_portrait(slug, choice))
            stage = stage_of(slug, job_name, image, which)
            job = studio().explain(slug, [w.strip() for w in (text or "").split(",")], job_name, image, stage=stage)
            return job_markdown(job), job["id"]

        def do_edit(person_label, choice, how, swap_text, target_text, weight_text, cross, self_steps, blend_text,
                    which="first pass"):
            slug = to_slug(person_label)
            job_name, image = split(to_portrait(slug, choice))
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

        for fn, n in ((do_create, 3), (do_check, 5), (do_remove, 4), (do_train, 2), (do_cancel, 2), (do_resume, 2),
                      (do_generate, 2), (do_explain, 2), (do_edit, 2)):
            outputs_count[fn.__name__] = n
        create.click(safe(do_create), [new_name, class_word], [status, person, new_name])
        check.click(safe(do_check), [person, photos], [status, report, sheet, photo_list, photos])
        remove.click(safe(do_remove), [person, photo_list], [status, report, sheet, photo_list])
        poses.select(pick_pose, None, [pose])
        job_starts = [(train, do_train, [person, steps]), (cancel, do_cancel, [job_id]), (resume, do_resume, [job_id]),
                      (go, do_generate, [person, pose, pose_photo, tone, count, seed, use_adetailer, size, steps_n]),
                      (explain_btn, do_explain, [person, portrait, words, which_pass]),
                      (edit_btn, do_edit, [person, edit_portrait, mode, swaps, target, weights, tau, self_tau, blend,
                                            edit_pass])]
        for button, fn, inputs in job_starts:
            button.click(safe(fn), inputs, [status, job_id])
        person.change(on_person, [person], [class_word, photo_list, report, sheet, portrait, edit_portrait, status,
                                            job_id])
        portrait.change(passes_of, [person, portrait], [which_pass])
        edit_portrait.change(edit_passes_of, [person, edit_portrait], [edit_pass])
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
