"""``python -m lib_profile``: doctor and txt2img as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run(*args, data_dir):
    env = dict(os.environ, PROFILE_STUDIO_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "lib_profile", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_doctor_json_names_missing_models_and_their_folders(tmp_path):
    proc = run("doctor", "--json", data_dir=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["torch"]["installed"] and rep["mediapipe_bundled_models"] is True
    assert rep["dlib_face_model"]["present"] is True
    openpose = next(m for m in rep["models"] if m["key"] == "controlnet_openpose")
    assert openpose["present"] is False
    assert openpose["folder"] == str(tmp_path / "models" / "ControlNet")
    assert "control_v11p_sd15_openpose.pth" in openpose["message"] and openpose["folder"] in openpose["message"]
    assert rep["packages"]["diffusers"]["ok"] is True and rep["packages"]["gradio"]["pinned_by_host"] is True


def test_doctor_sees_a_model_once_it_is_in_place(tmp_path):
    folder = tmp_path / "models" / "ControlNet"
    folder.mkdir(parents=True)
    (folder / "control_v11p_sd15_openpose.pth").write_bytes(b"x")
    rep = json.loads(run("doctor", "--json", data_dir=tmp_path).stdout)
    assert next(m for m in rep["models"] if m["key"] == "controlnet_openpose")["present"] is True
    text = run("doctor", data_dir=tmp_path).stdout
    assert "Profile Studio" in text and "present in" in text


def test_txt2img_writes_pngs_with_infotext(tmp_path, data_dir, tiny_dir):
    out = tmp_path / "out"
    pose = tmp_path / "pose.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(pose)
    proc = run("txt2img", "--checkpoint", "tiny", "--prompt", "studio portrait", "--width", "64", "--height", "64",
               "--steps", "3", "--seed", "7", "--batch-size", "2", "--sampler", "DPM++ 2M Karras",
               "--controlnet", "tiny", "--control-image", str(pose), "--out", str(out), data_dir=data_dir)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["7-tiny-sd15.png", "8-tiny-sd15.png"]
    text = Image.open(files[0]).text["parameters"]
    assert text.startswith("studio portrait\n") and "Sampler: DPM++ 2M, Schedule type: Karras" in text
    assert "Seed: 7" in text and "ControlNet 0" in text


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nope/model.safetensors"], "Checkpoint not found"),
    (["--checkpoint", "tiny", "--sampler", "Bogus"], "Unknown sampler"),
    (["--checkpoint", "tiny", "--width", "100"], "multiple of 8"),
    (["--checkpoint", "tiny", "--lora", "/nope/x.safetensors:0.5"], "LoRA file not found"),
])
def test_txt2img_bad_input_gets_a_clear_message(tmp_path, data_dir, args, message):
    proc = run("txt2img", "--prompt", "x", "--out", str(tmp_path / "o"), *args, data_dir=data_dir)
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
