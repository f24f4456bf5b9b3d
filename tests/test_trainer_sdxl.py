"""The face LoRA trainer on SDXL: kohya's SDXL key names as A1111 1.10.1 and Forge resolve them, the SDXL metadata,
SDXL's conditioning (two encoders, pooled text, size/crop numbers), cancel/resume, validation and selection, and
the family message for a checkpoint the trainer cannot load.

The models are the tiny SDXL-shaped ones of :mod:`lib_profile.hosts.diffusers.tiny_sdxl`, given to the trainer as
loaded components (:func:`lib_profile.train.sdxl.sdxl_model`, the seam an SDXL checkpoint loader plugs into)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lib_profile import families
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers import ldm_layout, sgm_layout, tiny_sdxl
from lib_profile.train import lora
from lib_profile.train.sdxl import sdxl_model
from lib_profile.train.trainer import TrainConfig, Trainer
from tests.test_trainer import Collect


def small(name="sdxl-anna", **kw):
    base = dict(name=name, steps=8, resolution=64, batch_size=2, validate_every=4, validation_images=0,
                log_every=2, save_every=2, select="last", device="cpu")
    base.update(kw)
    return TrainConfig(**base)




@pytest.fixture(scope="module")
def tokenizer(data_dir):
    from lib_profile import paths
    from lib_profile.prompts.tokenizer import load_tokenizer

    return load_tokenizer(str(paths.tokenizer_dir(data_dir)))


def tiny(tokenizer, lean=False):
    """Fresh tiny SDXL components (the trainer adds LoRA layers to the modules it is given); ``lean``: one
    transformer block per attention and a 2-layer second encoder, for the tests that train many steps."""
    configs = None
    if lean:
        configs = tiny_sdxl.tiny_sdxl_configs()
        configs["unet"]["transformer_layers_per_block"] = [1, 1, 1]
        configs["text_encoder_2"]["num_hidden_layers"] = 2
    unet, vae, text, text_2 = tiny_sdxl.build_modules(configs)
    return sdxl_model(unet, vae, text, text_2, tokenizer, None, "tiny-sdxl.safetensors")


# ---------------------------------------------------------------- the WebUIs' name rules, restated

def a1111_sdxl_name(kohya_key: str, names: set[str]) -> str | None:
    """A1111 1.10.1's lookup of an SDXL kohya module key (extensions-builtin/Lora/networks.py ``load_network``:
    ``convert_diffusers_name_to_compvis``, the ``re_x_proj`` retry, then ``lora_unet`` -> ``diffusion_model`` and
    ``lora_te1_text_model`` -> ``0_transformer_text_model``); ``lora_te2_`` keys go to open_clip's names
    (``1_model_transformer_resblocks_N_`` with ``self_attn`` -> ``attn``, ``mlp_fc1`` -> ``mlp_c_fc``, ``mlp_fc2`` ->
    ``mlp_c_proj``; q/k/v onto the fused ``attn``). ``names``: the model's ``network_layer_mapping`` names. The
    matched name, or None (A1111 skips the module: "Failed to match keys")."""
    key = kohya_key
    m = re.match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", key)
    if m:
        rest = m[2].replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        key = f"1_model_transformer_resblocks_{m[1]}_{rest}"
    if key in names:
        return key
    m = re.match(r"(.*)_([qkv]_proj)$", key)
    if m and m[1] in names:
        return m[1]
    if "lora_unet" in kohya_key:
        key = kohya_key.replace("lora_unet", "diffusion_model")
    elif "lora_te1_text_model" in kohya_key:
        key = kohya_key.replace("lora_te1_text_model", "0_transformer_text_model")
    return key if key in names else None


def a1111_names(unet_cfg, unet_sd, text_sd, text_2_sd) -> set[str]:
    """A1111's SDXL ``network_layer_mapping`` names (``assign_network_names_to_compvis_modules``): the SGM model's
    modules as ``diffusion_model_...``, each conditioner embedder's wrapped modules as ``<i>_...`` (0: the CLIP
    wrapper, whose ``transformer`` is the transformers model; 1: open_clip's model)."""
    def module(name):
        return name.rsplit(".", 1)[0].replace(".", "_")

    names = {"diffusion_model_" + module(ldm_layout.unet_key(k, unet_cfg)) for k in unet_sd}
    names |= {"0_transformer_" + module(k) for k in text_sd}
    names |= {"1_model_" + module(k) for k in sgm_layout.openclip_state_dict(text_2_sd)}
    return names


FORGE_CLIP_MAP = ("mlp.fc1", "mlp.fc2", "self_attn.k_proj", "self_attn.q_proj", "self_attn.v_proj",
                  "self_attn.out_proj")


def forge_keys(unet_cfg, unet_sd, text_sd, text_2_sd) -> set[str]:
    """Forge's SDXL key map (packages_3rdparty/comfyui_lora_collection/lora.py ``model_lora_keys_unet``: ``lora_unet_``
    + each ``diffusion_model.*.weight`` name of its LDM-named UNet; ``model_lora_keys_clip``: for layers 0..31 and
    the six names of ``LORA_CLIP_MAP``, ``lora_te1_``/``lora_te2_text_model_encoder_layers_{b}_{name}`` when
    ``clip_l``/``clip_g.transformer.text_model.encoder.layers.{b}.{name}.weight`` exists)."""
    out = {"lora_unet_" + ldm_layout.unet_key(k, unet_cfg).removesuffix(".weight").replace(".", "_")
           for k in unet_sd if k.endswith(".weight")}
    for prefix, sd in (("lora_te1_", text_sd), ("lora_te2_", text_2_sd)):
        for b in range(32):
            for c in FORGE_CLIP_MAP:
                if f"text_model.encoder.layers.{b}.{c}.weight" in sd:
                    out.add(f"{prefix}text_model_encoder_layers_{b}_{c.replace('.', '_')}")
    return out


def test_keys_are_kohyas_sdxl_names_that_a1111_and_forge_patch_for_every_sdxl_layer():
    """At SDXL base's full shape: every key is 'lora_unet_' + the layer's SGM name, 'lora_te1_'/'lora_te2_' + the
    encoders' transformers names, and both WebUIs' rules map each one to a layer."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from lib_profile.lora import keys

    cfg = tiny_sdxl.sdxl_base_configs()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg["unet"])
        text = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"]))
    sds = (dict(unet.config), unet.state_dict(), text.state_dict(), text_2.state_dict())
    a1111, forge = a1111_names(*sds), forge_keys(*sds)
    config = dict(unet.config)
    layers = lora.inject(unet, None, rank=4, alpha=4, seed=0, feed_forward=True, train_text=True,
                         unet_key=lambda n: keys.sdxl_unet_module_key(n, config),
                         text_encoders=[(text, keys.te1_module_key), (text_2, keys.te2_module_key)])
    unet_keys = [k for k in layers if k.startswith("lora_unet_")]
    assert len(unet_keys) == families.SDXL.cross_attention_layers * 10  # attn1 q/k/v/out, attn2 q/k/v/out, ff 2
    assert len([k for k in layers if k.startswith("lora_te1_")]) == 12 * 4
    assert len([k for k in layers if k.startswith("lora_te2_")]) == 32 * 4
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in layers  # kohya's own example
    assert "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_out_0" in layers
    assert "lora_unet_output_blocks_2_1_transformer_blocks_9_ff_net_2" in layers
    for key in layers:
        assert a1111_sdxl_name(key, a1111) is not None, key
        assert key in forge, key
        assert not key.startswith(("lora_unet_down_blocks", "lora_unet_up_blocks", "lora_unet_mid_block", "lora_te_"))
    assert families.lora_family(layers) == families.SDXL.name


def test_trained_sdxl_lora_has_exactly_the_kohya_sdxl_names_and_metadata(intake_dir, tokenizer, tmp_path):
    events = Collect()
    model = tiny(tokenizer)
    config = dict(model.unet.config)
    result = Trainer(intake_dir, model, tmp_path / "run",
                     small(steps=2, train_text_encoder=True, feed_forward=True, rank=4, alpha=4.0), events).run()
    path = Path(result["file"])
    with safe_open(str(path), "pt") as f:
        names, meta = set(f.keys()), f.metadata()
    fresh = tiny_sdxl.build_modules()
    sds = (config, fresh[0].state_dict(), fresh[2].state_dict(), fresh[3].state_dict())
    a1111, forge = a1111_names(*sds), forge_keys(*sds)
    modules = {n.split(".", 1)[0] for n in names}
    expected = {"lora_unet_" + ldm_layout.unet_key(n + ".weight", config).removesuffix(".weight").replace(".", "_")
                for n, m in fresh[0].named_modules()
                if isinstance(m, torch.nn.Linear) and n.endswith(lora.ATTENTION + lora.FEED_FORWARD)}
    for i, prefix in ((2, "lora_te1_"), (3, "lora_te2_")):
        expected |= {prefix + n.replace(".", "_") for n, m in fresh[i].named_modules()
                     if isinstance(m, torch.nn.Linear) and n.endswith(lora.TEXT)}
    assert modules == expected
    assert names == {f"{m}.{part}" for m in modules for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert all(a1111_sdxl_name(m, a1111) is not None and m in forge for m in modules)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert meta["ss_resolution"] == "(64, 64)" and meta["modelspec.resolution"] == "64x64"
    assert families.lora_family(names, meta) == families.lora_family(names) == families.SDXL.name
    train = next(e for e in events.items if e.get("phase") == "train")
    assert train["family"] == "SDXL" and train["resolution"] == 64


def test_the_unet_gets_sdxls_text_pooled_text_and_size_numbers(intake_dir, tokenizer, tmp_path):
    from PIL import Image

    trainer = Trainer(intake_dir, tiny(tokenizer), tmp_path / "run", small(steps=1, batch_size=3))
    trainer.prepare()
    seen = []
    handle = trainer.model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        trainer.run()
    finally:
        handle.remove()
    kw = seen[0]
    assert kw["encoder_hidden_states"].shape == (3, 77, 32 + 48)
    added = kw["added_cond_kwargs"]
    assert added["text_embeds"].shape == (3, 48)
    h, w = Image.open(trainer.intake.crops[0]).size[::-1]
    assert added["time_ids"].tolist() == [[h, w, 0, 0, 64, 64]] * 3
    context, pooled = trainer.conditioning.encode(trainer.intake.captions[0])
    assert torch.equal(trainer.conditioning.text_cache[0][0], context[0])
    # CLIP-L's penultimate layer, then bigG's; bigG reads pad id 0 after the end token
    ids = tokenizer(trainer.intake.captions[0], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        z_1 = trainer.model.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        end = int((ids[0] == tokenizer.eos_token_id).nonzero()[0])
        ids_2 = ids.clone()
        ids_2[0, end + 1:] = 0
        out_2 = trainer.model.text_encoder_2(ids_2, output_hidden_states=True)
    assert torch.allclose(context[..., :32], z_1, atol=1e-6)
    assert torch.allclose(context[..., 32:], out_2.hidden_states[-2], atol=1e-6)
    assert torch.allclose(pooled, out_2.text_embeds, atol=1e-6)


def test_sdxl_cancel_then_resume_equals_an_uninterrupted_run(intake_dir, tokenizer, tmp_path):
    cfg = dict(steps=4, validate_every=2)
    whole = Trainer(intake_dir, tiny(tokenizer, lean=True), tmp_path / "whole", small(**cfg)).run()
    out = tmp_path / "parts"

    def stop_at_2(event, data):
        if event == "step" and data["step"] == 2:
            (out / "CANCEL").write_text("")

    first = Trainer(intake_dir, tiny(tokenizer, lean=True), out, small(**cfg), Collect(stop_at_2)).run()
    assert first == {"cancelled": True, "step": 2}
    rest = Trainer(intake_dir, tiny(tokenizer, lean=True), out, small(**cfg)).run(resume=True)
    a, b = load_file(whole["file"]), load_file(rest["file"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _FixedScorer:
    """Stand-in identity scorer: later validations score higher."""

    def __init__(self, intake):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return 0.1 * self.calls


def test_sdxl_validation_portraits_are_scored_and_the_best_averaged(intake_dir, tokenizer, tmp_path, monkeypatch):
    from lib_profile.train import validation

    monkeypatch.setattr(validation, "_Scorer", _FixedScorer)
    result = Trainer(intake_dir, tiny(tokenizer, lean=True), tmp_path / "run",
                     small(steps=4, rank=4, alpha=8.0, validate_every=2, validation_images=2, validation_steps=1,
                           select="top2", low_memory=True)).run()  # the 12 GB mode's path: VAE one by one, tiles
    report = result["report"]
    assert report["choice"]["steps"] == [4, 2]
    assert sorted(p.name for p in (tmp_path / "run" / "validation").glob("*.png"))[:2] == ["step-000002-0.png",
                                                                                           "step-000002-1.png"]
    with safe_open(result["file"], "pt") as f:
        meta = f.metadata()
        alphas = {float(f.get_tensor(k)) for k in f.keys() if k.endswith(".alpha")}
    assert alphas == {4.0} and meta["ss_network_alpha"] == "4.0"  # an average is re-factored with alpha = rank
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"


def test_sdxl_resolution_defaults_to_the_familys_and_low_memory_mode_settles_its_settings(intake_dir, tokenizer,
                                                                                       tmp_path):
    trainer = Trainer(intake_dir, tiny(tokenizer), tmp_path / "run",
                      small(resolution=None, low_memory=True, validation_images=0))
    trainer._load()
    assert trainer.cfg.resolution == families.SDXL.native_size == 1024
    assert trainer.cfg.gradient_checkpointing is True and trainer.model.unet.is_gradient_checkpointing
    assert not trainer._graphed()
    assert type(trainer._optimizer()).__name__ == "AdamW"  # on the CPU: no 8-bit states


def test_an_sdxl_checkpoint_file_trains_or_is_refused_at_once_with_the_family_message(intake_dir, tmp_path, data_dir):
    """Without the host's SDXL loader the run stops at loading with the family message, writing no LoRA; with it,
    the file trains as the loaded components do."""
    path = tiny_sdxl.ensure_tiny_sdxl(data_dir / "cache")
    try:
        from lib_profile.hosts.diffusers.sdxl_checkpoint import load_sdxl  # noqa: F401
    except ImportError:
        events = Collect()
        with pytest.raises(HostError, match="SDXL") as caught:
            Trainer(intake_dir, path, tmp_path / "run", small(steps=2), events).run()
        assert "pick an SD1.5 model" in str(caught.value)
        assert [e.get("phase") for e in events.items] == ["load"]
        assert not list((tmp_path / "run").glob("*.safetensors"))
        return
    result = Trainer(intake_dir, path, tmp_path / "run", small(steps=2, log_every=1)).run()
    with safe_open(result["file"], "pt") as f:
        assert f.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"


@pytest.mark.parametrize("family", ["SD3", "Flux", "SD2"])
def test_checkpoints_of_other_families_are_refused_at_once(intake_dir, tmp_path, family):
    from safetensors.torch import save_file

    marker = families.family(family).checkpoint_markers[0]
    path = tmp_path / f"{family}.safetensors"
    save_file({f"model.diffusion_model.{marker}0.weight" if family != "SD2" else f"{marker}x.weight": torch.zeros(1),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, str(path))
    with pytest.raises(HostError, match=f"This is an? {family} checkpoint"):
        Trainer(intake_dir, path, tmp_path / "run", small()).run()
