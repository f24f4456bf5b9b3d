"""FastAPI routes and response models (plain pydantic models that work on pydantic 1 and 2)."""

from fastapi import APIRouter
from pydantic import BaseModel, Field

from lib_profile import API_PREFIX, EXTENSION_NAME, __version__


class VersionResponse(BaseModel):
    """What ``GET /version`` answers."""

    name: str = Field(description="Name of the extension.")
    version: str = Field(description="Version of the extension.")
    api: int = Field(1, description="Version of this HTTP API; raised on incompatible changes.")


def version() -> VersionResponse:
    """Name and version of Profile Studio."""
    return VersionResponse(name=EXTENSION_NAME, version=__version__)


def make_router() -> APIRouter:
    """A new router with all Profile Studio routes under ``API_PREFIX``."""
    router = APIRouter(prefix=API_PREFIX, tags=[EXTENSION_NAME])
    router.add_api_route("/version", version, methods=["GET"], response_model=VersionResponse)
    return router
