"""The Profile Studio tab; the same code runs on gradio 3.41 (A1111) and 4.40 (Forge).

Portable choices (docs/webui-hosts.md, "Gradio 3.41 and 4.40"): constructor kwargs only (no ``.style``), ``gr.File`` for
uploads (file objects on 3.41, paths on 4.x: ``getattr(f, "name", f)``), ``gr.update``, no gradio
internals (and no ``from __future__ import annotations``: gradio reads ``gr.SelectData`` hints).
Every button calls the same :class:`~lib_profile.service.Studio` the HTTP API uses; long
work runs as a background job whose status the tab polls.

This module lays the sections out and wires them; each section's layout and handlers live beside it:
:mod:`.people_section` (person row, 1. Photos), :mod:`.train_section`, :mod:`.portraits_section`,
:mod:`.attention_sections` (4. Explain, 5. Edit), :mod:`.restyle_section` (6. Restyle; the photo
source of Explain and Edit), :mod:`.job_results` (the poll), :mod:`.tab_context`
(what they share), :mod:`.display` (markdown and list labels), :mod:`.uploads`.
"""

from pathlib import Path
from typing import Any, Callable, Optional

from lib_profile import EXTENSION_NAME, __version__
from lib_profile.ui.attention_sections import attention_handlers, edit_tab, explain_tab
from lib_profile.ui.job_results import poll_handler
from lib_profile.ui.people_section import people_handlers, person_row, photos_tab
from lib_profile.ui.portraits_section import portraits_handlers, portraits_tab
from lib_profile.ui.restyle_section import photo_inputs, restyle_handlers, restyle_tab
from lib_profile.ui.tab_context import CSS_ID, TabContext
from lib_profile.ui.train_section import train_handlers, train_tab


def build_tab(studio: Optional[Callable[[], Any]] = None):
    """The tab's ``gr.Blocks``. ``studio()`` returns the service (made on first use)."""
    import gradio as gr

    ctx = TabContext(studio)
    with gr.Blocks(analytics_enabled=False, elem_id=CSS_ID) as blocks:
        gr.Markdown(f"## {EXTENSION_NAME} <small>{__version__}</small>\n"
                    "Upload about ten everyday photos of one person, train their face LoRA, then make studio "
                    "portraits in the pose and colour look you pick.")
        job_id = gr.State(None)
        top = person_row(gr)
        photos = photos_tab(gr)
        training = train_tab(gr)
        made = portraits_tab(gr)
        explaining = explain_tab(gr)
        editing = edit_tab(gr)
        restyling = restyle_tab(gr)
        refresh = gr.Button("Refresh status", size="sm", elem_id=f"{CSS_ID}_refresh")
        poll = gr.Button("Poll", visible=False, elem_id=f"{CSS_ID}_poll")  # clicked by javascript/profile_studio.js

        # -------------------------------------------------------------- handlers
        shown = portraits_handlers(ctx, made.pose_list)
        people = people_handlers(ctx, shown.portraits)
        trains = train_handlers(ctx)
        attention = attention_handlers(ctx)
        restyles = restyle_handlers(ctx)
        photo_pickers = [restyling.photo, explaining.photo.photo, editing.photo.photo]
        do_poll = poll_handler(ctx)

        for fn, n in ((people.do_create, 3), (people.do_check, 5), (people.do_remove, 4), (trains.do_train, 2),
                      (trains.do_cancel, 2), (trains.do_resume, 2), (shown.do_generate, 2),
                      (attention.do_explain, 2), (attention.do_edit, 2), (restyles.do_restyle, 2)):
            ctx.outputs_count[fn.__name__] = n
        person = top.person
        top.create.click(ctx.safe(people.do_create), [top.new_name, top.class_word], [top.status, person, top.new_name])
        photos.check.click(ctx.safe(people.do_check), [person, photos.photos],
                           [top.status, photos.report, photos.sheet, photos.photo_list, photos.photos]
                           ).then(restyles.photos_of, [person], photo_pickers)
        photos.remove.click(ctx.safe(people.do_remove), [person, photos.photo_list],
                            [top.status, photos.report, photos.sheet, photos.photo_list]
                            ).then(restyles.photos_of, [person], photo_pickers)
        made.poses.select(shown.pick_pose, None, [made.pose])
        job_starts = [(training.train, trains.do_train, [person, training.steps]),
                      (training.cancel, trains.do_cancel, [job_id]), (training.resume, trains.do_resume, [job_id]),
                      (made.go, shown.do_generate, [person, made.pose, made.pose_photo, made.tone, made.count,
                                                    made.seed, made.use_adetailer, made.size, made.steps_n]),
                      (explaining.explain_btn, attention.do_explain,
                       [person, explaining.portrait, explaining.words, explaining.which_pass,
                        *photo_inputs(explaining.photo)]),
                      (editing.edit_btn, attention.do_edit,
                       [person, editing.edit_portrait, editing.mode, editing.swaps, editing.target, editing.weights,
                        editing.tau, editing.self_tau, editing.blend, editing.edit_pass,
                        *photo_inputs(editing.photo)]),
                      (restyling.go, restyles.do_restyle,
                       [person, restyling.photo, restyling.upload, restyling.caption, restyling.target,
                        restyling.strength, restyling.keep, restyling.method, restyling.steps_n, restyling.size])]
        for button, fn, inputs in job_starts:
            button.click(ctx.safe(fn), inputs, [top.status, job_id])
        person.change(people.on_person, [person],
                      [top.class_word, photos.photo_list, photos.report, photos.sheet, explaining.portrait,
                       editing.edit_portrait, top.status, job_id])
        person.change(restyles.photos_of, [person], photo_pickers)
        person.change(restyles.target_of, [person, restyling.tone], [restyling.target])
        restyling.tone.change(restyles.target_of, [person, restyling.tone], [restyling.target])
        explaining.portrait.change(attention.passes_of, [person, explaining.portrait], [explaining.which_pass])
        editing.edit_portrait.change(attention.edit_passes_of, [person, editing.edit_portrait], [editing.edit_pass])
        polled = [top.status, made.gallery, made.before, made.after, made.downloads, explaining.maps,
                  editing.edit_before, editing.edit_after, restyling.before, restyling.after]
        refresh.click(do_poll, [job_id], polled)
        refresh.click(restyles.photos_of, [person], photo_pickers)
        refresh.click(shown.portraits, [person], [explaining.portrait, editing.edit_portrait])
        blocks.load(lambda: ctx.choices_update(), None, [person])
        poll.click(do_poll, [job_id], polled, show_progress="hidden")
        # the poller: the WebUI loads javascript/ itself; standalone, the page gets it here (it installs once)
        js = (Path(__file__).resolve().parents[2] / "javascript" / "profile_studio.js").read_text("utf-8")
        gradio_4 = int(gr.__version__.split(".")[0]) >= 4
        blocks.load(None, None, None, **{"js" if gradio_4 else "_js": f"() => {{ {js} }}"})
    return blocks
