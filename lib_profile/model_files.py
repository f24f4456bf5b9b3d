"""The optional model files Profile Studio can use, where each belongs, and whether it is there.

Nothing here downloads: ``doctor`` lists what is missing with the folder to put it in and where
to get it, so a user without internet access knows exactly which file goes where.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lib_profile import paths
from lib_profile.webui import places as webui_places


@dataclass(frozen=True)
class ModelFile:
    key: str
    file: str
    folder: str  # "ControlNet", "adetailer" (WebUI model folders) or "ProfileStudio"
    purpose: str
    url: str
    required: bool = False
    sha256: Optional[str] = None  # checked after download when known
    family: Optional[str] = None  # the checkpoint family it serves (lib_profile.families); None: any


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile("controlnet_openpose", "control_v11p_sd15_openpose.pth", "ControlNet",
              "pose control for the studio's txt2img stage",
              "https://huggingface.co/lllyasviel/ControlNet-v1-1/resolve/main/control_v11p_sd15_openpose.pth",
              family="SD1.5"),
    ModelFile("controlnet_tile", "control_v11f1e_sd15_tile.pth", "ControlNet",
              "detail-keeping tiled upscale",
              "https://huggingface.co/lllyasviel/ControlNet-v1-1/resolve/main/control_v11f1e_sd15_tile.pth",
              family="SD1.5"),
    # SDXL ControlNets ship in the diffusers layout as diffusion_pytorch_model.safetensors: saved under their
    # usual names (lib_profile.families.SDXL.controlnets) so that the file name says what they are
    ModelFile("controlnet_openpose_sdxl", "controlnet-openpose-sdxl-1.0.safetensors", "ControlNet",
              "pose control on SDXL checkpoints",
              "https://huggingface.co/xinsir/controlnet-openpose-sdxl-1.0/resolve/main/diffusion_pytorch_model.safetensors",
              family="SDXL"),
    ModelFile("controlnet_tile_sdxl", "controlnet-tile-sdxl-1.0.safetensors", "ControlNet",
              "detail-keeping tiled upscale on SDXL checkpoints",
              "https://huggingface.co/xinsir/controlnet-tile-sdxl-1.0/resolve/main/diffusion_pytorch_model.safetensors",
              family="SDXL"),
    ModelFile("yolo_face", "face_yolov8n.pt", "adetailer",
              "optional YOLO face detector (mediapipe is the offline default)",
              "https://huggingface.co/Bingsu/adetailer/resolve/main/face_yolov8n.pt"),
    ModelFile("arcface", "w600k_r50.onnx", "ProfileStudio",
              "optional ArcFace identity embedder (dlib is the offline default)",
              "https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/w600k_r50.onnx"),
    ModelFile("dwpose_det", "yolox_l.onnx", "ProfileStudio", "optional DWPose person detector",
              "https://huggingface.co/yzd-v/DWPose/resolve/main/yolox_l.onnx"),
    ModelFile("dwpose_pose", "dw-ll_ucoco_384.onnx", "ProfileStudio", "optional DWPose keypoints (body, hands, face)",
              "https://huggingface.co/yzd-v/DWPose/resolve/main/dw-ll_ucoco_384.onnx"),
)


def models_root(data_dir: str | Path | None = None) -> Path:
    """The WebUI's models folder when inside a WebUI, else ``<data dir>/models``."""
    return webui_places.models_dir() or paths.data_dir(data_dir) / "models"


def folder_for(model: ModelFile, data_dir: str | Path | None = None) -> Path:
    return models_root(data_dir) / model.folder


def status(data_dir: str | Path | None = None) -> list[dict]:
    out = []
    for m in MODEL_FILES:
        folder = folder_for(m, data_dir)
        present = (folder / m.file).is_file()
        out.append({
            "key": m.key, "file": m.file, "folder": str(folder), "present": present, "purpose": m.purpose,
            "url": m.url, "required": m.required, "family": m.family,
            "message": "present" if present else f"missing: put {m.file} in {folder} (from {m.url})",
        })
    return out


def find(key: str) -> ModelFile:
    for m in MODEL_FILES:
        if m.key == key:
            return m
    raise KeyError(key)


def path_of(key: str, data_dir: str | Path | None = None) -> Path:
    m = find(key)
    return folder_for(m, data_dir) / m.file


def fetch(key: str, data_dir: str | Path | None = None, progress=None) -> Path:
    """Download one optional model file into its folder (on the user's request only)."""
    from lib_profile.downloads import download

    m = find(key)
    return download(m.url, folder_for(m, data_dir) / m.file, m.sha256, progress=progress)
