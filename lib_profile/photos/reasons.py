"""Why a photo was rejected: a code, a plain-words message, the measured value and the threshold."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

UNREADABLE = "unreadable"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_LARGE = "too_large"
IMAGE_TOO_SMALL = "image_too_small"
NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"
FACE_TOO_SMALL = "face_too_small"
BLURRY = "blurry"
BAD_EXPOSURE = "bad_exposure"
EXTREME_POSE = "extreme_pose"
DUPLICATE = "duplicate"
DIFFERENT_PERSON = "different_person"

ALL_CODES = (UNREADABLE, UNSUPPORTED_FORMAT, TOO_LARGE, IMAGE_TOO_SMALL, NO_FACE, MULTIPLE_FACES, FACE_TOO_SMALL,
             BLURRY, BAD_EXPOSURE, EXTREME_POSE, DUPLICATE, DIFFERENT_PERSON)

Number = Union[int, float, str, None]


@dataclass
class Reason:
    code: str
    message: str
    value: Number = None
    threshold: Number = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
