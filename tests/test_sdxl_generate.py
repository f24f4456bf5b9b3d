"""SDXL generation on the diffusers host, on the tiny SDXL-shaped model (``tiny-sdxl``): loading through diffusers'
own converters (and real SDXL's shapes), txt2img/img2img/inpaint with every sampler, A1111's SDXL conditioning
(emphasis, 75-token chunks over both encoders, pooled from the first chunk, an empty negative prompt as zeros,
prompt editing), LoRA tags and the family message, how a feature a family lacks is refused, and the studio's family
defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lib_profile import families
from lib_profile.hosts.base import HostError, Img2ImgRequest, InpaintRequest, LoraRef, Txt2ImgRequest
from lib_profile.hosts.diffusers import samplers, tiny_sdxl
from lib_profile.lora import keys as lora_keys


@pytest.fixture(scope="module")
def sdxl(data_dir):
    from lib_profile.hosts.diffusers.host import DiffusersHost

    return DiffusersHost("tiny-sdxl", device="cpu", data_dir=data_dir)


def _eq(a, b, atol=1e-5):
    return a.shape == b.shape and torch.allclose(a, b, atol=atol, rtol=1e-4)


# ---------------------------------------------------------------- loading

def test_tiny_sdxl_loads_as_the_modules_it_was_built_from(sdxl):
    from transformers import CLIPTextModelWithProjection

    model = sdxl.model
    assert sdxl.model_family == "SDXL" and model.family == "SDXL"
    assert isinstance(model.text_encoder_2, CLIPTextModelWithProjection)
    assert model.unet.config.addition_embed_type == "text_time"
    assert model.tokenizer_2.pad_token_id == 0 and model.tokenizer_2.convert_ids_to_tokens(0) == "!"
    built = tiny_sdxl.build_modules()
    for loaded, ref in zip((model.unet, model.vae, model.text_encoder, model.text_encoder_2), built):
        want = {k: v for k, v in ref.state_dict().items() if not k.endswith("position_ids")}
        got = loaded.state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want), type(ref).__name__
        for key, value in tiny_sdxl.tiny_sdxl_configs()[_part(ref)].items():  # the configs read off the shapes
            if key in ("sample_size", "bos_token_id", "eos_token_id", "pad_token_id") or (
                    key == "projection_dim" and _part(ref) == "text_encoder"):  # not architecture / not used
                continue
            have = getattr(loaded.config, key)
            assert (list(have) if isinstance(have, (list, tuple)) else have) == value, (key, have, value)


def _part(module) -> str:
    name = type(module).__name__
    return {"UNet2DConditionModel": "unet", "AutoencoderKL": "vae", "CLIPTextModel": "text_encoder",
            "CLIPTextModelWithProjection": "text_encoder_2"}[name]


def test_real_sdxl_shapes_give_sdxl_base_configs():
    """SDXL base 1.0's configs (diffusers' hub configs, in :mod:`lib_profile.families`) from its SGM tensors' shapes
    alone (meta tensors: no weights), and diffusers' converters name every tensor the modules expect."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lib_profile.hosts.diffusers.sdxl_checkpoint import infer_configs
    from lib_profile.hosts.diffusers.sgm_layout import OPENCLIP_PREFIX, to_sgm

    unet_cfg = dict(tiny_sdxl.tiny_sdxl_configs()["unet"], block_out_channels=[320, 640, 1280],
                    transformer_layers_per_block=[1, 2, 10], cross_attention_dim=2048, attention_head_dim=[5, 10, 20],
                    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, sample_size=128)
    clip = dict(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5)
    te1 = dict(clip, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               hidden_act="quick_gelu")
    te2 = dict(clip, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
               projection_dim=1280, hidden_act="gelu")
    vae_cfg = dict(tiny_sdxl.tiny_sdxl_configs()["vae"], block_out_channels=[128, 256, 512, 512], layers_per_block=2)
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        parts = (UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg), CLIPTextModel(CLIPTextConfig(**te1)),
                 CLIPTextModelWithProjection(CLIPTextConfig(**te2)))
        sd = to_sgm(*parts)
    cfg = infer_configs(sd)
    for key in ("block_out_channels", "transformer_layers_per_block", "cross_attention_dim", "attention_head_dim",
                "addition_time_embed_dim", "projection_class_embeddings_input_dim", "sample_size", "down_block_types",
                "up_block_types", "layers_per_block", "use_linear_projection"):
        assert cfg["unet"][key] == unet_cfg[key], key
    assert cfg["unet"]["cross_attention_dim"] == families.SDXL.context_width
    assert {k: cfg["text_encoder"][k] for k in te1} == te1 and {k: cfg["text_encoder_2"][k] for k in te2} == te2
    assert cfg["vae"]["scaling_factor"] == 0.13025 and cfg["vae"]["block_out_channels"] == [128, 256, 512, 512]
    shapes = {k: tuple(v.shape) for k, v in parts[0].state_dict().items()}
    converted = sfu.convert_ldm_unet_checkpoint(sd, cfg["unet"])
    assert {k: tuple(v.shape) for k, v in converted.items()} == shapes
    text_2 = sfu.convert_open_clip_checkpoint(parts[3], sd, prefix=OPENCLIP_PREFIX)
    want = {k: tuple(v.shape) for k, v in parts[3].state_dict().items() if not k.endswith("position_ids")}
    assert {k: tuple(v.shape) for k, v in text_2.items() if not k.endswith("position_ids")} == want


def test_a_refiner_is_refused_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    from lib_profile.hosts.diffusers.sdxl_checkpoint import load_sdxl

    sd = load_file(str(tiny_sdxl.ensure_tiny_sdxl(tmp_path)))
    save_file({k: v for k, v in sd.items() if not k.startswith("conditioner.embedders.0.")},
              str(tmp_path / "refiner.safetensors"))
    with pytest.raises(HostError, match="SDXL refiner"):
        load_sdxl(tmp_path / "refiner.safetensors", tmp_path / "tokenizer")


# ---------------------------------------------------------------- every sampler, every kind

def _init(width, height):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("sampler", samplers.sampler_names())
def test_every_sampler_makes_images_of_the_asked_size(sdxl, sampler):
    base = dict(prompt="portrait photo", negative_prompt="blurry", steps=2, sampler=sampler, seed=3)
    first = sdxl.txt2img(Txt2ImgRequest(**base, width=64, height=96))
    assert [im.size for im in first.images] == [(64, 96)] and first.params["sampler"] == sampler
    again = sdxl.txt2img(Txt2ImgRequest(**base, width=64, height=96))
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))  # a seed, one picture
    img = sdxl.img2img(Img2ImgRequest(**base, width=96, height=64, init_image=_init(80, 80), denoising_strength=0.5))
    assert img.images[0].size == (96, 64)
    mask = Image.new("L", (80, 80))
    mask.paste(255, (20, 20, 60, 60))
    painted = sdxl.inpaint(InpaintRequest(**base, width=64, height=64, init_image=_init(80, 80), mask=mask,
                                          denoising_strength=0.75))
    assert painted.images[0].size == (80, 80)  # pasted back into the original


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_runs_its_second_pass_at_the_larger_size(sdxl, upscaler):
    res = sdxl.txt2img(Txt2ImgRequest(prompt="a", width=64, height=64, steps=2, seed=1, sampler="Euler",
                                      hires_scale=1.5, hires_upscaler=upscaler, hires_steps=2, hires_denoising=0.5))
    assert res.images[0].size == (96, 96) and res.params["first_pass_size"] == [64, 64]


def test_size_conditioning_is_the_pass_size(sdxl, monkeypatch):
    """``add_time_ids`` = (height, width, 0, 0, height, width) of the pass, for prompt and negative prompt."""
    seen = []
    unet = sdxl.model.unet
    original = type(unet).forward

    def spy(self, *args, added_cond_kwargs=None, **kwargs):
        seen.append(added_cond_kwargs["time_ids"].clone())
        return original(self, *args, added_cond_kwargs=added_cond_kwargs, **kwargs)

    monkeypatch.setattr(type(unet), "forward", spy)
    sdxl.txt2img(Txt2ImgRequest(prompt="a", width=64, height=96, steps=1, seed=1, sampler="Euler"))
    assert seen and all(t.tolist() == [[96.0, 64.0, 0.0, 0.0, 96.0, 64.0]] * 2 for t in seen)


# ---------------------------------------------------------------- conditioning (A1111's SDXL rules)

def _raw(model, ids_1):
    """The oracle: both encoders on ``ids_1`` (encoder 2 padded with 0 after the end token), penultimate layers."""
    eos = model.tokenizer.eos_token_id
    ids_2 = ids_1.clone()
    for row in ids_2:
        end = int((row == eos).nonzero()[0])
        row[end + 1:] = 0
    with torch.no_grad():
        out_1 = model.text_encoder(ids_1, output_hidden_states=True)
        out_2 = model.text_encoder_2(ids_2, output_hidden_states=True)
    return out_1.hidden_states[-2], out_2.hidden_states[-2], out_2.text_embeds


def _chunk_ids(model, tokens):
    tok = model.tokenizer
    return [tok.bos_token_id] + tokens + [tok.eos_token_id] * (76 - len(tokens))


def test_short_prompt_matches_diffusers_encode_prompt(sdxl):
    """The oracle is diffusers' own ``StableDiffusionXLPipeline.encode_prompt`` (no emphasis, one chunk), including
    its zeros for an empty negative prompt (``force_zeros_for_empty_prompt``)."""
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    pipe = sdxl.pipeline("txt2img")
    cond, uncond, pooled, neg_pooled = pipe.encode_prompt("a photo of a cat on a red sofa", device=torch.device("cpu"),
                                                          do_classifier_free_guidance=True, negative_prompt=None)
    enc = SdxlPromptEncoder(sdxl.model)
    ours, our_pooled = enc.encode("a photo of a cat on a red sofa")
    assert _eq(ours, cond) and _eq(our_pooled, pooled)
    zeros, zero_pooled = enc.encode("", 1, zero=True)
    assert _eq(zeros, uncond) and _eq(zero_pooled, neg_pooled) and not zeros.any()


@pytest.mark.parametrize("words", [10, 100, 160, 230])  # 1, 2, 3 and 4 chunks of 75 tokens
def test_long_prompts_are_chunks_of_both_encoders_pooled_from_the_first(sdxl, words):
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    model = sdxl.model
    prompt = " ".join(["cat"] * words)
    tokens = model.tokenizer(prompt, add_special_tokens=False).input_ids
    assert len(tokens) == words
    context, pooled = SdxlPromptEncoder(model).encode(prompt)
    n = -(-words // 75)
    assert context.shape == (1, 77 * n, 32 + 48)
    for i in range(n):
        h1, h2, p = _raw(model, torch.tensor([_chunk_ids(model, tokens[75 * i:75 * (i + 1)])]))
        assert _eq(context[0, 77 * i:77 * (i + 1)], torch.cat([h1, h2], -1)[0]), i
        if i == 0:
            assert _eq(pooled, p)


def test_emphasis_scales_each_encoder_and_restores_its_mean_but_not_the_pooled(sdxl):
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    model = sdxl.model
    enc = SdxlPromptEncoder(model)
    plain, plain_pooled = enc.encode("a cat photo")
    strong, strong_pooled = enc.encode("a (cat:1.5) photo")
    tokens = model.tokenizer("a cat photo", add_special_tokens=False).input_ids
    h1, h2, _p = _raw(model, torch.tensor([_chunk_ids(model, tokens)]))
    weights = torch.ones(77)
    weights[2] = 1.5  # BOS, "a", "cat"
    expected = []
    for h in (h1[0], h2[0]):
        z = h * weights[:, None]
        expected.append(z * (h.mean() / z.mean()))
    assert _eq(strong[0], torch.cat(expected, -1)) and not _eq(strong, plain)
    assert _eq(strong_pooled, plain_pooled)


def test_prompt_and_negative_are_padded_to_the_same_chunks(sdxl):
    long = " ".join(["cat"] * 100)
    for prompt, negative in ((long, "blurry"), ("cat", long), (long, "")):
        embeds = sdxl._embeds(Txt2ImgRequest(prompt=prompt, negative_prompt=negative, steps=2), 1)
        cond, uncond = embeds.at(0)
        assert cond.shape == uncond.shape == (1, 154, 80)
        assert (not uncond.any()) == (negative == "")  # an empty negative prompt is zeros


def test_prompt_editing_schedules_context_and_pooled(sdxl):
    from lib_profile.hosts.diffusers.sdxl_prompts import SdxlPromptEncoder

    embeds = sdxl._embeds(Txt2ImgRequest(prompt="a [cat:dog:2] photo", steps=4, sampler="Euler"), 1)
    enc = SdxlPromptEncoder(sdxl.model)
    assert embeds.changes
    cat, dog = enc.encode("a cat photo"), enc.encode("a dog photo")
    assert _eq(embeds.at(0)[0], cat[0]) and _eq(embeds.pooled_at(0)[0], cat[1])
    assert _eq(embeds.at(3)[0], dog[0]) and _eq(embeds.pooled_at(3)[0], dog[1])
    res = sdxl.txt2img(Txt2ImgRequest(prompt="a [cat:dog:2] photo", width=64, height=64, steps=4, sampler="Euler",
                                      seed=2))
    assert res.images[0].size == (64, 64)


# ---------------------------------------------------------------- LoRAs

def _sdxl_lora(path, model, rank=4, seed=0):
    """A kohya SDXL LoRA: SGM UNet names (``lora_unet_input_blocks_...``), ``lora_te1_``/``lora_te2_``."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    cfg = dict(model.unet.config)
    named = [(lora_keys.unet_compvis_key(n, cfg), m) for n, m in model.unet.named_modules()
             if n.endswith(("attn1.to_q", "attn2.to_k", "attn2.to_v", "attn1.to_out.0"))]
    named += [("lora_te1_" + n.replace(".", "_"), m) for n, m in model.text_encoder.named_modules()
              if n.endswith("self_attn.q_proj")]
    named += [("lora_te2_" + n.replace(".", "_"), m) for n, m in model.text_encoder_2.named_modules()
              if n.endswith("self_attn.v_proj")]
    for key, module in named:
        tensors[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.5
        tensors[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.5
        tensors[f"{key}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sdxl_base_v1-0"})
    return path


def test_an_sdxl_lora_tag_applies_and_is_undone(sdxl, tmp_path, monkeypatch):
    _sdxl_lora(tmp_path / "xl_face.safetensors", sdxl.model)
    monkeypatch.setattr(sdxl, "lora_dirs", [tmp_path])
    parts = (sdxl.model.unet, sdxl.model.text_encoder, sdxl.model.text_encoder_2)
    before = {(i, k): v.clone() for i, part in enumerate(parts) for k, v in part.state_dict().items()}
    run = lambda prompt: np.asarray(sdxl.txt2img(Txt2ImgRequest(  # noqa: E731
        prompt=prompt, width=64, height=64, steps=2, sampler="Euler", seed=4)).images[0], dtype=np.int16)
    plain, zero, one = run("a face"), run("a face <lora:xl_face:0>"), run("a face <lora:xl_face:1>")
    assert np.array_equal(plain, zero) and np.abs(plain - one).max() > 0
    after = {(i, k): v for i, part in enumerate(parts) for k, v in part.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sdxl.check_prompt_loras("a <lora:xl_face:1>") == []


@pytest.mark.parametrize("lora", ["strong", "sd2_style"])
def test_a_lora_of_another_family_gets_the_family_message(sdxl, monkeypatch, lora):
    from tests.test_lora_files import DATA

    monkeypatch.setattr(sdxl, "lora_dirs", [DATA])
    said = {"strong": "SD1.5", "sd2_style": "SD2"}[lora]
    message = f"LoRA {lora} is for {said} and the checkpoint is SDXL: use a LoRA made for SDXL"
    before = {k: v.clone() for k, v in sdxl.model.unet.state_dict().items()}
    for call in (lambda: sdxl.check_prompt_loras(f"a <lora:{lora}:1>"),
                 lambda: sdxl.txt2img(Txt2ImgRequest(prompt=f"a <lora:{lora}:0.8>", width=64, height=64, steps=1)),
                 lambda: sdxl.txt2img(Txt2ImgRequest(prompt="a", loras=[LoraRef(str(DATA / f"{lora}.safetensors"))],
                                                     width=64, height=64, steps=1))):
        with pytest.raises(HostError) as err:
            call()
        assert message in str(err.value), str(err.value)
    assert all(torch.equal(before[k], v) for k, v in sdxl.model.unet.state_dict().items())


# ---------------------------------------------------------------- what a family lacks: said, not crashed

def test_sdxl_lacks_nothing_now_and_a_lacking_feature_is_refused_naming_the_family(sdxl, monkeypatch):
    """Attention control (tests/test_sdxl_attention.py) and photo inversion (tests/test_sdxl_inversion.py) run on
    SDXL; a feature an engine lacks is refused by the host and the service naming the family and what to do."""
    import dataclasses

    assert sdxl.attention_control and sdxl.photo_inversion and not sdxl.engine.lacks
    monkeypatch.setattr(sdxl, "engine", dataclasses.replace(sdxl.engine, lacks=("inversion",)))
    cases = [
        lambda: sdxl.denoiser(["a photo"]).__enter__(),
        lambda: sdxl.unsupported("Inverting a photo (restyle, edit or explain a photo)"),  # the service's refusal
    ]
    for call in cases:
        with pytest.raises(HostError, match="not there yet on SDXL checkpoints.*load an SD1.5 checkpoint"):
            error = call()
            if isinstance(error, HostError):
                raise error
    assert sdxl.controlnet_model("pose") is None


# ---------------------------------------------------------------- the studio's defaults per family

@pytest.mark.parametrize("family, size, detail", [("SD1.5", (512, 768), 512), ("SDXL", (832, 1216), 1024)])
def test_studio_plan_defaults_follow_the_family(family, size, detail):
    from lib_profile.studio.plan import build_plan

    plan = build_plan("a portrait", None, None, "warm", 1, 1, family=family)
    assert (plan.width, plan.height) == size == families.family(family).portrait
    assert [s.params["size"] for s in plan.stages if s.kind == "detail"] == [detail, detail]
    assert (build_plan("a", None, None, family=family, width=640).width) == 640  # a setting wins
    posed = build_plan("a", None, "frontal_shoulders", family=family)  # the note names the family's usual file
    assert any(f"{families.family(family).controlnet_files('pose')[0]}.pth" in n for n in posed.notes)


def test_cli_generate_on_tiny_sdxl_uses_the_family_portrait_size(tmp_path, monkeypatch, capsys):
    """The CLI's studio path on tiny-sdxl at the family's default size, scaled down (the family data patched to a
    64x96 portrait: the real 832x1216 is minutes on a CPU even for the tiny model)."""
    from lib_profile.cli import main

    small = dataclasses.replace(families.SDXL, portrait=(64, 96), native_size=64)
    monkeypatch.setitem(families._BY_NAME, "SDXL", small)
    out = tmp_path / "out"
    code = main(["--data-dir", str(tmp_path / "data"), "generate", "--checkpoint", "tiny-sdxl", "--prompt",
                 "studio portrait photo of a woman", "--count", "1", "--seed", "7", "--steps", "2", "--no-detail",
                 "--no-refine", "--no-detail2", "--no-upscale", "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((out / "plan.json").read_text("utf-8"))
    assert (plan["width"], plan["height"]) == (64, 96)
    pngs = [p for p in out.glob("*.png") if p.name != "contact_sheet.png"]
    assert pngs and all(Image.open(p).size == (64, 96) for p in pngs)


def test_a_face_lora_trains_on_sdxl_and_its_portraits_use_it(sdxl, tmp_path):
    """The user's path on an SDXL checkpoint, end to end through the studio: photos -> a train job (the trainer
    process on the host's SDXL file) -> a LoRA with kohya's SDXL keys -> a generate job that applies it."""
    import io

    from safetensors import safe_open

    from lib_profile import sample_photos
    from lib_profile.service import Studio

    def jpeg(image) -> bytes:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=92)
        return buf.getvalue()

    studio = Studio(sdxl, tmp_path / "data", lora_root=tmp_path / "loras", outputs_root=tmp_path / "outputs")
    try:
        studio.create_identity("Anna")
        studio.add_photos("anna", [(f"{n}.jpg", jpeg(im)) for n, im in sample_photos.selfies()[:6]])
        job = studio.train("anna", {"steps": 2, "resolution": 64, "batch_size": 1, "validation_images": 0,
                                    "select": "last", "device": "cpu"})
        done = studio.jobs.wait(job["id"], timeout=900)
        assert done["state"] == "done", (done.get("error"), done.get("messages"))
        loras = list((tmp_path / "loras").rglob("*.safetensors"))
        assert len(loras) == 1, loras
        with safe_open(str(loras[0]), "pt") as f:
            names, meta = list(f.keys()), f.metadata()
        assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
        assert names and all(n.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for n in names)
        assert any(n.startswith("lora_unet_input_blocks_") for n in names)  # SGM names, as A1111/Forge load them
        gen = studio.generate("anna", count=1, seed=3, switches={"detail": False, "refine": False, "detail2": False,
                                                                 "upscale": False}, settings={"steps": 2})
        made = studio.jobs.wait(gen["id"], timeout=900)
        assert made["state"] == "done", made
        image = made["result"]["images"][0]
        parts = {p["part"]: p for stage in image["stages"] for p in stage["parts"]}
        applied = parts[f"LoRA {made['params']['lora']}"]
        assert applied["status"] == "ran" and applied["why"] == "", applied  # every module matched a layer
        assert loras[0].stem == made["params"]["lora"] and image["size"] == [832, 1216]  # SDXL's portrait size
    finally:
        studio.close()


@pytest.mark.parametrize("command", ["explain", "edit", "txt2img"])
def test_cli_explain_and_edit_of_a_prompt_take_the_family_portrait_size(tmp_path, monkeypatch, capsys, command):
    """``explain``/``edit --prompt`` without ``--width``/``--height``: the checkpoint family's 2:3 portrait, as the
    studio's plans (it was SD1.5's 512x768 on every checkpoint); the family data patched to a 64x96 portrait as
    above; a given size wins."""
    from lib_profile.cli import main

    small = dataclasses.replace(families.SDXL, portrait=(64, 96), native_size=64)
    monkeypatch.setitem(families._BY_NAME, "SDXL", small)
    if command == "txt2img":  # the plain command: the family's native square (64 here; 1024 on SDXL)
        out = tmp_path / "plain"
        assert main(["--data-dir", str(tmp_path / "data"), "txt2img", "--checkpoint", "tiny-sdxl", "--prompt", "a",
                     "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0, capsys.readouterr().err
        assert {Image.open(p).size for p in out.glob("*.png")} == {(64, 64)}
        return
    extra = ["--word", "woman"] if command == "explain" else ["--target", "a photo of a man"]
    for size, expected in (([], (64, 96)), (["--width", "96", "--height", "64"], (96, 64))):
        out = tmp_path / f"out{len(size)}"
        code = main(["--data-dir", str(tmp_path / "data"), command, "--checkpoint", "tiny-sdxl", "--prompt",
                     "a photo of a woman", "--seed", "7", "--steps", "2", "--device", "cpu", "--out", str(out),
                     *size, *extra])
        assert code == 0, capsys.readouterr().err
        pngs = list(out.glob("*.png"))
        first = Image.open(next(p for p in pngs if p.name in ("image.png", "source.png")))
        assert first.size == expected, [(p.name, Image.open(p).size) for p in pngs]
