"""The tab's "3. Portraits" section: pose, colour look, size and count, Generate, and the portraits made.

No ``from __future__ import annotations`` here: gradio reads the ``gr.SelectData`` hint of ``pick_pose``."""

from pathlib import Path
from types import SimpleNamespace

from lib_profile.families import SD15, SDXL
from lib_profile.hosts.base import HostError
from lib_profile.ui.display import job_markdown, portrait_labels
from lib_profile.ui.tab_context import CSS_ID, TabContext
from lib_profile.ui.uploads import file_path

#: the default: the size of the checkpoint in use at Generate time (the plan's, by its family: the user may switch
#: checkpoints in the WebUI at any moment, so the tab never fixes it when it is built)
DEFAULT_SIZE = (f"The checkpoint's 2:3 ({SD15.portrait[0]} x {SD15.portrait[1]} on SD1.5, "
                f"{SDXL.portrait[0]} x {SDXL.portrait[1]} on SDXL)")
SIZES = {DEFAULT_SIZE: None,  # label -> (width, height) in pixels; None: the family's own
         "384 x 576 (SD1.5 2:3, quick try)": (384, 576), "512 x 768 (SD1.5 2:3)": (512, 768),
         "512 x 512 (SD1.5 square)": (512, 512), "768 x 1152 (SD1.5 2:3, large)": (768, 1152),
         "640 x 960 (SDXL 2:3, quick try)": (640, 960), "832 x 1216 (SDXL 2:3)": (832, 1216),
         "1024 x 1024 (SDXL square)": (1024, 1024)}


def portraits_tab(gr) -> SimpleNamespace:
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
    return SimpleNamespace(pose_list=pose_list, poses=poses, pose=pose, pose_photo=pose_photo, tone=tone, count=count,
                           size=size, steps_n=steps_n, seed=seed, use_adetailer=use_adetailer, go=go, gallery=gallery,
                           before=before, after=after, downloads=downloads)


def portraits_handlers(ctx: TabContext, pose_list) -> SimpleNamespace:
    """``do_generate`` (status markdown, job id), ``portraits`` (the two Portrait lists' updates) and
    ``pick_pose`` (a pose of ``pose_list`` clicked in the gallery)."""
    import gradio as gr

    studio, to_slug = ctx.studio, ctx.to_slug

    def do_generate(person_label, pose_name, photo, tone_name, n, first_seed, adetailer, size_name=DEFAULT_SIZE,
                    n_steps=25):
        slug = to_slug(person_label)
        if not slug:
            raise HostError("Create or choose a person first")
        photo_bytes = Path(file_path(photo)).read_bytes() if photo else None
        size = SIZES.get(size_name)
        settings = {"steps": int(n_steps), **({"width": size[0], "height": size[1]} if size else {})}
        job = studio().generate(slug, None if photo_bytes else (pose_name or None), tone_name, int(n),
                                int(first_seed), pose_photo=photo_bytes,
                                detail_engine="adetailer" if adetailer else "builtin", settings=settings)
        return job_markdown(job), job["id"]

    def portraits(person_label):
        slug = to_slug(person_label)
        if not slug or not studio:
            return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
        names = list(portrait_labels(studio().outputs(slug)))
        value = names[0] if names else None
        return gr.update(choices=names, value=value), gr.update(choices=names, value=value)

    def pick_pose(evt: gr.SelectData):
        return pose_list[evt.index].name if 0 <= evt.index < len(pose_list) else gr.update()

    return SimpleNamespace(do_generate=do_generate, portraits=portraits, pick_pose=pick_pose)
