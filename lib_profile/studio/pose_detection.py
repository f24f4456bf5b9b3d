"""Taking a :class:`~lib_profile.studio.pose.Pose` from a reference photo: through mediapipe Pose
(:func:`from_photo`, :func:`pose_from_photo_file`) or through DWPose ONNX models (:class:`DWPoseOnnx`).

The subject's own right/left, as in OpenPose: a frontal subject's right shoulder is on the
image's left.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lib_profile.hosts.base import HostError
from lib_profile.studio.pose import PathLike, Pose, pose_to_json, title_of


# --------------------------------------------------------------------------------- from a photo

# COCO-18 index -> mediapipe Pose landmark (None: the neck, the shoulders' midpoint)
_MEDIAPIPE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
_mp_lock = threading.Lock()
_mp_pose = None


def _mediapipe_pose():
    global _mp_pose
    if _mp_pose is None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")
        try:
            import mediapipe as mp

            solutions = mp.solutions
        except (ImportError, AttributeError) as exc:
            raise HostError("A pose from a photo needs mediapipe 0.10.13-0.10.21 with its bundled models "
                            "(mediapipe.solutions): pip install mediapipe==0.10.14") from exc
        try:
            _mp_pose = solutions.pose.Pose(static_image_mode=True, model_complexity=1)
        except Exception as exc:  # noqa: BLE001 - its graph does not build under the WebUIs' protobuf 3.20
            from lib_profile.photos.faces import mediapipe_unusable

            raise mediapipe_unusable("A pose from a photo", exc, "pick one of the pose templates instead") from exc
    return _mp_pose


def from_photo(image: Image.Image, name: str = "custom", min_visibility: float = 0.5) -> Pose:
    """The pose of the (most prominent) person in a reference photo, through mediapipe Pose."""
    rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
    h, w = rgb.shape[:2]
    with _mp_lock:
        result = _mediapipe_pose().process(rgb)
    if result.pose_landmarks is None:
        raise HostError("No person found in the reference photo; use a photo that shows one person's "
                        "head and shoulders clearly")
    lm = np.array([(p.x * w, p.y * h, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float64)
    inside = (lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)
    lm[:, 2] = np.where(inside & (lm[:, 2] >= min_visibility), 1.0, 0.0)
    body = np.zeros((18, 3))
    for i, j in enumerate(_MEDIAPIPE):
        if j is not None and lm[j, 2] > 0:
            body[i] = (lm[j, 0], lm[j, 1], 1.0)
    if body[2, 2] > 0 and body[5, 2] > 0:
        body[1] = ((body[2, 0] + body[5, 0]) / 2, (body[2, 1] + body[5, 1]) / 2, 1.0)
    if not body[:, 2].any():
        raise HostError("No person clearly visible in the reference photo (every body point is hidden or "
                        "outside the frame)")
    framing = "half body" if body[8, 2] > 0 or body[11, 2] > 0 else "head and shoulders"
    return Pose(name=name, title=title_of(name), description="A pose taken from a reference photo.", framing=framing,
                width=w, height=h, body=body)


def pose_from_photo_file(photo: PathLike, out_json: PathLike) -> Path:
    """Read a reference photo (any format the intake reads), take its pose, write it as OpenPose JSON."""
    from lib_profile.photos.reading import read_photo

    read = read_photo(photo)
    if read.reason is not None:
        raise HostError(f"Pose photo {Path(photo).name}: {read.reason.message}")
    out_json = Path(out_json)
    tmp = out_json.with_name(out_json.name + ".partial")
    tmp.write_text(json.dumps(pose_to_json(from_photo(read.image))), "utf-8")
    tmp.replace(out_json)
    return out_json


# -------------------------------------------------------------------------------------- DWPose

class DWPoseOnnx:
    """DWPose whole-body keypoints (body, feet, face, hands) through onnxruntime.

    The same two-stage pipeline as the ControlNet extension's ONNX DWPose: YOLOX-L finds people
    (a 640x640 letterboxed input, person class, NMS), then ``dw-ll_ucoco_384`` (RTMPose-style,
    288x384 input per person box padded 1.25x) gives 133 COCO-WholeBody keypoints decoded from
    SimCC vectors (split ratio 2). They become COCO-18 body (neck = shoulders' midpoint) + left
    and right 21-point hands + a 68-point face (pupils absent) for the most prominent person.

    Tested here with stand-in ONNX graphs of the real models' input/output signatures (the
    geometry of every stage); the real weights are not shipped and not downloaded by tests.
    """

    DET_SIZE = (640, 640)  # h, w
    MEAN = np.array([123.675, 116.28, 103.53])
    STD = np.array([58.395, 57.12, 57.375])
    # COCO-WholeBody body index for each COCO-18 index (neck computed)
    _COCO17 = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

    def __init__(self, det_model: Optional[PathLike] = None, pose_model: Optional[PathLike] = None,
                 providers: Optional[list[str]] = None, threshold: float = 0.3):
        from lib_profile import model_files

        det = Path(det_model) if det_model else model_files.path_of("dwpose_det")
        pose = Path(pose_model) if pose_model else model_files.path_of("dwpose_pose")
        for path in (det, pose):
            if not path.is_file():
                raise HostError(f"DWPose model not found: put {path.name} in {path.parent} "
                                "(see `python -m lib_profile doctor`), or use the mediapipe pose from a photo")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise HostError("DWPose needs onnxruntime: pip install onnxruntime") from exc
        providers = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                                  if p in ort.get_available_providers()]
        try:
            self.det = ort.InferenceSession(str(det), providers=providers)
            self.pose = ort.InferenceSession(str(pose), providers=providers)
        except Exception as exc:  # noqa: BLE001 - a damaged or foreign .onnx file
            raise HostError(f"Cannot load the DWPose ONNX models: {exc}") from exc
        self.threshold = threshold
        self._check_signatures()

    def _check_signatures(self) -> None:
        d_in, p_in, p_out = self.det.get_inputs(), self.pose.get_inputs(), self.pose.get_outputs()
        if len(d_in) != 1 or [_dim(v) for v in d_in[0].shape[1:]] != [3, 640, 640]:
            raise HostError(f"The DWPose detector should be YOLOX with one 1x3x640x640 input, not "
                            f"{[i.shape for i in d_in]}: is it yolox_l.onnx?")
        if len(p_in) != 1 or len(p_in[0].shape) != 4 or len(p_out) != 2 or _dim(p_out[0].shape[1]) not in (133, None):
            raise HostError(f"The DWPose keypoint model should have one 1x3xHxW input and two outputs (simcc_x, "
                            f"simcc_y) of 133 keypoints, not inputs {[i.shape for i in p_in]}, outputs "
                            f"{[o.shape for o in p_out]}: is it dw-ll_ucoco_384.onnx?")
        h, w = (_dim(v) for v in p_in[0].shape[2:])
        self.pose_h, self.pose_w = h or 384, w or 288

    # detection
    def detect_people(self, rgb: np.ndarray) -> np.ndarray:
        """Person boxes (N, 4) x1, y1, x2, y2 in image pixels, best first."""
        import cv2

        dh, dw = self.DET_SIZE
        r = min(dh / rgb.shape[0], dw / rgb.shape[1])
        nh, nw = int(rgb.shape[0] * r), int(rgb.shape[1] * r)
        padded = np.full((dh, dw, 3), 114, dtype=np.uint8)
        padded[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32)
        out = self.det.run(None, {self.det.get_inputs()[0].name: blob})[0][0].astype(np.float64)
        grids, strides = [], []
        for stride in (8, 16, 32):
            gy, gx = np.meshgrid(np.arange(dh // stride), np.arange(dw // stride), indexing="ij")
            grids.append(np.stack([gx.ravel(), gy.ravel()], 1))
            strides.append(np.full((gx.size, 1), stride))
        grids, strides = np.concatenate(grids), np.concatenate(strides)
        centre = (out[:, :2] + grids) * strides
        size = np.exp(np.clip(out[:, 2:4], -10, 10)) * strides
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) / r
        scores = out[:, 4] * out[:, 5]  # objectness x person class
        keep = scores > 0.3
        boxes, scores = boxes[keep], scores[keep]
        return boxes[_nms(boxes, scores, 0.45)]

    # keypoints
    def keypoints(self, rgb: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """133 keypoints (x, y) in image pixels and their scores for one person box."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in box)
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        bw, bh = (x2 - x1) * 1.25, (y2 - y1) * 1.25
        aspect = self.pose_w / self.pose_h
        bw, bh = (bw, bw / aspect) if bw > bh * aspect else (bh * aspect, bh)
        scale = np.array([bw, bh])
        # box (center, scale) -> model input, no rotation: a pure scale and shift
        sx = self.pose_w / bw
        warp = np.array([[sx, 0, self.pose_w / 2 - center[0] * sx], [0, sx, self.pose_h / 2 - center[1] * sx]])
        crop = cv2.warpAffine(rgb, warp, (self.pose_w, self.pose_h), flags=cv2.INTER_LINEAR)
        blob = ((crop - self.MEAN) / self.STD).transpose(2, 0, 1)[None].astype(np.float32)
        simcc_x, simcc_y = self.pose.run(None, {self.pose.get_inputs()[0].name: blob})
        simcc_x, simcc_y = simcc_x[0], simcc_y[0]
        locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], 1).astype(np.float64) / 2.0  # split ratio 2
        scores = np.minimum(simcc_x.max(1), simcc_y.max(1))
        pts = locs / np.array([self.pose_w, self.pose_h]) * scale + center - scale / 2
        return pts, scores

    def __call__(self, image: Image.Image, name: str = "custom") -> Pose:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        h, w = rgb.shape[:2]
        boxes = self.detect_people(rgb)
        if len(boxes) == 0:
            raise HostError("No person found in the reference photo (DWPose detector)")
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        pts, scores = self.keypoints(rgb, boxes[int(np.argmax(areas))])
        return self.to_pose(pts, scores, w, h, name)

    def to_pose(self, pts: np.ndarray, scores: np.ndarray, width: int, height: int, name: str = "custom") -> Pose:
        """133 COCO-WholeBody keypoints -> COCO-18 body, hands (left, right) and face."""
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
        ok = (scores > self.threshold) & inside
        full = np.concatenate([pts, ok[:, None].astype(np.float64)], 1)
        full[~ok] = 0.0
        body = np.zeros((18, 3))
        for i, j in enumerate(self._COCO17):
            if j is not None:
                body[i] = full[j]
        if ok[5] and ok[6]:
            body[1] = ((full[5, 0] + full[6, 0]) / 2, (full[5, 1] + full[6, 1]) / 2, 1.0)
        face = np.vstack([full[23:91], np.zeros((2, 3))])
        hands = [full[91:112].copy(), full[112:133].copy()]
        if not body[:, 2].any():
            raise HostError("No body keypoint found with confidence in the reference photo (DWPose)")
        framing = "half body" if body[8, 2] > 0 or body[11, 2] > 0 else "head and shoulders"
        return Pose(name=name, title=title_of(name), description="A pose taken from a reference photo (DWPose).",
                    framing=framing, width=width, height=height, body=body, hands=hands, face=face)


def _dim(v) -> Optional[int]:
    return v if isinstance(v, int) else None


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        ix1, iy1 = np.maximum(boxes[i, 0], boxes[rest, 0]), np.maximum(boxes[i, 1], boxes[rest, 1])
        ix2, iy2 = np.minimum(boxes[i, 2], boxes[rest, 2]), np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        order = [int(j) for j, o in zip(rest, inter / (area[i] + area[rest] - inter + 1e-9)) if o <= iou]
    return keep
