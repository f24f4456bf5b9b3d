"""Calling the studio from a route: its errors as HTTP errors (400, 404, 409, 503, 507), its jobs as
:class:`~lib_profile.api.models.JobInfo` with the links of their results."""

from __future__ import annotations

from fastapi import HTTPException

from lib_profile import API_PREFIX
from lib_profile.api import models
from lib_profile.hosts.base import HostError
from lib_profile.jobs.pg_records import QueueUnreachable
from lib_profile.store.files import StorageError, is_storage_fault, storage_error
from lib_profile.store.identities import Conflict, NotFound


def http_error(exc: Exception) -> HTTPException:
    """404 unknown, 409 conflict, 503 the cluster's job database unreachable, 507 no space to store, else 400."""
    if isinstance(exc, QueueUnreachable):
        return HTTPException(503, str(exc))
    if isinstance(exc, NotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, Conflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, StorageError):
        return HTTPException(507, str(exc))
    return HTTPException(400, str(exc))


def call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; its HostError (or TimeoutError) as a 400, 404, 409, 503 or 507."""
    try:
        return fn(*args, **kwargs)
    except HTTPException:
        raise
    except (HostError, TimeoutError) as exc:
        raise http_error(exc) from None
    except OSError as exc:  # a full disk (or quota, read-only) where no store method named the folder
        if is_storage_fault(exc):
            raise http_error(storage_error(exc)) from None
        raise


def links(job: dict) -> dict:
    base = f"{API_PREFIX}/jobs/{job['id']}"
    out = {"self": base, "cancel": f"{base}/cancel", "webui_task": f"task(profile-studio-{job['id']})"}
    if job["kind"] in ("train", "portraits"):
        out["resume"] = f"{base}/resume"
    result = job.get("result") or {}
    files = f"{API_PREFIX}/files/{job['identity']}/{job['id']}"
    if job["kind"] == "explain" and result.get("words"):
        out["image"] = f"{files}/{result['image']}"
        for word, f in result["words"].items():
            out[f"overlay:{word}"] = f"{files}/{f['overlay']}"
    if job["kind"] == "edit" and result.get("edited"):
        out["source"], out["edited"] = f"{files}/{result['source']}", f"{files}/{result['edited']}"
    for name in ("photo", "reconstruction", "restyled"):  # a photo job's images (restyle; explain, edit of a photo)
        if job["kind"] in ("restyle", "explain", "edit") and isinstance(result.get(name), str):
            out[name] = f"{files}/{result[name]}"
    if job["kind"] in ("generate", "portraits") and result.get("images"):
        for i, item in enumerate(result["images"]):
            out[f"image{i}"] = f"{API_PREFIX}/files/{job['identity']}/{job['id']}/{item['file']}"
        out["contact_sheet"] = f"{API_PREFIX}/files/{job['identity']}/{job['id']}/contact_sheet.png"
    return out


def job_info(job: dict) -> models.JobInfo:
    return models.JobInfo(**{**job, "links": links(job)})
