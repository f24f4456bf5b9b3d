"""The tab's "4. Explain" (word heat maps of a portrait's pass) and "5. Edit" (Prompt-to-Prompt) sections; each can
work on a real photo of the person instead (:func:`.restyle_section.photo_source_row`)."""

from types import SimpleNamespace

from lib_profile.hosts.base import HostError
from lib_profile.ui.display import job_markdown
from lib_profile.ui.restyle_section import photo_source, photo_source_row
from lib_profile.ui.tab_context import CSS_ID, TabContext

PASSES = {"first pass": None, "face detail pass": "detail", "refine pass": "refine"}  # which pass, by its stage kind
EDIT_PASSES = ["first pass", "refine pass"]  # Edit: the passes with a prompt of their own to edit


def explain_tab(gr) -> SimpleNamespace:
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
        photo = photo_source_row(gr, "explain")
        maps = gr.Gallery(label="Word maps", columns=4, height=420, object_fit="contain", elem_id=f"{CSS_ID}_maps")
    return SimpleNamespace(portrait=portrait, which_pass=which_pass, words=words, explain_btn=explain_btn, maps=maps,
                           photo=photo)


def edit_tab(gr) -> SimpleNamespace:
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
        photo = photo_source_row(gr, "edit")
        with gr.Row():
            edit_before = gr.Image(label="Before", type="filepath", interactive=False, elem_id=f"{CSS_ID}_edit_before")
            edit_after = gr.Image(label="After", type="filepath", interactive=False, elem_id=f"{CSS_ID}_edit_after")
    return SimpleNamespace(edit_portrait=edit_portrait, edit_pass=edit_pass, mode=mode, swaps=swaps, target=target,
                           weights=weights, tau=tau, self_tau=self_tau, blend=blend, edit_btn=edit_btn,
                           edit_before=edit_before, edit_after=edit_after, photo=photo)


def attention_handlers(ctx: TabContext) -> SimpleNamespace:
    """``do_explain`` and ``do_edit`` (status markdown, job id), and ``passes_of`` and ``edit_passes_of`` (the
    Pass choices a picked portrait has)."""
    import gradio as gr

    studio, to_slug, to_portrait = ctx.studio, ctx.to_slug, ctx.to_portrait

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

    def do_explain(person_label, choice, text, which="first pass", source="portrait", photo=None, caption="",
                   n_steps=50, size=0):
        slug = to_slug(person_label)
        words = [w.strip() for w in (text or "").split(",")]
        real = photo_source(source, photo, caption, n_steps, size)
        if real:
            job = studio().explain(slug, words, **real)
            return job_markdown(job), job["id"]
        job_name, image = split(to_portrait(slug, choice))
        stage = stage_of(slug, job_name, image, which)
        job = studio().explain(slug, words, job_name, image, stage=stage)
        return job_markdown(job), job["id"]

    def do_edit(person_label, choice, how, swap_text, target_text, weight_text, cross, self_steps, blend_text,
                which="first pass", source="portrait", photo=None, caption="", n_steps=50, size=0):
        slug = to_slug(person_label)
        real = photo_source(source, photo, caption, n_steps, size)
        job_name, image = split(to_portrait(slug, choice)) if not real else (None, None)
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
                            replace=replace or None,
                            stage=None if real else stage_of(slug, job_name, image, which), **(real or {}))
        return job_markdown(job), job["id"]

    return SimpleNamespace(do_explain=do_explain, do_edit=do_edit, passes_of=passes_of, edit_passes_of=edit_passes_of)
