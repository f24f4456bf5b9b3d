"""Face detection and landmarks behind a small interface; mediapipe (bundled models) by default.

A detector takes an RGB ``uint8`` array and returns :class:`Face` objects in pixel coordinates,
largest first. ``landmarks`` (face mesh, 468/478 points, x/y in pixels, z in pixels of depth) gives
the angles (yaw, roll) and the eye and mouth points the embedders align with.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np

from lib_profile.hosts.base import HostError
from lib_profile.photos.face import (MESH_FACE_LEFT, MESH_FACE_RIGHT, MESH_LEFT_EYE,  # noqa: F401 - used from here too
                                     MESH_MOUTH_LEFT, MESH_MOUTH_RIGHT, MESH_NOSE_TIP, MESH_RIGHT_EYE, Face,
                                     FaceDetector)


def angles_from_mesh(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees from face mesh points in pixels (z in the same scale as x)."""
    right = landmarks[list(MESH_RIGHT_EYE)].mean(0)
    left = landmarks[list(MESH_LEFT_EYE)].mean(0)
    roll = math.degrees(math.atan2(left[1] - right[1], left[0] - right[0]))
    a, b = landmarks[MESH_FACE_RIGHT], landmarks[MESH_FACE_LEFT]
    yaw = math.degrees(math.atan2(b[2] - a[2], b[0] - a[0]))
    return yaw, roll


class MediapipeDetector:
    """mediapipe face detection (full-range model) + face mesh, both bundled with mediapipe 0.10.13-0.10.21."""

    name = "mediapipe"
    # the whole image is letterboxed into the model's 192 px input: faces below ~6.5 % of the longer side are
    # missed (measured on the astronaut sample); 8 % is what :mod:`multiscale` plans its tiles with
    min_face_fraction = 0.08

    def __init__(self, min_score: float = 0.5, mesh: bool = True):
        os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ log lines
        warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")  # protobuf 4 vs mediapipe
        try:
            import mediapipe as mp

            solutions = mp.solutions
        except (ImportError, AttributeError) as exc:
            raise HostError("Face detection needs mediapipe 0.10.13-0.10.21 with its bundled models "
                            "(mediapipe.solutions): pip install mediapipe==0.10.14") from exc
        self._detector = solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        self._mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                  min_detection_confidence=0.3) if mesh else None
        self._lock = threading.Lock()  # mediapipe graphs are not re-entrant

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        with self._lock:
            result = self._detector.process(np.ascontiguousarray(rgb))
        faces = []
        for det in result.detections or []:
            box = det.location_data.relative_bounding_box
            x1, y1 = max(box.xmin * w, 0.0), max(box.ymin * h, 0.0)
            x2, y2 = min((box.xmin + box.width) * w, w), min((box.ymin + box.height) * h, h)
            names = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")
            kps = {n: (p.x * w, p.y * h) for n, p in zip(names, det.location_data.relative_keypoints)}
            faces.append(Face((x1, y1, x2, y2), float(det.score[0]), kps))
        faces.sort(key=lambda f: f.area, reverse=True)
        if faces and self._mesh is not None:
            self._add_mesh(rgb, faces[0])
        return faces

    def add_landmarks(self, rgb: np.ndarray, face: Face) -> None:
        """Face mesh points, yaw and roll for ``face`` (pixels of ``rgb``), set on it in place."""
        self._add_mesh(rgb, face)

    def _add_mesh(self, rgb: np.ndarray, face: Face) -> None:
        """Face mesh on a crop around the face (so a small face in a big photo still gets landmarks)."""
        h, w = rgb.shape[:2]
        cx, cy = face.center
        side = max(face.width, face.height) * 2.0
        x1, y1 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
        x2, y2 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
        crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
        if crop.size == 0:
            return
        with self._lock:
            result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return
        ch, cw = crop.shape[:2]
        pts = np.array([(p.x * cw + x1, p.y * ch + y1, p.z * cw) for p in result.multi_face_landmarks[0].landmark],
                       dtype=np.float32)
        face.landmarks = pts
        face.yaw, face.roll = angles_from_mesh(pts)


@contextmanager
def _keep_torch_threads():
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class YoloFaceDetector:
    """A YOLO face model (e.g. ADetailer's face_yolov8n.pt) through ultralytics, when its file is present."""

    name = "yolo"

    def __init__(self, weights: str | Path, min_score: float = 0.3):
        weights = Path(weights)
        if not weights.is_file():
            raise HostError(f"YOLO face model not found: put {weights.name} in {weights.parent} "
                            "(see `python -m lib_profile doctor`), or use the mediapipe detector")
        with _keep_torch_threads():  # ultralytics quietly sets torch to cpu_count - 1 threads
            from ultralytics import YOLO

            try:
                self._model = YOLO(str(weights))
            except Exception as exc:  # noqa: BLE001 - a damaged or foreign .pt file
                raise HostError(f"Cannot load YOLO face model {weights.name}: {exc}") from exc
        self._min = min_score
        try:
            self._mesh: Optional[MediapipeDetector] = MediapipeDetector(mesh=True)
        except Exception:  # noqa: BLE001 - no mediapipe graphs here (protobuf 3.20): boxes without a mesh
            self._mesh = None

    def detect(self, rgb: np.ndarray) -> list[Face]:
        with _keep_torch_threads():
            res = self._model.predict(np.ascontiguousarray(rgb[:, :, ::-1]), conf=self._min, verbose=False)[0]
        faces = [Face(tuple(float(v) for v in b), float(s)) for b, s in
                 zip(res.boxes.xyxy.cpu().numpy(), res.boxes.conf.cpu().numpy())]
        faces.sort(key=lambda f: f.area, reverse=True)
        if faces and self._mesh is not None:
            self._mesh._add_mesh(rgb, faces[0])
        return faces


_default = None
_default_problem: Optional[str] = None  # why mediapipe is not the detector, when it is not


def default_detector():
    """mediapipe when its graphs build; else dlib (:mod:`dlib_faces`): under the WebUIs' pinned protobuf 3.20.0,
    mediapipe 0.10.13+ fails to build its graphs. :func:`detector_problem` says why mediapipe was not used.
    Raises :class:`HostError` naming both causes when neither works."""
    global _default, _default_problem
    if _default is None:
        try:
            _default = MediapipeDetector()
        except Exception as mp_exc:  # noqa: BLE001 - e.g. RuntimeError "ValidatedGraphConfig Initialization failed"
            from lib_profile.photos.dlib_faces import DlibDetector

            first = " ".join(str(mp_exc).split())[:200]
            _default_problem = f"mediapipe cannot run here ({type(mp_exc).__name__}: {first}); {mediapipe_hint()}"
            try:
                _default = DlibDetector()
            except HostError as exc:
                raise HostError(f"Face detection cannot work: {_default_problem}; and {exc}") from exc
    return _default


def detector_problem() -> Optional[str]:
    """Why the default detector is not mediapipe (None when it is, or none was made yet)."""
    return _default_problem


def mediapipe_unusable(what: str, exc: BaseException, instead: str) -> HostError:
    """The error for a mediapipe feature that cannot run here, saying why and what to do instead."""
    first = " ".join(str(exc).split())[:160]
    return HostError(f"{what} needs mediapipe, which cannot run here ({type(exc).__name__}: {first}); "
                     f"{mediapipe_hint().replace('faces are found with dlib instead', instead)}")


def mediapipe_hint() -> str:
    """What to do about mediapipe, from the protobuf installed beside it."""
    try:
        from importlib.metadata import version

        protobuf = version("protobuf")
    except Exception:  # noqa: BLE001
        return "faces are found with dlib instead"
    if protobuf.split(".")[0] in ("3", "2"):
        return (f"it needs protobuf >= 4.25.3 and the WebUI keeps protobuf {protobuf}; faces are found with dlib "
                "instead (same checks, slightly coarser boxes)")
    return "faces are found with dlib instead"
