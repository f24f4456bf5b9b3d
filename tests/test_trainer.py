"""The face LoRA trainer on the tiny model: learning, kohya export, loading, cancel/resume, errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lib_profile.hosts.base import HostError, LoraRef, Txt2ImgRequest
from lib_profile.hosts.diffusers import ldm_layout, tiny
from lib_profile.train import lora
from lib_profile.train.trainer import Events, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent


def small(name="anna", **kw):
    base = dict(name=name, steps=40, resolution=64, batch_size=2, validate_every=20, validation_images=0,
                log_every=10, save_every=10, select="last", device="cpu")
    base.update(kw)
    return TrainConfig(**base)


class Collect(Events):
    def __init__(self, on_event=None):
        super().__init__(None)
        self.items, self.on_event = [], on_event

    def __call__(self, event, **data):
        self.items.append({"event": event, **data})
        if self.on_event:
            self.on_event(event, data)


def test_training_lowers_the_denoising_loss(intake_dir, tiny_checkpoint, tmp_path):
    trainer = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=60, learning_rate=3e-3,
                                                                            batch_size=4))
    before = trainer.denoising_loss()
    trainer.run()
    after = trainer.denoising_loss()
    assert after < before * 0.97, (before, after)


def test_export_is_kohya_and_covers_every_targeted_layer(intake_dir, tiny_checkpoint, tmp_path):
    events = Collect()
    result = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=10), events).run()
    path = Path(result["file"])
    with safe_open(str(path), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
    unet = tiny.build_modules()[0]
    targets = [n for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(lora.ATTENTION)]
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(targets) == 8 * len(blocks) == 88  # q, k, v, out of self- and cross-attention in every block
    for name in targets:
        key = "lora_unet_" + name.replace(".", "_")
        assert {f"{key}.lora_down.weight", f"{key}.lora_up.weight", f"{key}.alpha"} <= keys, key
    assert all(k.startswith("lora_unet_") and k.count(".") in (1, 2) for k in keys)
    assert meta["ss_output_name"] == path.stem and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_network_dim"] == "32" and json.loads(meta["profile_studio_identity"])["embedder"] == "dlib"
    assert path.stem.startswith("anna-") and (path.parent / f"{path.stem}.identity.json").is_file()
    phases = [e.get("phase") for e in events.items if e["event"] == "phase"]
    assert phases[:3] == ["load", "cache", "train"] and phases[-1] == "done"
    step = next(e for e in events.items if e["event"] == "step")
    assert {"step", "loss", "it_per_s", "eta_s", "phase"} <= set(step)


def test_progress_ticks_come_between_log_steps(intake_dir, tiny_checkpoint, tmp_path, monkeypatch):
    """The job's bar moves from the first step, not only at log steps (whose loss needs the GPU to catch up)."""
    from lib_profile.train import trainer

    monkeypatch.setattr(trainer, "TICK_S", 0.0)
    events = Collect()
    Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=6, log_every=3, validate_every=6), events).run()
    moves = [(e["event"], e["step"]) for e in events.items if e["event"] in ("tick", "step")]
    assert moves == [("tick", 1), ("tick", 2), ("step", 3), ("tick", 4), ("tick", 5), ("step", 6)]


def test_the_face_embedding_can_be_left_out_of_the_lora_file(intake_dir, tiny_checkpoint, tmp_path):
    result = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=2, log_every=1, validate_every=2,
                                                                          identity_in_lora=False)).run()
    path = Path(result["file"])
    with safe_open(str(path), "pt") as f:
        assert "profile_studio_identity" not in f.metadata()
    from lib_profile.identity.score import reference_from_lora

    assert reference_from_lora(path)["embedder"] == "dlib"  # the file beside it still gives identity scores


def test_each_run_gets_a_new_file_name(intake_dir, tiny_checkpoint, tmp_path):
    a = Trainer(intake_dir, tiny_checkpoint, tmp_path / "r", small(steps=2, log_every=1)).run()["file"]
    b = Trainer(intake_dir, tiny_checkpoint, tmp_path / "r", small(steps=2, log_every=1)).run()["file"]
    assert a != b


def a1111_compvis_name(kohya_key: str) -> str:
    """A1111 1.10.1's rule for SD1 kohya UNet keys (extensions-builtin/Lora/networks.py,
    convert_diffusers_name_to_compvis), restated: down_blocks_i_{attentions|resnets}_j ->
    input_blocks_{1+3i+j}_{1|0}; mid_block_attentions_0 -> middle_block_1; up_blocks_i_..._j ->
    output_blocks_{3i+j}_{1|0}; the rest of the name is kept for attention layers."""
    import re

    m = re.match(r"lora_unet_down_blocks_(\d+)_attentions_(\d+)_(.+)", kohya_key)
    if m:
        return f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[2])}_1_{m[3]}"
    m = re.match(r"lora_unet_mid_block_attentions_(\d+)_(.+)", kohya_key)
    if m:
        return f"diffusion_model_middle_block_1_{m[2]}"
    m = re.match(r"lora_unet_up_blocks_(\d+)_attentions_(\d+)_(.+)", kohya_key)
    if m:
        return f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[2])}_1_{m[3]}"
    m = re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", kohya_key)
    if m:
        return f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"
    return kohya_key


def test_keys_hit_the_modules_a1111_and_forge_patch_for_every_sd15_layer():
    """At full SD1.5 shape: each key A1111 maps must name a real compvis module, and each key must be
    'lora_unet_' + a real diffusers module path (Forge's ComfyUI-style map accepts exactly those)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = tiny.full_size_configs()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg["unet"])
        text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    # the WebUI's module names: A1111 names every module of the LDM model and of the CLIP wrapper
    compvis = {"diffusion_model_" + ldm_layout.unet_key(k, cfg["unet"]).rsplit(".", 1)[0].replace(".", "_")
               for k in unet.state_dict()}
    compvis |= {"transformer_" + k.rsplit(".", 1)[0].replace(".", "_") for k in text.state_dict()}
    diffusers_names = {n.replace(".", "_") for n, _ in unet.named_modules()}
    layers = lora.inject(unet, text, rank=4, alpha=4, seed=0, feed_forward=True, train_text=True)
    unet_keys = [k for k in layers if k.startswith("lora_unet_")]
    assert len(unet_keys) == 16 * 10  # 16 transformer blocks x (attn1 q/k/v/out + attn2 q/k/v/out + ff 2)
    for key in layers:
        assert a1111_compvis_name(key) in compvis, key
        if key.startswith("lora_unet_"):
            assert key[len("lora_unet_"):] in diffusers_names, key
    assert len([k for k in layers if k.startswith("lora_te_")]) == 12 * 4


def test_lora_loads_into_the_host_weight_one_changes_zero_does_not(intake_dir, tiny_checkpoint, host, tmp_path):
    result = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=20, learning_rate=5e-3)).run()
    req = dict(prompt="photo of ohwx person", width=64, height=64, steps=4, seed=9)
    plain = np.asarray(host.txt2img(Txt2ImgRequest(**req)).images[0], np.int16)
    zero = np.asarray(host.txt2img(Txt2ImgRequest(**req, loras=[LoraRef(result["file"], 0.0)])).images[0], np.int16)
    one = np.asarray(host.txt2img(Txt2ImgRequest(**req, loras=[LoraRef(result["file"], 1.0)])).images[0], np.int16)
    assert np.array_equal(plain, zero)
    assert np.abs(plain - one).mean() > 0.5


def test_cancel_then_resume_equals_an_uninterrupted_run(intake_dir, tiny_checkpoint, tmp_path):
    whole = Trainer(intake_dir, tiny_checkpoint, tmp_path / "whole", small()).run()
    out = tmp_path / "parts"

    def stop_at_20(event, data):
        if event == "step" and data["step"] == 20:
            (out / "CANCEL").write_text("")

    first = Trainer(intake_dir, tiny_checkpoint, out, small(), Collect(stop_at_20)).run()
    assert first == {"cancelled": True, "step": 20}
    assert (out / "state" / "state.pt").is_file()
    rest = Trainer(intake_dir, tiny_checkpoint, out, small()).run(resume=True)
    a, b = load_file(whole["file"]), load_file(rest["file"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_report_and_validation_sheet_are_written(intake_dir, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    Trainer(intake_dir, tiny_checkpoint, out, small(steps=20, validate_every=10, validation_images=2,
                                                    validation_steps=3, select="top2")).run()
    report = json.loads((out / "train_report.json").read_text())
    assert [c["step"] for c in report["checkpoints"]] == [10, 20]
    assert all("loss" in c and "identity_similarity" in c for c in report["checkpoints"])
    assert report["choice"]["steps"] and report["choice"]["why"]
    assert (out / "validation_sheet.png").is_file() and len(list((out / "validation").glob("*.png"))) == 4


@pytest.mark.parametrize("change, message", [
    (dict(rank=0), "rank"),
    (dict(steps=-1), "steps"),
    (dict(name="../evil"), "name"),
    (dict(resolution=100), "resolution"),
    (dict(select="worst"), "select"),
])
def test_bad_parameters_are_refused(intake_dir, tiny_checkpoint, tmp_path, change, message):
    with pytest.raises(HostError, match=message):
        Trainer(intake_dir, tiny_checkpoint, tmp_path / "r", small(**change))
    assert not (tmp_path / "r").exists()


def test_missing_or_wrong_checkpoint_and_intake(intake_dir, tmp_path):
    with pytest.raises(HostError, match="Checkpoint not found"):
        Trainer(intake_dir, tmp_path / "none.safetensors", tmp_path / "r", small()).run()
    sdxl = tmp_path / "sdxl.safetensors"
    save_file({"conditioner.embedders.0.x": torch.zeros(1), "model.diffusion_model.input_blocks.0.0.weight":
               torch.zeros(1)}, str(sdxl))
    with pytest.raises(HostError, match="SDXL"):
        Trainer(intake_dir, sdxl, tmp_path / "r2", small()).run()
    with pytest.raises(HostError, match="not an intake folder"):
        Trainer(tmp_path, sdxl, tmp_path / "r3", small())
    with pytest.raises(HostError, match="Nothing to resume"):
        Trainer(intake_dir, "tiny", tmp_path / "r4", small()).run(resume=True)


def test_sigterm_stops_the_cli_resumably(intake_dir, tmp_path, data_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lib_profile", "train", str(intake_dir), "--checkpoint", "tiny", "--name", "anna",
           "--out", str(out), "--steps", "100000", "--resolution", "64", "--batch-size", "1", "--log-every", "1",
           "--validation-images", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PROFILE_STUDIO_DIR=str(data_dir)))
    for line in proc.stdout:
        if '"event": "step"' in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["phase"] == "cancelled" and last["resumable"] is True
    assert (out / "state" / "state.pt").is_file()


def test_text_encoder_and_feed_forward_options_export_their_layers(intake_dir, tiny_checkpoint, tmp_path):
    result = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run",
                     small(steps=3, log_every=1, train_text_encoder=True, feed_forward=True)).run()
    keys = load_file(result["file"]).keys()
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert any("_ff_net_0_proj." in k for k in keys) and any("_ff_net_2." in k for k in keys)


def test_cuda_graph_is_for_gpu_runs_with_cached_captions_only(intake_dir, tiny_checkpoint, tmp_path):
    trainer = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(steps=2))
    trainer.prepare()
    assert not trainer._graphed()  # CPU: eager
    trainer.gpu = True
    assert trainer._graphed()
    for change in ({"train_text_encoder": True}, {"cuda_graph": False}, {"optimizer": "adamw8bit"}):
        trainer.cfg = small(steps=2, **change)
        assert not trainer._graphed(), change


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_step_replayed_as_a_cuda_graph_trains_like_the_eager_step(intake_dir, tiny_checkpoint, tmp_path):
    runs = {}
    for graph in (True, False):
        events = Collect()
        cfg = small(steps=20, device="cuda", cuda_graph=graph, learning_rate=1e-3)
        runs[graph] = load_file(Trainer(intake_dir, tiny_checkpoint, tmp_path / str(graph), cfg, events).run()["file"])
        assert [e["cuda_graph"] for e in events.items if "cuda_graph" in e] == [graph]
    a, b = runs[True], runs[False]
    scale = max(a[k].abs().max().item() for k in a if k.endswith("up.weight"))
    # equal up to the GPU's own non-determinism (atomic adds in the backward kernels)
    assert all((a[k] - b[k]).abs().max().item() < 0.25 * scale for k in a if k.endswith("up.weight"))


class _FixedScorer:
    """Stand-in identity scorer: later validations score higher, so best/topK pick known checkpoints."""

    def __init__(self, intake):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return 0.1 * self.calls


@pytest.mark.parametrize("select", ["best", "last", "top1", "top2", "top3"])
def test_network_dim_and_alpha_metadata_match_the_saved_tensors(intake_dir, tiny_checkpoint, tmp_path, monkeypatch,
                                                               select):
    """An average of checkpoints is re-factored with alpha = rank; the metadata must say what the file holds."""
    from lib_profile.train import validation

    monkeypatch.setattr(validation, "_Scorer", _FixedScorer)
    result = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run",
                     small(steps=6, rank=4, alpha=8.0, validate_every=2, validation_images=1, validation_steps=1,
                           log_every=2, save_every=2, select=select)).run()
    with safe_open(result["file"], "pt") as f:
        meta = f.metadata()
        alphas = {float(f.get_tensor(k)) for k in f.keys() if k.endswith(".alpha")}
        ranks = {f.get_tensor(k).shape[0] for k in f.keys() if k.endswith(".lora_down.weight")}
    assert len(alphas) == 1 and len(ranks) == 1
    assert float(meta["ss_network_alpha"]) == alphas.pop() and int(meta["ss_network_dim"]) == ranks.pop() == 4
    averaged = select in ("top2", "top3")
    assert float(meta["ss_network_alpha"]) == (4.0 if averaged else 8.0)
    assert len(result["report"]["choice"]["steps"]) == {"top2": 2, "top3": 3}.get(select, 1)


def test_validation_conditioning_is_the_studios(intake_dir, tiny_checkpoint, tmp_path, host):
    """The validation portraits' UNet sees the conditioning the studio's generation gives the same prompt:
    CLIP skip 2, emphasis, several 75-token chunks, negative padded alike."""
    from lib_profile.train.trainer import VALIDATION_NEGATIVE

    prompt = "(portrait photo:1.3) of a person, " + ", ".join(f"detail{i}" for i in range(60))
    trainer = Trainer(intake_dir, tiny_checkpoint, tmp_path / "run", small(validation_images=1, validation_steps=1))
    trainer.prepare()
    trainer.validation_prompts = lambda: [prompt]
    seen = []
    handle = trainer.model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach().clone()), with_kwargs=True)
    try:
        trainer._validate(1)
    finally:
        handle.remove()
    request = Txt2ImgRequest(prompt=prompt, negative_prompt=VALIDATION_NEGATIVE, clip_skip=2, width=64, height=64)
    cond, uncond = host._embeds(request, 1).at(0)
    assert cond.shape[1] >= 2 * 77 and trainer.cfg.clip_skip == 2  # several chunks
    assert seen and all(torch.allclose(s, torch.cat([uncond, cond]), atol=1e-5) for s in seen)


class _Unet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, noisy, t, encoder_hidden_states):
        return type("Out", (), {"sample": noisy * self.w})()


class _RecordingScaler(torch.amp.GradScaler):
    def __init__(self):
        super().__init__("cpu", init_scale=2.0 ** 8)
        self.calls = []

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)


def test_fp16_training_uses_a_gradient_scaler():
    """float16 autocast (a GPU without bfloat16) gets a scaler: the loss is scaled, an overflowing step skipped.
    Run on the CPU with a stand-in UNet and a CPU GradScaler in place of the CUDA one."""
    import warnings

    from lib_profile.train.step import TrainStep, make_scaler, needs_scaler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CUDA scaler made without CUDA warns that it is disabled
        assert isinstance(make_scaler(torch.float16, torch.device("cuda")), torch.amp.GradScaler)
    assert needs_scaler(torch.float16, torch.device("cuda"))
    assert make_scaler(torch.bfloat16, torch.device("cuda")) is None
    assert make_scaler(torch.float32, torch.device("cpu")) is None
    unet, scaler = _Unet(), _RecordingScaler()
    optimizer = torch.optim.SGD(unet.parameters(), lr=0.1)
    step = TrainStep(unet, torch.zeros(2, 2, 4, 2, 2), lambda index: torch.zeros(len(index), 1, 1), torch.zeros(2, dtype=torch.long),
                     torch.full((1000,), 0.5), optimizer, torch.float16, torch.device("cpu"), scaler)
    draws = (torch.tensor([0]), torch.tensor([0]), torch.tensor([10]))
    step(*draws, torch.ones(1, 4, 2, 2))
    assert scaler.calls == ["scale", "step"] and float(unet.w) != 1.0
    before, scale = float(unet.w), scaler.get_scale()
    step(*draws, torch.full((1, 4, 2, 2), float("inf")))  # an overflow: the step is skipped, the scale backs off
    assert float(unet.w) == before and scaler.get_scale() < scale
    trainer = Trainer.__new__(Trainer)
    trainer.cfg, trainer.gpu, trainer.device, trainer.amp_dtype = small(), True, torch.device("cuda"), torch.float16
    assert not trainer._graphed()  # the scaler's inf check runs eagerly, not in a CUDA graph
