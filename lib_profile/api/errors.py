"""Input errors of the HTTP API as 400s that name the field and what it allows, in every app that mounts it.

FastAPI answers a request its models refuse with a 422 listing pydantic's messages, through an app-wide exception
handler; the WebUI installs its own handlers on its app, and ``serve`` a plain FastAPI one. :class:`StudioRoute`
turns the refusal into an ``HTTPException(400)`` inside the route itself, so the answer is the same 400 whatever the
app: ``{"detail": "settings.steps: -5 is not allowed; allowed: an integer within 1..500"}`` (one line per bad
field; the WebUI wraps the same ``detail`` in its error JSON).
"""

from __future__ import annotations

import typing
from typing import Any, Callable, Optional

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

from lib_profile import validation
from lib_profile.jobs.pg_records import QueueUnreachable

# what the OpenAPI schema says of a 400
BAD_INPUT = {400: {"description": "Bad input: the detail names each bad field and what it allows."}}


def _body_model(endpoint: Callable) -> Optional[type]:
    """The pydantic model of the endpoint's JSON body (None: it takes none)."""
    try:
        hints = typing.get_type_hints(endpoint)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: messages without ranges
        return None
    hints.pop("return", None)
    for hint in hints.values():
        for kind in (hint, *typing.get_args(hint)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                return kind
    return None


def message(exc: RequestValidationError, body_model: Optional[type]) -> str:
    """The 400's detail for a refused request: each bad field (``settings.steps``, ``query.identity``) with the
    value given and what the field allows."""
    root = validation.schema(body_model) if body_model is not None else {}
    lines = []
    body_errors = []
    for err in exc.errors():
        loc = list(err.get("loc", ()))
        if loc and loc[0] == "body":
            body_errors.append({**err, "loc": tuple(loc[1:])})
        else:
            lines.append(f"{'.'.join(str(x) for x in loc)}: {err.get('msg')}")
    if body_errors:
        lines.insert(0, validation.describe(body_errors, root, getattr(exc, "body", None), whole="the request body")[0])
    return "\n".join(lines) or "invalid request"


class StudioRoute(APIRoute):
    """A route whose refused input is a 400 naming the field and its allowed range, not FastAPI's 422; and, in the
    cluster mode, a 503 saying so when the job database cannot be reached (at the studio's start, or a restart of
    the server), wherever in the route it shows (never a 500)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        model = _body_model(self.endpoint)

        async def route(request: Request) -> Any:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise HTTPException(400, message(exc, model)) from None
            except QueueUnreachable as exc:
                raise HTTPException(503, str(exc)) from None

        return route
