"""A found face (:class:`Face`) and what a face detector is (:class:`FaceDetector`); the detectors are in
:mod:`.faces` (mediapipe, YOLO) and :mod:`.dlib_faces`, which all import this module and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

# face mesh landmark indices
MESH_RIGHT_EYE = (33, 133)  # the subject's right eye: outer, inner corner (image left)
MESH_LEFT_EYE = (362, 263)
MESH_NOSE_TIP = 1
MESH_MOUTH_RIGHT, MESH_MOUTH_LEFT = 61, 291
MESH_FACE_RIGHT, MESH_FACE_LEFT = 234, 454  # face edge at the cheeks


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    score: float
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)  # detector's coarse points
    landmarks: Optional[np.ndarray] = None  # (N, 3) face mesh points in pixels
    yaw: Optional[float] = None  # degrees, + = turned to the image's right
    roll: Optional[float] = None  # degrees, + = clockwise in the image

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def five_points(self) -> np.ndarray:
        """(5, 2): right eye, left eye, nose tip, right and left mouth corner (the subject's sides),
        as ArcFace-style alignment expects them (image-left eye first)."""
        if self.landmarks is not None:
            lm = self.landmarks[:, :2]
            return np.array([lm[list(MESH_RIGHT_EYE)].mean(0), lm[list(MESH_LEFT_EYE)].mean(0), lm[MESH_NOSE_TIP],
                             lm[MESH_MOUTH_RIGHT], lm[MESH_MOUTH_LEFT]], dtype=np.float32)
        k = self.keypoints
        re, le, mouth = np.array(k["right_eye"]), np.array(k["left_eye"]), np.array(k["mouth"])
        half = (le - re) * 0.4
        return np.array([re, le, k["nose"], mouth - half, mouth + half], dtype=np.float32)

    def to_dict(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(float(self.score), 3),
                "yaw": None if self.yaw is None else round(float(self.yaw), 1),
                "roll": None if self.roll is None else round(float(self.roll), 1)}


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...
