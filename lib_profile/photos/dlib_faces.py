"""Face detection without mediapipe: dlib's HOG face detector and its 68-point shape predictor.

mediapipe 0.10.13-0.10.15 (the versions ADetailer installs) needs protobuf >= 4.25.3, and A1111 1.10.1 and
Forge pin ``protobuf==3.20.0`` and put it back at every normal start; under it mediapipe's graphs fail to
build ("ValidatedGraphConfig Initialization failed"). dlib uses no protobuf, and the models come from the
``face-recognition-models`` package the identity embedder already needs, so this detector works offline in
any WebUI. Boxes are dlib's (the frontal face from brows to chin), landmarks the 68 points (King, "Dlib-ml",
JMLR 2009; Kazemi and Sullivan, "One millisecond face alignment", CVPR 2014), yaw and roll estimated from them.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from lib_profile.hosts.base import HostError
from lib_profile.photos.face import Face

# 68-point indices (iBUG 300-W): jaw 0-16, nose tip 30, the subject's right eye 36-41 (image left), left eye
# 42-47, mouth corners 48 and 54
JAW_RIGHT, JAW_LEFT, NOSE_TIP = 0, 16, 30
RIGHT_EYE, LEFT_EYE = range(36, 42), range(42, 48)
MOUTH_RIGHT, MOUTH_LEFT = 48, 54
DETECT_SIDE = 1024  # px: photos are searched at this size, upsampled once (faces down to ~40 px of it)
MIN_MARGIN = 0.5  # HOG score margin: below it, dlib also finds faces in badges and patterns (seen on the samples)


def angles_from_points(points: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees from 68 points in pixels: roll from the line between the eyes, yaw from where the
    nose tip sits between the two jaw ends (half way is frontal; + = turned to the image's right)."""
    right, left = points[list(RIGHT_EYE)].mean(0), points[list(LEFT_EYE)].mean(0)
    roll = math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))
    span = points[JAW_LEFT, 0] - points[JAW_RIGHT, 0]
    ratio = (points[NOSE_TIP, 0] - points[JAW_RIGHT, 0]) / span if span > 0 else 0.5
    yaw = math.degrees(math.asin(float(np.clip((ratio - 0.5) * 2.0, -1.0, 1.0))))
    return yaw, roll


class DlibDetector:
    """Faces by dlib's HOG detector (largest first), each with 68-point keypoints, yaw and roll."""

    name = "dlib"
    # HOG's 80 px window on the photo scaled to DETECT_SIDE and upsampled once: faces down to ~40 px of
    # DETECT_SIDE (4.5 % of the longer side, measured), never below ~45 px (used by :mod:`multiscale`)
    min_face_fraction = 0.045
    min_face_px = 45.0
    max_search_calls = 30  # each tile costs about as much as the first look (~1 s at 12 MP): a 12 MP search needs 28

    def __init__(self, upsample: int = 1):
        try:
            import dlib
        except ImportError as exc:
            raise HostError("Face detection without mediapipe needs dlib: pip install dlib-bin") from exc
        from lib_profile.identity.embed import _face_models_dir

        path = _face_models_dir() / "shape_predictor_68_face_landmarks.dat"
        try:
            self._shape = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise HostError(f"Cannot load {path}: {exc}; reinstall face-recognition-models") from exc
        self._detector = dlib.get_frontal_face_detector()
        self._dlib = dlib
        self._upsample = upsample
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        from PIL import Image

        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w))
        small = rgb if scale == 1.0 else np.asarray(
            Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
        small = np.ascontiguousarray(small, dtype=np.uint8)
        with self._lock:
            rects, scores, _kinds = self._detector.run(small, self._upsample, MIN_MARGIN)
        faces = []
        for rect, score in zip(rects, scores):
            x1, y1 = max(rect.left() / scale, 0.0), max(rect.top() / scale, 0.0)
            x2, y2 = min(rect.right() / scale, w), min(rect.bottom() / scale, h)
            with self._lock:
                shape = self._shape(small, rect)
            points = np.array([(p.x / scale, p.y / scale) for p in shape.parts()], dtype=np.float32)
            keypoints = {"right_eye": tuple(points[list(RIGHT_EYE)].mean(0)),
                         "left_eye": tuple(points[list(LEFT_EYE)].mean(0)),
                         "nose": tuple(points[NOSE_TIP]),
                         "mouth": tuple(points[[MOUTH_RIGHT, MOUTH_LEFT]].mean(0))}
            yaw, roll = angles_from_points(points)
            # HOG scores are margins (about 0..3); squashed to 0..1 to read like the other detectors' confidences
            faces.append(Face((x1, y1, x2, y2), float(1.0 / (1.0 + math.exp(-2.0 * score))), keypoints,
                              yaw=yaw, roll=roll))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces
