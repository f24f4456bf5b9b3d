"""What the tab shows of a job when it polls: its status, and a finished job's results (portraits, word maps, an
edit's or a restyle's before and after)."""

from pathlib import Path

from lib_profile.ui.display import job_markdown
from lib_profile.ui.tab_context import TabContext


def poll_handler(ctx: TabContext):
    """``do_poll(job_id)``: the updates of (status, gallery, before, after, downloads, maps, edit before, edit
    after, restyle before, restyle after); what the job has not made stays as it is."""
    import gradio as gr

    studio = ctx.studio

    def do_poll(jid):
        keep = gr.update()
        if not jid or not studio:
            return (keep,) * 10
        job = studio().jobs.get(jid)
        result = job.get("result") or {}
        if job["state"] != "done" or not result:
            return (job_markdown(job),) + (keep,) * 9
        folder = Path(result["folder"])
        if job["kind"] == "explain":
            overlays = [(str(folder / f["overlay"]), w) for w, f in result["words"].items()]
            return (job_markdown(job),) + (keep,) * 4 + (overlays, keep, keep, keep, keep)
        if job["kind"] == "edit":
            return (job_markdown(job),) + (keep,) * 5 + (str(folder / result["source"]),
                                                          str(folder / result["edited"]), keep, keep)
        if job["kind"] == "restyle":
            alike = result.get("identity_similarity")
            label = "Restyled" + (f" · identity {alike:.2f}" if alike is not None else "")
            return (job_markdown(job),) + (keep,) * 7 + (str(folder / result["photo"]),
                                                          gr.update(value=str(folder / result["restyled"]), label=label))
        if job["kind"] != "generate" or not result.get("images"):
            return (job_markdown(job),) + (keep,) * 9
        pics = [(str(folder / i["file"]), f"{i['file']} · identity "
                 + (f"{i['identity_similarity']:.2f}" if i["identity_similarity"] is not None else "n/a"))
                for i in result["images"]]
        first = result["images"][0]
        before_path = str(folder / first["before_detail"]) if first.get("before_detail") else None
        files = [p for p, _c in pics] + [str(folder / "plan.json")]
        return job_markdown(job), pics, before_path, str(folder / first["file"]), files, keep, keep, keep, keep, keep

    return do_poll
