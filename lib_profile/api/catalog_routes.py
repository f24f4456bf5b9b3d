"""Routes of what the studio offers: the pose templates (and their thumbnails) and the tone presets."""

from __future__ import annotations

from typing import Any, Callable, List

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from lib_profile import API_PREFIX
from lib_profile.api import models
from lib_profile.hosts.base import HostError


def add_catalog_routes(router: APIRouter, studio: Callable[[], Any]) -> None:
    """``/poses`` and ``/tones``."""

    def poses() -> List[models.PoseInfo]:
        """The pose templates."""
        from lib_profile.studio.pose import list_poses

        return [models.PoseInfo(name=p.name, title=p.title, description=p.description, framing=p.framing,
                                thumbnail=f"{API_PREFIX}/poses/{p.name}/thumbnail.png") for p in list_poses()]

    def pose_thumbnail(name: str):
        """A pose template's thumbnail (PNG)."""
        from lib_profile.store.safe import UnsafeName
        from lib_profile.studio.pose import template_path

        try:
            path = template_path(name, ".png")
        except UnsafeName as exc:
            raise HTTPException(400, str(exc)) from None
        except HostError as exc:
            raise HTTPException(404, str(exc)) from None
        return FileResponse(str(path), media_type="image/png")

    def tones() -> List[models.ToneInfo]:
        """The tone presets (shipped and the user's own)."""
        from lib_profile.studio.tone import list_tones

        return [models.ToneInfo(name=t.name, title=t.title, description=t.description, sampler=t.sampler,
                                scheduler=t.scheduler) for t in list_tones(studio().data_dir)]

    r = router.add_api_route
    r("/poses", poses, methods=["GET"], response_model=List[models.PoseInfo])
    r("/poses/{name}/thumbnail.png", pose_thumbnail, methods=["GET"], response_class=FileResponse)
    r("/tones", tones, methods=["GET"], response_model=List[models.ToneInfo])
