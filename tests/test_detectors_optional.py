"""The optional detector (YOLO via ultralytics) and embedder (ArcFace ONNX) plug into intake."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib_profile import sample_photos
from lib_profile.hosts.base import HostError
from lib_profile.photos.faces import YoloFaceDetector
from lib_profile.photos.intake import IntakeOptions, run_intake
from tests.test_identity import TinyArcFace, export

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory):
    """A YOLOv8n built offline from ultralytics' own yaml (random weights: it finds no faces)."""
    import torch
    from ultralytics import YOLO

    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("yolo") / "face_yolov8n.pt"
    YOLO("yolov8n.yaml").save(str(path))
    torch.set_num_threads(threads)
    return path


def test_yolo_detector_loads_and_runs_without_touching_torch_threads(yolo_file, astronaut):
    import torch

    before = torch.get_num_threads()
    detector = YoloFaceDetector(yolo_file)
    faces = detector.detect(np.asarray(astronaut))
    assert isinstance(faces, list) and torch.get_num_threads() == before


def test_yolo_detector_missing_or_broken_file(tmp_path):
    with pytest.raises(HostError, match="put face_yolov8n.pt in"):
        YoloFaceDetector(tmp_path / "face_yolov8n.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(HostError, match="Cannot load YOLO face model"):
        YoloFaceDetector(tmp_path / "bad.pt")


def test_intake_with_yolo_and_arcface(yolo_file, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for name, im in sample_photos.selfies(sample_photos.astronaut, 3):
        im.save(src / f"{name}.jpg")
    onnx = export(TinyArcFace().eval(), tmp_path / "w600k_r50.onnx")
    report = run_intake(src, tmp_path / "yolo", IntakeOptions(detector="yolo", detector_model=str(yolo_file)))
    assert report["counts"]["total"] == 3  # random YOLO weights: whatever it finds, intake completes
    report = run_intake(src, tmp_path / "arc", IntakeOptions(embedder="arcface", embedder_model=str(onnx),
                                                             thresholds=IntakeOptions().thresholds))
    assert report["identity"]["embedder"] == "arcface" and report["identity"]["dim"] == 512
    identity = json.loads((tmp_path / "arc" / "identity.json").read_text())
    assert len(identity["vector"]) == 512


def test_intake_cli_names_a_missing_optional_model(tmp_path):
    src = tmp_path / "p"
    src.mkdir()
    sample_photos.astronaut().save(src / "a.jpg")
    proc = subprocess.run([sys.executable, "-m", "lib_profile", "--data-dir", str(tmp_path / "data"), "intake",
                           str(src), "--out", str(tmp_path / "o"), "--embedder", "arcface"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "put w600k_r50.onnx in " + str(tmp_path / "data" / "models" / "ProfileStudio") in proc.stderr
    assert not (tmp_path / "o").exists()


def test_download_unknown_model_lists_the_choices(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lib_profile", "download", "bogus"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "yolo_face" in proc.stderr


def test_reading_goes_around_ultralytics_image_open_patch(yolo_file, tmp_path):
    """ultralytics replaces PIL.Image.open with a wrapper that pip-installs pi-heif on any failure."""
    from PIL import Image

    from lib_profile.photos.reading import read_photo

    YoloFaceDetector(yolo_file)
    assert Image.open.__module__ != "PIL.Image"  # the patch is in place, as in a WebUI with ADetailer
    (tmp_path / "notes.jpg").write_text("not a photo")
    assert read_photo(tmp_path / "notes.jpg").reason.code == "unsupported_format"
    assert "pi_heif" not in sys.modules
