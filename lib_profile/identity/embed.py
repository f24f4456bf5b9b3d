"""Face embedders behind one interface, and identity similarity.

- :class:`DlibEmbedder` (default, offline): dlib's 128-d ResNet face-recognition model shipped in
  ``face_recognition_models`` (99.38% on LFW as published), aligned with its 5-point shape predictor.
- :class:`ArcFaceOnnxEmbedder` (optional, higher accuracy): an ArcFace ONNX model (112x112 aligned
  input, 512-d output, e.g. insightface's ``w600k_r50.onnx``) run with onnxruntime.

Similarity is the cosine of the two embeddings; each embedder states the similarity below which two
faces are taken for different people (calibrated on its own scale).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Optional, Protocol

import numpy as np

from lib_profile.hosts.base import HostError
from lib_profile.photos.face import Face


class Embedder(Protocol):
    name: str
    dim: int
    same_person_min: float  # cosine similarity at or above which two faces are the same person

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray: ...


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom else 0.0


def reference_embedding(embeddings: list[np.ndarray]) -> np.ndarray:
    """The set's identity: the mean of unit-length embeddings, made unit length."""
    units = [e / (np.linalg.norm(e) or 1.0) for e in embeddings]
    mean = np.mean(units, axis=0)
    return (mean / (np.linalg.norm(mean) or 1.0)).astype(np.float32)


def _face_models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise HostError("The offline face-recognition model comes from the face-recognition-models package: "
                        "pip install face-recognition-models")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibEmbedder:
    name = "dlib"
    dim = 128
    # dlib's own rule is euclidean distance < 0.6; its vectors are ~1.45 long, so that is cosine ~0.91.
    # Measured here: one person's photo variants 0.99+, astronaut vs Grace Hopper 0.89.
    same_person_min = 0.91

    def __init__(self):
        try:
            import dlib
        except ImportError as exc:
            raise HostError("The dlib embedder needs dlib: pip install dlib-bin") from exc
        models = _face_models_dir()
        try:
            self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
            self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        except RuntimeError as exc:
            raise HostError(f"Cannot load the dlib face models from {models}: {exc}; reinstall "
                            "face-recognition-models") from exc
        self._dlib = dlib
        self._lock = threading.Lock()

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        img = np.ascontiguousarray(rgb, dtype=np.uint8)
        with self._lock:
            shape = self._shape(img, rect)
            return np.asarray(self._net.compute_face_descriptor(img, shape, 0), dtype=np.float32)


# ArcFace's 112x112 alignment template (insightface), image-left eye first
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)


def align_112(rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Warp a face to ArcFace's 112x112 template by the similarity transform of its 5 points."""
    import cv2

    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), ARCFACE_TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise HostError("Could not align the face for the ArcFace embedder")
    return cv2.warpAffine(rgb, matrix, (112, 112), borderValue=0.0)


class ArcFaceOnnxEmbedder:
    name = "arcface"
    same_person_min = 0.30  # insightface's usual verification threshold on cosine similarity

    def __init__(self, model_path: str | Path, providers: Optional[list[str]] = None):
        model_path = Path(model_path)
        if not model_path.is_file():
            raise HostError(f"ArcFace model not found: put {model_path.name} in {model_path.parent} "
                            "(see `python -m lib_profile doctor`), or use the dlib embedder")
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(str(model_path), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a broken or truncated file
            raise HostError(f"Cannot load ArcFace model {model_path.name}: {exc}. Is the file complete?") from exc
        inp = self._session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] != 3 or shape[2] != 112 or shape[3] != 112:
            raise HostError(f"{model_path.name} takes input {shape}; an ArcFace model takes (N, 3, 112, 112)")
        self._input = inp.name
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        aligned = align_112(rgb, face.five_points()).astype(np.float32)
        blob = ((aligned - 127.5) / 127.5).transpose(2, 0, 1)[None]
        return self._session.run(None, {self._input: blob})[0][0].astype(np.float32)


_default: Optional[DlibEmbedder] = None


def default_embedder() -> DlibEmbedder:
    global _default
    if _default is None:
        _default = DlibEmbedder()
    return _default
