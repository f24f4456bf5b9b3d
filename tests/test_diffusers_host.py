"""The diffusers host through the host protocol: determinism, ControlNet, LoRA, interrupt, inpaint."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from lib_profile.hosts.base import (ControlUnit, HostError, Img2ImgRequest, InpaintRequest, Interrupted, LoraRef,
                                    RunControl, Txt2ImgRequest)
from lib_profile.lora import keys as lora_keys


def arr(image):
    return np.asarray(image, dtype=np.int16)


def req(**kw):
    base = dict(prompt="studio portrait photo of a person", negative_prompt="blurry", width=64, height=64, steps=4,
                sampler="Euler a", seed=42)
    base.update(kw)
    return Txt2ImgRequest(**base)


def test_same_seed_same_image_other_seed_other_image(host):
    a, b = host.txt2img(req()), host.txt2img(req())
    c = host.txt2img(req(seed=43))
    assert np.array_equal(arr(a.images[0]), arr(b.images[0]))
    assert not np.array_equal(arr(a.images[0]), arr(c.images[0]))
    assert a.seeds == [42] and a.params["model"] == "tiny-sd15"


def test_batch_gives_consecutive_seeds_like_the_webui(host):
    batch = host.txt2img(req(batch_size=2))
    second = host.txt2img(req(seed=43))
    assert batch.seeds == [42, 43]
    # batch numerics may differ by a rounding step, nothing more
    assert np.abs(arr(batch.images[1]) - arr(second.images[0])).max() <= 2


def test_random_seed_is_resolved_and_reported(host):
    result = host.txt2img(req(seed=-1))
    assert 0 <= result.seeds[0] < 2**32
    assert f"Seed: {result.seeds[0]}" in result.infotexts[0]


def test_controlnet_changes_the_output(host, tiny_controlnet):
    plain = host.txt2img(req())
    pose = Image.new("RGB", (64, 64))
    pose.paste((255, 0, 0), (20, 10, 44, 54))
    steered = host.txt2img(req(controlnets=[ControlUnit("pose", pose, str(tiny_controlnet), weight=1.0)]))
    assert np.abs(arr(plain.images[0]) - arr(steered.images[0])).mean() > 1.0
    assert "ControlNet 0: \"Kind: pose" in steered.infotexts[0]


def test_two_controlnet_units_run_together(host, tiny_controlnet):
    pose, tile = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    units = [ControlUnit("pose", pose, str(tiny_controlnet)), ControlUnit("tile", tile, str(tiny_controlnet), 0.5)]
    result = host.txt2img(req(controlnets=units))
    assert result.images[0].size == (64, 64)


def write_random_lora(path, unet, text_encoder, rank=4, seed=0):
    """A kohya-format LoRA touching every attention projection of the UNet and the text encoder."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                          "attn1.to_out.0", "attn2.to_out.0")):
            key = lora_keys.unet_module_key(name)
            tensors[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.5
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.5
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    for name, module in text_encoder.named_modules():
        if name.endswith(("self_attn.q_proj", "self_attn.v_proj")):
            key = lora_keys.te_module_key(name)
            tensors[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.5
            tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.5
            tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path), metadata={"ss_output_name": path.stem})
    return path


@pytest.fixture(scope="module")
def random_lora(host, tmp_path_factory):
    return write_random_lora(tmp_path_factory.mktemp("lora") / "person.safetensors", host.model.unet,
                             host.model.text_encoder)


def test_lora_weight_zero_equals_no_lora_and_one_differs(host, random_lora):
    plain = host.txt2img(req())
    zero = host.txt2img(req(loras=[LoraRef(str(random_lora), 0.0)]))
    one = host.txt2img(req(loras=[LoraRef(str(random_lora), 1.0)]))
    assert np.array_equal(arr(plain.images[0]), arr(zero.images[0]))
    assert np.abs(arr(plain.images[0]) - arr(one.images[0])).mean() > 1.0
    assert "Lora weights: \"person: 1.0\"" in one.infotexts[0] and "<lora:person:1.0>" in one.infotexts[0]


def test_lora_is_removed_after_the_call(host, random_lora):
    before = {k: v.clone() for k, v in host.model.unet.state_dict().items()}
    plain = host.txt2img(req())
    host.txt2img(req(loras=[LoraRef(str(random_lora), 0.8)]))
    after = host.model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(arr(plain.images[0]), arr(host.txt2img(req()).images[0]))


def test_missing_lora_file_is_a_clear_error(host, tmp_path):
    with pytest.raises(HostError, match="LoRA file not found"):
        host.txt2img(req(loras=[LoraRef(str(tmp_path / "gone.safetensors"))]))


def test_interrupt_stops_within_one_step(host):
    calls = []
    hook = host.model.unet.register_forward_hook(lambda *a: calls.append(1))
    steps_seen = []
    try:
        control = RunControl(on_step=lambda s, t: steps_seen.append((s, t)),
                             should_interrupt=lambda: len(steps_seen) >= 2)
        with pytest.raises(Interrupted) as info:
            host.txt2img(req(steps=10), control)
    finally:
        hook.remove()
    assert info.value.step == 2 and info.value.total == 10
    assert steps_seen == [(1, 10), (2, 10)]
    assert len(calls) == 2  # one batched (cond + uncond) UNet call per step, none after the stop


def test_progress_reports_every_step(host):
    seen = []
    host.txt2img(req(steps=5), RunControl(on_step=lambda s, t: seen.append((s, t))))
    assert seen == [(i, 5) for i in range(1, 6)]


def test_img2img_runs_the_denoised_fraction_of_steps(host, astronaut):
    seen = []
    init = astronaut.resize((64, 64))
    result = host.img2img(Img2ImgRequest(prompt="photo", width=64, height=64, steps=10, seed=1, init_image=init,
                                         denoising_strength=0.5),
                          RunControl(on_step=lambda s, t: seen.append(t)))
    assert result.images[0].size == (64, 64) and seen[-1] == 5
    assert "Denoising strength: 0.5" in result.infotexts[0]


def test_inpaint_only_masked_changes_only_the_masked_region(host, astronaut):
    image = astronaut.resize((128, 128))
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (48, 32, 80, 72))
    result = host.inpaint(InpaintRequest(prompt="face", width=64, height=64, steps=4, seed=2, init_image=image,
                                         mask=mask, padding=8, mask_blur=2, denoising_strength=0.75))
    out, before = arr(result.images[0]), arr(image)
    grown = np.zeros(out.shape[:2], bool)
    grown[32 - 8:72 + 8, 48 - 8:80 + 8] = True  # the mask, blurred by 2 px, lies well inside this
    assert np.array_equal(out[~grown], before[~grown])
    assert np.abs(out[32:72, 48:80] - before[32:72, 48:80]).mean() > 5
    assert result.params["inpaint_region"] is not None


def test_bad_requests_say_what_is_wrong(host):
    with pytest.raises(HostError, match="multiple of 8"):
        host.txt2img(req(width=100))
    with pytest.raises(HostError, match="steps"):
        host.txt2img(req(steps=0))
    with pytest.raises(HostError, match="init image"):
        host.img2img(Img2ImgRequest(prompt="x"))
    with pytest.raises(HostError, match="mask is empty"):
        host.inpaint(InpaintRequest(prompt="x", width=64, height=64, init_image=Image.new("RGB", (64, 64)),
                                    mask=Image.new("L", (64, 64), 0)))
    with pytest.raises(HostError, match="ControlNet model not found"):
        host.txt2img(req(controlnets=[ControlUnit("pose", Image.new("RGB", (64, 64)), "/nope/cn.safetensors")]))


def test_upscale_by_name(host):
    image = Image.new("RGB", (64, 96), (10, 20, 30))
    assert host.upscale(image, 2.0, "Lanczos").size == (128, 192)
    with pytest.raises(HostError, match="Unknown upscaler"):
        host.upscale(image, 2.0, "R-ESRGAN 4x+")


def test_long_prompts_are_not_truncated(host):
    words = ", ".join(f"word{i}" for i in range(60))  # well over 75 tokens
    short = host.txt2img(req(prompt=words.split(",")[0]))
    long = host.txt2img(req(prompt=words))
    assert not np.array_equal(arr(short.images[0]), arr(long.images[0]))
    cond, uncond = host.encode_prompts(words, "", 1)
    assert cond.shape == uncond.shape and cond.shape[1] % 77 == 0 and cond.shape[1] > 77


def test_clip_skip_changes_the_conditioning(host):
    one, _ = host.encode_prompts("a photo", "", 1)
    two, _ = host.encode_prompts("a photo", "", 2)
    assert not torch.allclose(one, two)


def test_hires_fix_is_the_first_pass_upscaled_and_denoised_again(host):
    """Hires fix = the plain image, upscaled, then an img2img pass at the larger size with the same seed."""
    hires = dict(hires_scale=1.5, hires_steps=6, hires_denoising=0.5)
    steps = []
    res = host.txt2img(req(hires_upscaler="Lanczos", **hires), RunControl(on_step=lambda s, t: steps.append((s, t))))
    assert res.images[0].size == (96, 96) and res.params["first_pass_size"] == [64, 64]
    assert "Hires upscale: 1.5" in res.infotexts[0] and "Hires upscaler: Lanczos" in res.infotexts[0]
    assert steps == [(i, 4 + 3) for i in range(1, 8)]  # 4 steps, then half of 6
    first = host.txt2img(req()).images[0].resize((96, 96), Image.LANCZOS)
    again = host.img2img(Img2ImgRequest(**{**req().__dict__, "width": 96, "height": 96, "steps": 6,
                                           "init_image": first, "denoising_strength": 0.5}))
    assert np.abs(arr(res.images[0]) - arr(again.images[0])).max() <= 1
    latent = host.txt2img(req(**hires))  # "Latent": the first pass's latents are upscaled, not its image
    assert latent.images[0].size == (96, 96) and not np.array_equal(arr(latent.images[0]), arr(res.images[0]))
    for bad, message in ((dict(hires_scale=5), "hires_scale"), (dict(hires_scale=2, hires_denoising=0), "hires_denoising"),
                         (dict(hires_scale=2, hires_upscaler="ESRGAN"), "hires upscaler")):
        with pytest.raises(HostError, match=message):
            host.txt2img(req(**bad))


def test_a_lazy_host_loads_its_checkpoint_on_first_use_only(tmp_path, tiny_checkpoint):
    """``lazy=True`` (``serve --queue --no-worker``: a front that runs no job): nothing is loaded when the host is
    made, so a checkpoint that cannot load does not stop it; the first use of ``model`` loads it (or raises the
    load's HostError then), and every later use gets the same modules."""
    from lib_profile.hosts.diffusers.host import DiffusersHost

    import torch
    from safetensors.torch import save_file

    sd2 = tmp_path / "sd2.safetensors"  # a family the host cannot load (read from the header, nothing loaded)
    save_file({"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 1)}, str(sd2))
    refused = DiffusersHost(sd2, device="cpu", data_dir=tmp_path, lazy=True)  # eager: HostError here
    assert refused._model is None
    with pytest.raises(HostError, match="This is an SD2 checkpoint"):
        refused.model
    host = DiffusersHost(tiny_checkpoint, device="cpu", lazy=True)
    assert host._model is None
    first = host.model
    assert first is host.model and first.unet.device.type == "cpu" and host.checkpoint_path().endswith(".safetensors")
