"""The tab's "6. Restyle" section (a real photo made into a studio portrait, Plug-and-Play), and the photo pickers the
Explain and Edit sections share with it."""

from pathlib import Path
from types import SimpleNamespace

from lib_profile.hosts.base import HostError
from lib_profile.ui.display import job_markdown
from lib_profile.ui.tab_context import CSS_ID, TabContext
from lib_profile.ui.uploads import file_path

METHODS = ["direct", "null-text", "ddim"]
SOURCES = ["portrait", "photo"]  # what Explain and Edit work on: a studio portrait, or one of the person's photos


def restyle_tab(gr) -> SimpleNamespace:
    from lib_profile.studio.tone import list_tones

    with gr.Tab("6. Restyle"):
        gr.Markdown("Make one of the person's real photos (or another photo) into a studio portrait: the photo's "
                    "layout, pose and framing stay, its look follows the prompt (Plug-and-Play). The prompt starts "
                    "as the studio portrait in the colour look you pick; \"Keep the person\" adds their LoRA and "
                    "shows how alike the result is. Strength 0 gives the photo back; higher moves further from it.")
        with gr.Row():
            with gr.Column():
                photo = gr.Dropdown(label="One of the person's photos", choices=[], allow_custom_value=False,
                                    elem_id=f"{CSS_ID}_restyle_photo")
                upload = gr.Image(label="...or upload a photo (used instead when given)", type="filepath")
                caption = gr.Textbox(label="What the photo shows (empty: \"a photo of\" the person)",
                                     elem_id=f"{CSS_ID}_restyle_caption")
            with gr.Column():
                tone = gr.Radio([t.name for t in list_tones()], value="warm", label="Colour look")
                target = gr.Textbox(label="Make it into", lines=2, elem_id=f"{CSS_ID}_restyle_target")
                strength = gr.Slider(0, 1, value=0.2, step=0.05, label="Strength (0: the photo back)",
                                     elem_id=f"{CSS_ID}_restyle_strength")
                keep = gr.Checkbox(True, label="Keep the person (their LoRA; needs training first)")
                with gr.Row():
                    method = gr.Radio(METHODS, value="direct", label="Inversion")
                    steps_n = gr.Slider(4, 100, value=50, step=1, label="Steps")
                    size = size_slider(gr)
                go = gr.Button("Restyle", variant="primary", elem_id=f"{CSS_ID}_restyle")
        with gr.Row():
            before = gr.Image(label="Photo", type="filepath", interactive=False, elem_id=f"{CSS_ID}_restyle_before")
            after = gr.Image(label="Restyled", type="filepath", interactive=False, elem_id=f"{CSS_ID}_restyle_after")
    return SimpleNamespace(photo=photo, upload=upload, caption=caption, tone=tone, target=target, strength=strength,
                           keep=keep, method=method, steps_n=steps_n, size=size, go=go, before=before, after=after)


#: the photo size slider's "the checkpoint's own" (the family's short side: ``inversion.photo.photo_size``)
AUTO_SIZE = 0


SIZE_LABEL = "Size (short side, px; 0: the checkpoint's own, 512 on SD1.5, 832 on SDXL)"


def size_slider(gr):
    """The photo's short side; at 0 (the default) the checkpoint family's, read when the job runs."""
    return gr.Slider(AUTO_SIZE, 1024, value=AUTO_SIZE, step=64, label=SIZE_LABEL)


def inversion_size(size) -> dict:
    """``{"size": px}`` for the inversion settings, or nothing for the slider's "the checkpoint's own"."""
    return {"size": int(size)} if size and int(size) != AUTO_SIZE else {}


def photo_source_row(gr, prefix: str) -> SimpleNamespace:
    """Explain's and Edit's source choice: a studio portrait (the default) or one of the person's photos with its
    caption, inverted in ``steps`` at ``size``."""
    with gr.Accordion("...or a real photo of the person", open=False):
        with gr.Row():
            source = gr.Radio(SOURCES, value="portrait", label="Source", elem_id=f"{CSS_ID}_{prefix}_source")
            photo = gr.Dropdown(label="Photo", choices=[], allow_custom_value=False, elem_id=f"{CSS_ID}_{prefix}_photo")
            caption = gr.Textbox(label="What it shows (its prompt; empty: \"a photo of\" the person)",
                                 elem_id=f"{CSS_ID}_{prefix}_caption")
            steps_n = gr.Slider(4, 100, value=50, step=1, label="Inversion steps")
            size = size_slider(gr)
    return SimpleNamespace(source=source, photo=photo, caption=caption, steps_n=steps_n, size=size)


def photo_inputs(row: SimpleNamespace) -> list:
    """The components a handler taking a photo source reads, in its parameters' order."""
    return [row.source, row.photo, row.caption, row.steps_n, row.size]


def restyle_handlers(ctx: TabContext) -> SimpleNamespace:
    """``do_restyle`` (status markdown, job id), ``target_of`` (the target prompt for a person and colour look)
    and ``photos_of`` (the photo pickers' choices for a person: Restyle, Explain, Edit)."""
    import gradio as gr

    studio, to_slug = ctx.studio, ctx.to_slug

    def do_restyle(person_label, photo_name, upload, caption, target, strength, keep, method="direct", n_steps=50,
                   size=AUTO_SIZE):
        slug = to_slug(person_label)
        if not slug:
            raise HostError("Create or choose a person first")
        data = Path(file_path(upload)).read_bytes() if upload else None
        if data is None and not photo_name:
            raise HostError("Pick one of the person's photos, or upload one")
        job = studio().restyle(slug, target or "", None if data is not None else photo_name, data, caption or "",
                               float(strength), bool(keep), {"method": method, "steps": int(n_steps),
                                                             **inversion_size(size)})
        return job_markdown(job), job["id"]

    def target_of(person_label, tone_name="warm"):
        if not studio:
            return gr.update()
        try:
            return studio().restyle_prompt(to_slug(person_label), tone_name or "warm")
        except HostError:
            return gr.update()

    def photos_of(person_label):
        slug = to_slug(person_label)
        names = studio().photo_names(slug) if slug and studio else []
        value = names[0] if names else None
        return tuple(gr.update(choices=names, value=value) for _ in range(3))

    return SimpleNamespace(do_restyle=do_restyle, target_of=target_of, photos_of=photos_of)


def photo_source(source, photo_name, caption, n_steps, size):
    """The keyword arguments of ``Studio.explain``/``edit`` for a photo source (None: the source is a portrait)."""
    if source != "photo":
        return None
    if not photo_name:
        raise HostError("Pick one of the person's photos (1. Photos adds them)")
    inversion = {"steps": int(n_steps), **inversion_size(size)}
    return {"photo": photo_name, "caption": caption or None, "inversion": inversion}
