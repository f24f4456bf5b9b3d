"""The per-photo checks of selfie intake and their thresholds (defaults a user can change).

Each check that fails adds a :class:`Reason` with the measured value and the threshold, so the
report can say exactly why ("face is 52 px, needs at least 64 px").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from lib_profile.hosts.base import HostError
from lib_profile.photos import reasons
from lib_profile.photos.faces import Face
from lib_profile.photos.reasons import Reason


@dataclass
class Thresholds:
    min_side: int = 256  # image_too_small: the photo's shorter side, px
    max_pixels: int = 50_000_000  # too_large: width x height
    min_face_px: int = 64  # face_too_small: the face box's shorter side, px
    second_face_ratio: float = 0.45  # multiple_faces: another face at least this fraction of the main face's size
    min_sharpness: float = 30.0  # blurry: brightness-normalised Laplacian variance of the face at 128 px
    min_brightness: float = 50.0  # bad_exposure: mean face luma (0-255)
    max_brightness: float = 210.0
    max_clipped: float = 0.35  # bad_exposure: fraction of the face that is pure black or white
    max_yaw: float = 40.0  # extreme_pose, degrees
    max_roll: float = 30.0
    duplicate_distance: float = 1.5  # duplicate: mean grey difference (0-255) of 32x32 thumbnails
    min_identity: Optional[float] = None  # different_person: cosine similarity; None = the embedder's own threshold
    min_photos: int = 5  # how many accepted photos training needs

    @classmethod
    def from_dict(cls, data: Optional[dict[str, Any]]) -> "Thresholds":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HostError(f"Unknown threshold(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}")
        out = cls(**data)
        for f in fields(cls):
            value = getattr(out, f.name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise HostError(f"Threshold {f.name} must be a non-negative number, not {value!r}")
        if not 1 <= out.min_photos <= 100:
            raise HostError(f"min_photos must be within 1..100, not {out.min_photos}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_size(width: int, height: int, t: Thresholds) -> list[Reason]:
    if min(width, height) < t.min_side:
        return [Reason(reasons.IMAGE_TOO_SMALL, f"The photo is {width}x{height} px; use one at least {t.min_side} px "
                       "on its shorter side.", min(width, height), t.min_side)]
    return []


def check_faces(faces: list[Face], t: Thresholds) -> list[Reason]:
    if not faces:
        return [Reason(reasons.NO_FACE, "No face found. Use a photo where your face is clearly visible.")]
    out = []
    main = faces[0]
    side = min(main.width, main.height)
    if len(faces) > 1:
        ratio = max(min(f.width, f.height) for f in faces[1:]) / max(side, 1.0)
        if ratio >= t.second_face_ratio:
            out.append(Reason(reasons.MULTIPLE_FACES, f"There are {len(faces)} faces of similar size. Use photos with only you in "
                              "them (a small face far in the background is fine).", round(ratio, 2),
                              t.second_face_ratio))
    if side < t.min_face_px:
        out.append(Reason(reasons.FACE_TOO_SMALL, f"The face is only {side:.0f} px; step closer or use a larger photo "
                          f"(at least {t.min_face_px} px).", round(side, 1), t.min_face_px))
    return out


def no_face_reason(sharp: float, brightness: float, searched: float, tile: int, t: Thresholds) -> Reason:
    """``no_face`` with its likely cause: the photo very dark (mean brightness 0-255 below ``min_brightness``),
    else very blurred (:func:`measure.photo_measures` sharpness below ``min_sharpness``), else the face small in
    the frame or absent; ``searched`` is the smallest face (px) the search could find, ``tile`` its finest tile."""
    if brightness < t.min_brightness:
        return Reason(reasons.NO_FACE, f"No face found: the photo is very dark (brightness {brightness:.0f}/255, needs "
                      f"{t.min_brightness:.0f}). Use a photo taken in better light.", round(brightness, 1),
                      t.min_brightness)
    if sharp < t.min_sharpness:
        return Reason(reasons.NO_FACE, f"No face found: the photo is very blurred (sharpness {sharp:.0f}, needs "
                      f"{t.min_sharpness:.0f}). Use a sharp photo where your face is clearly visible.",
                      round(sharp, 1), t.min_sharpness)
    return Reason(reasons.NO_FACE, f"No face found, even searching {tile} px tiles for faces down to {searched:.0f} px: "
                  "if your face is small in the frame, crop closer to it; otherwise use a photo where your face "
                  "is clearly visible.", round(searched, 1), None)


def check_quality(sharp: float, brightness: float, clipped: float, face: Face, t: Thresholds) -> list[Reason]:
    out = []
    if sharp < t.min_sharpness:
        out.append(Reason(reasons.BLURRY, "The face is blurry (out of focus or moving). Use a sharp photo.",
                          round(sharp, 1), t.min_sharpness))
    if brightness < t.min_brightness:
        out.append(Reason(reasons.BAD_EXPOSURE, "The face is too dark. Use a photo in better light.",
                          round(brightness, 1), t.min_brightness))
    elif brightness > t.max_brightness:
        out.append(Reason(reasons.BAD_EXPOSURE, "The face is too bright (overexposed). Use a photo with softer light.",
                          round(brightness, 1), t.max_brightness))
    elif clipped > t.max_clipped:
        out.append(Reason(reasons.BAD_EXPOSURE, "Much of the face is pure black or white. Use a photo with even light.",
                          round(clipped, 3), t.max_clipped))
    if face.yaw is not None and abs(face.yaw) > t.max_yaw:
        out.append(Reason(reasons.EXTREME_POSE, f"The head is turned {abs(face.yaw):.0f} degrees; use photos facing the "
                          "camera more.", round(face.yaw, 1), t.max_yaw))
    if face.roll is not None and abs(face.roll) > t.max_roll:
        out.append(Reason(reasons.EXTREME_POSE, f"The head is tilted {abs(face.roll):.0f} degrees; hold it more upright.",
                          round(face.roll, 1), t.max_roll))
    return out
