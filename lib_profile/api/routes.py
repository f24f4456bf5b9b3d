"""The HTTP API under ``/sdapi/v1/profile-studio``: identities, photos, jobs, files, poses and tones.

Slow routes are plain ``def`` (FastAPI runs them in its thread pool). Training and generation return a
job at once; poll ``GET /jobs/{id}``. Errors: 400 bad input, 401 no or wrong credentials (when the
WebUI's ``--api-auth`` or serve's ``--api-auth`` is set), 404 unknown, 409 conflict, 413 too large, 507 no
space (or quota, or rights) to store the request's files: the message names the folder; nothing of the request
is kept. A body its model refuses is a 400 too (not FastAPI's 422), naming each bad field and its allowed range
(:mod:`.errors`).

This module makes the router; the routes live by group beside it: :mod:`.identity_routes` (identities, photos,
train, generate), :mod:`.portraits_route` (the whole flow in one call), :mod:`.job_routes` (jobs, files),
:mod:`.attention_routes` (explain, edit), :mod:`.catalog_routes` (poses, tones); :mod:`.auth` the credentials,
:mod:`.studio_calls` the studio's errors and jobs as HTTP, :mod:`.base64_images` images in JSON.
"""

from __future__ import annotations

from typing import Callable, Optional

from fastapi import APIRouter, Depends

from lib_profile import API_PREFIX, EXTENSION_NAME, __version__
from lib_profile.api import models
from lib_profile.api.attention_routes import add_attention_routes
from lib_profile.api.auth import auth_dependency, parse_auth, refusal_dependency
from lib_profile.api.catalog_routes import add_catalog_routes
from lib_profile.api.errors import BAD_INPUT, StudioRoute
from lib_profile.api.identity_routes import add_identity_routes
from lib_profile.api.job_routes import add_job_routes
from lib_profile.api.limits import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, limited_route
from lib_profile.api.portraits_route import add_portraits_route

__all__ = ["StudioProvider", "make_router", "parse_auth", "version"]

StudioProvider = Callable[[], "object"]


def version() -> models.VersionResponse:
    """Name and version of Profile Studio."""
    return models.VersionResponse(name=EXTENSION_NAME, version=__version__)


def make_router(studio: Optional[StudioProvider] = None, auth: Optional[str] = None,
                refuse: Optional[str] = None) -> APIRouter:
    """All routes under ``API_PREFIX``. ``studio()`` gives the :class:`~lib_profile.service.Studio` (made on
    first use); without it only ``/version`` exists. ``auth``: ``"user:pass[,...]"`` protects every route.
    ``refuse``: without ``auth``, every route answers 401 with this message (a server exposed without
    credentials, see :mod:`lib_profile.api.exposure`)."""
    if parse_auth(auth):
        deps = [Depends(auth_dependency(parse_auth(auth)))]
    else:
        deps = [Depends(refusal_dependency(refuse))] if refuse else []
    router = APIRouter(prefix=API_PREFIX, tags=[EXTENSION_NAME], dependencies=deps,
                       route_class=limited_route(MAX_JSON_BYTES, StudioRoute), responses=BAD_INPUT)

    def version_route() -> models.VersionResponse:
        """Name and version of Profile Studio, and the host it runs on."""
        out = version()
        made = getattr(studio, "peek", studio)() if studio is not None else None  # never loads a model
        out.host = getattr(getattr(made, "host", None), "name", None)
        if out.host is None and callable(getattr(studio, "host_name", None)):  # the WebUI's, before a first job
            out.host = studio.host_name()
        return out

    router.add_api_route("/version", version_route, methods=["GET"], response_model=models.VersionResponse)
    if studio is None:
        return router
    upload = limited_route(MAX_UPLOAD_BYTES, StudioRoute)
    add_identity_routes(router, studio, upload)
    add_portraits_route(router, studio, upload)
    add_job_routes(router, studio)
    add_attention_routes(router, studio)
    add_catalog_routes(router, studio)
    return router
