"""The tab's "2. Train" section: train the person's LoRA, cancel a job, resume a training."""

from types import SimpleNamespace

from lib_profile.hosts.base import HostError
from lib_profile.store.identities import Conflict
from lib_profile.ui.display import job_markdown
from lib_profile.ui.tab_context import CSS_ID, TabContext


def train_tab(gr) -> SimpleNamespace:
    with gr.Tab("2. Train"):
        with gr.Row():
            steps = gr.Slider(10, 3000, value=800, step=10, label="Training steps")
            train = gr.Button("Train", variant="primary", elem_id=f"{CSS_ID}_train")
            cancel = gr.Button("Cancel", elem_id=f"{CSS_ID}_cancel")
            resume = gr.Button("Resume", elem_id=f"{CSS_ID}_resume")
    return SimpleNamespace(steps=steps, train=train, cancel=cancel, resume=resume)


def train_handlers(ctx: TabContext) -> SimpleNamespace:
    """``do_train``, ``do_cancel`` and ``do_resume``: each returns (status markdown, job id)."""
    studio, to_slug = ctx.studio, ctx.to_slug

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

    def do_cancel(jid):
        if not jid:
            raise HostError("No job to cancel")
        return job_markdown(studio().jobs.cancel(jid)), jid

    def do_resume(jid):
        if not jid:
            raise HostError("No training to resume")
        job = studio().resume(jid)
        return job_markdown(job), job["id"]

    return SimpleNamespace(do_train=do_train, do_cancel=do_cancel, do_resume=do_resume)
