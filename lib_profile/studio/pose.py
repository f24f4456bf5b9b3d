"""Poses for the studio's pose ControlNet: curated templates, OpenPose JSON, drawing, detection.

A :class:`Pose` is one person in the OpenPose COCO-18 layout (pixel coordinates on a canvas,
confidence 0 = not visible), optionally with 21-point hands and a 70-point face. Templates ship
as OpenPose-editor JSON in ``models/poses/<name>.json`` with a thumbnail ``<name>.png`` drawn by
:func:`render`. Custom poses come from any OpenPose JSON file, from a reference photo through
mediapipe or DWPose ONNX models (:mod:`lib_profile.studio.pose_detection`).

This module holds the pose itself: its JSON, the templates and their thumbnails, and drawing it.

The subject's own right/left, as in OpenPose: a frontal subject's right shoulder is on the
image's left.
"""

from __future__ import annotations

import colorsys
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from lib_profile import paths
from lib_profile.hosts.base import HostError

POSES_DIR = paths.EXTENSION_ROOT / "models" / "poses"
FRAMINGS = ("head and shoulders", "half body")
THUMBNAIL_SIZE = (128, 192)

KEYPOINT_NAMES = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                  "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
# The 17 limbs (0-based) and 18 colours exactly as the ControlNet OpenPose preprocessor draws them (RGB).
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
          (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
          (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
HAND_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))

PathLike = Union[str, os.PathLike]


@dataclass
class Pose:
    name: str
    title: str
    description: str
    framing: str
    width: int
    height: int
    body: np.ndarray  # (18, 3): x, y, confidence
    hands: Optional[list] = None  # [left (21, 3), right (21, 3)]; a hand that is absent is all zeros
    face: Optional[np.ndarray] = None  # (70, 3)

    def visible(self, index: int) -> bool:
        return bool(self.body[index, 2] > 0)

    def point(self, name_or_index: Union[str, int]) -> tuple[float, float]:
        i = KEYPOINT_NAMES.index(name_or_index) if isinstance(name_or_index, str) else name_or_index
        return float(self.body[i, 0]), float(self.body[i, 1])


# ---------------------------------------------------------------------------------------------- JSON

def _points(flat, count: int, what: str, source: str, allowed: tuple[int, ...] = ()) -> np.ndarray:
    try:
        arr = np.asarray(flat, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise HostError(f"{source}: {what} must be a flat list of numbers (x, y, confidence, ...)") from exc
    n = len(arr) // 3
    if len(arr) % 3 or n not in (count, *allowed):
        raise HostError(f"{source}: {what} has {len(arr)} numbers; expected {count} points x 3 = {count * 3}"
                        + "".join(f" or {a * 3}" for a in allowed))
    pts = arr.reshape(n, 3)
    if n < count:  # e.g. a 68-point face (DWPose) in the 70-point OpenPose layout: pupils absent
        pts = np.vstack([pts, np.zeros((count - n, 3))])
    if not np.all(np.isfinite(pts)):
        raise HostError(f"{source}: {what} contains NaN or infinite values")
    return pts


def title_of(name: str) -> str:
    return name.replace("_", " ").replace("-", " ").strip().capitalize()


def pose_from_json(data: dict, source: str = "pose JSON", name: str = "custom") -> Pose:
    """A :class:`Pose` from an OpenPose JSON object (the ControlNet OpenPose editor's format)."""
    if not isinstance(data, dict):
        raise HostError(f"{source}: expected a JSON object with 'people', got {type(data).__name__}")
    people = data.get("people")
    if not isinstance(people, list) or not people or not isinstance(people[0], dict):
        raise HostError(f"{source}: no person in it (expected \"people\": [{{\"pose_keypoints_2d\": [...]}}])")
    person = people[0]
    if "pose_keypoints_2d" not in person:
        raise HostError(f"{source}: the person has no pose_keypoints_2d")
    body = _points(person["pose_keypoints_2d"], 18, "pose_keypoints_2d", source)
    hands = None
    if person.get("hand_left_keypoints_2d") or person.get("hand_right_keypoints_2d"):
        hands = [_points(person.get(k) or [0.0] * 63, 21, k, source)
                 for k in ("hand_left_keypoints_2d", "hand_right_keypoints_2d")]
    face = None
    if person.get("face_keypoints_2d"):
        face = _points(person["face_keypoints_2d"], 70, "face_keypoints_2d", source, allowed=(68,))
    try:
        width, height = int(data["canvas_width"]), int(data["canvas_height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HostError(f"{source}: canvas_width and canvas_height (pixels) are required") from exc
    if width < 8 or height < 8:
        raise HostError(f"{source}: canvas {width}x{height} is too small")
    arrays = [body] + (hands or []) + ([face] if face is not None else [])
    vis = np.concatenate([a[a[:, 2] > 0, :2] for a in arrays])
    if len(vis) == 0:
        raise HostError(f"{source}: no visible keypoint (every confidence is 0)")
    if vis.max() <= 1.0:  # normalised 0..1 coordinates (some tools write these): to pixels
        for a in arrays:
            a[:, 0] *= width
            a[:, 1] *= height
    framing = data.get("framing") or ("half body" if body[8, 2] > 0 or body[11, 2] > 0 else "head and shoulders")
    name = str(data.get("name") or name)
    return Pose(name=name, title=str(data.get("title") or title_of(name)), description=str(data.get("description") or ""),
                framing=str(framing), width=width, height=height, body=body, hands=hands, face=face)


def _flat(points: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in np.asarray(points, dtype=np.float64).reshape(-1)]


def pose_to_json(pose: Pose) -> dict:
    person = {"pose_keypoints_2d": _flat(pose.body)}
    if pose.hands is not None:
        person["hand_left_keypoints_2d"] = _flat(pose.hands[0])
        person["hand_right_keypoints_2d"] = _flat(pose.hands[1])
    if pose.face is not None:
        person["face_keypoints_2d"] = _flat(pose.face)
    return {"name": pose.name, "title": pose.title, "description": pose.description, "framing": pose.framing,
            "canvas_width": int(pose.width), "canvas_height": int(pose.height), "people": [person]}


def _template_names() -> list[str]:
    return sorted(p.stem for p in POSES_DIR.glob("*.json"))


def template_path(name: str, suffix: str = ".json") -> Path:
    """The file of the pose template ``name`` (``.json``, or ``.png`` for its thumbnail). Only the shipped
    templates' names are accepted (what a request may name): a path, ``..`` or an unknown name is a HostError."""
    from lib_profile.store.safe import check_name, inside

    check_name(name, "pose")
    if name not in _template_names():
        raise HostError(f"Unknown pose {name!r}; available poses: {', '.join(_template_names()) or '(none)'}")
    return inside(POSES_DIR, f"{name}{suffix}", what="pose")


def load_pose(name_or_path: PathLike) -> Pose:
    """A template by name (``"three_quarter_left"``) or any OpenPose JSON file by path."""
    text = os.fspath(name_or_path)
    if re.fullmatch(r"[A-Za-z0-9_\-]+", text) and not Path(text).is_file():
        path = POSES_DIR / f"{text}.json"
        if not path.is_file():
            raise HostError(f"Unknown pose {text!r}; available poses: {', '.join(_template_names()) or '(none)'}")
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise HostError(f"Pose file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HostError(f"Cannot read pose file {path}: {exc}") from exc
    return pose_from_json(data, source=str(path), name=path.stem)


def list_poses() -> list[Pose]:
    return sorted((load_pose(n) for n in _template_names()), key=lambda p: p.name)


def thumbnail_path(name: str) -> Path:
    return POSES_DIR / f"{name}.png"


def thumbnail(pose: Pose) -> Image.Image:
    """The small preview shipped next to each template (``models/poses/<name>.png``)."""
    return render(pose, *THUMBNAIL_SIZE)


# ------------------------------------------------------------------------------------------- drawing

def render(pose: Pose, width: int, height: int) -> Image.Image:
    """The pose as the ControlNet OpenPose preprocessor draws it (RGB on black), fitted into
    ``width`` x ``height`` keeping the canvas's aspect ratio (centred, black bars if they differ).

    At a 512-pixel short side the strokes are the preprocessor's own (limbs 4 px wide at 60 %
    colour, 4 px joints); they scale with the output size so a large control image looks the same.
    """
    import cv2  # imported here: lighter than controlnet_aux, whose import pulls timm and more

    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise HostError(f"render size must be positive, not {width}x{height}")
    s = min(width / pose.width, height / pose.height)
    ox, oy = (width - pose.width * s) / 2, (height - pose.height * s) / 2
    k = min(width, height) / 512.0
    stick = radius = max(1, round(4 * k))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)

    def xy(p) -> tuple[float, float]:
        return p[0] * s + ox, p[1] * s + oy

    def ixy(p) -> tuple[int, int]:
        x, y = xy(p)
        return int(x), int(y)

    body = pose.body
    for (a, b), color in zip(LIMBS, COLORS):
        if body[a, 2] <= 0 or body[b, 2] <= 0:
            continue
        (x1, y1), (x2, y2) = xy(body[a]), xy(body[b])
        half = int(math.hypot(x1 - x2, y1 - y2) / 2)
        angle = int(math.degrees(math.atan2(y1 - y2, x1 - x2)))
        poly = cv2.ellipse2Poly((int((x1 + x2) / 2), int((y1 + y2) / 2)), (half, stick), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in color])
    for i, color in enumerate(COLORS):
        if body[i, 2] > 0:
            cv2.circle(canvas, ixy(body[i]), radius, color, thickness=-1)

    for hand in pose.hands or []:
        for ie, (a, b) in enumerate(HAND_EDGES):
            if hand[a, 2] > 0 and hand[b, 2] > 0:
                color = [round(c * 255) for c in colorsys.hsv_to_rgb(ie / len(HAND_EDGES), 1.0, 1.0)]
                cv2.line(canvas, ixy(hand[a]), ixy(hand[b]), color, thickness=max(1, round(2 * k)))
        for p in hand:
            if p[2] > 0:
                cv2.circle(canvas, ixy(p), radius, (0, 0, 255), thickness=-1)
    for p in pose.face if pose.face is not None else []:
        if p[2] > 0:
            cv2.circle(canvas, ixy(p), max(1, round(3 * k)), (255, 255, 255), thickness=-1)
    return Image.fromarray(canvas, "RGB")
