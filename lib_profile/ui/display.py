"""What the tab shows as text: an intake report and a job as markdown, and the labels of the Person and Portrait
lists (label -> slug, label -> ``"job/file"``)."""

from typing import Any, Optional


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
