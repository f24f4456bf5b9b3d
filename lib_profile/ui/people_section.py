"""The tab's person row (pick or create a person) and its "1. Photos" section: check photos, remove them, the
intake report and contact sheet."""

from pathlib import Path
from types import SimpleNamespace

from lib_profile.hosts.base import HostError
from lib_profile.ui.display import intake_markdown, job_markdown
from lib_profile.ui.tab_context import CSS_ID, TabContext
from lib_profile.ui.uploads import file_path, wait_for_uploads


def person_row(gr) -> SimpleNamespace:
    """The Person list, the new person's name and class, Create, and the status box under them."""
    with gr.Row():
        person = gr.Dropdown(label="Person", choices=[], value=None, elem_id=f"{CSS_ID}_person",
                             allow_custom_value=False, interactive=True)
        new_name = gr.Textbox(label="New person's name", placeholder="e.g. Alice", elem_id=f"{CSS_ID}_new_name")
        class_word = gr.Radio(["woman", "man", "person"], value="person", label="Class",
                              elem_id=f"{CSS_ID}_class")
        create = gr.Button("Create", elem_id=f"{CSS_ID}_create")
    status = gr.Markdown("", elem_id=f"{CSS_ID}_status")
    return SimpleNamespace(person=person, new_name=new_name, class_word=class_word, create=create, status=status)


def photos_tab(gr) -> SimpleNamespace:
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
    return SimpleNamespace(photos=photos, check=check, photo_list=photo_list, remove=remove, report=report,
                           sheet=sheet)


def people_handlers(ctx: TabContext, portraits) -> SimpleNamespace:
    """``do_create``, ``do_check``, ``do_remove`` and ``on_person`` (``portraits(person_label)``: the updates of
    the two Portrait lists)."""
    import gradio as gr

    studio, to_slug = ctx.studio, ctx.to_slug

    def do_create(name, word):
        record = studio().create_identity(name, word)
        return f"Created **{record['name']}**. Now add photos.", ctx.choices_update(record["slug"]), ""

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
        paths = [file_path(f) for f in files]
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

    return SimpleNamespace(do_create=do_create, do_check=do_check, do_remove=do_remove, on_person=on_person)
