"""Single-file checkpoints in the original layout: loading, the key mapping, bad files."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib_profile.hosts.diffusers import ldm_layout, tiny
from lib_profile.hosts.base import HostError
from lib_profile.hosts.diffusers.checkpoint import load_sd15, read_state_dict
from lib_profile.hosts.diffusers.controlnet_file import load_controlnet


def test_tiny_checkpoint_is_in_the_original_layout(tiny_checkpoint):
    keys = load_file(str(tiny_checkpoint)).keys()
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in keys  # upsampler after a plain up block
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in keys
    assert not any(k.startswith(("down_blocks.", "unet.")) for k in keys)


def test_single_file_loads_to_the_exact_weights(tiny_dir, tiny_checkpoint):
    model = load_sd15(tiny_checkpoint, tiny_dir / "tokenizer")
    unet, vae, text, _ = tiny.build_modules()
    for ours, ref in ((model.unet, unet), (model.vae, vae), (model.text_encoder, text)):
        a, b = ours.state_dict(), ref.state_dict()
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert model.configs["unet"]["block_out_channels"] == [32, 64, 64]
    assert model.configs["vae"]["block_out_channels"] == [32, 32, 32, 32]


def test_controlnet_single_file_loads(tiny_controlnet):
    cn = load_controlnet(tiny_controlnet)
    ref = tiny.build_modules()[3].state_dict()
    got = cn.state_dict()
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


def test_our_mapping_agrees_with_diffusers_own_converter(tiny_checkpoint, tiny_controlnet):
    """Cross-check the key rules against diffusers' single-file converter, tensor by tensor."""
    conv = pytest.importorskip("diffusers.loaders.single_file_utils")
    sd = load_file(str(tiny_checkpoint))
    unet, vae, _, cn = tiny.build_modules()
    for theirs, ref in (
        (conv.convert_ldm_unet_checkpoint(sd, dict(unet.config)), unet.state_dict()),
        (conv.convert_ldm_vae_checkpoint(sd, dict(vae.config)), vae.state_dict()),
        (conv.convert_controlnet_checkpoint(load_file(str(tiny_controlnet)), dict(cn.config)), cn.state_dict()),
    ):
        assert set(theirs) >= set(ref)
        for key in ref:
            assert torch.equal(theirs[key].reshape(ref[key].shape), ref[key]), key


def test_full_sd15_names_map_as_the_webui_expects():
    cfg = tiny.full_size_configs()["unet"]
    assert ldm_layout.unet_key("down_blocks.0.attentions.1.proj_in.weight", cfg) == "input_blocks.2.1.proj_in.weight"
    assert ldm_layout.unet_key("down_blocks.2.downsamplers.0.conv.bias", cfg) == "input_blocks.9.0.op.bias"
    assert ldm_layout.unet_key("down_blocks.3.resnets.1.conv2.weight", cfg) == "input_blocks.11.0.out_layers.3.weight"
    assert ldm_layout.unet_key("mid_block.attentions.0.proj_out.weight", cfg) == "middle_block.1.proj_out.weight"
    assert ldm_layout.unet_key("mid_block.resnets.1.time_emb_proj.weight", cfg) == "middle_block.2.emb_layers.1.weight"
    assert ldm_layout.unet_key("up_blocks.0.upsamplers.0.conv.weight", cfg) == "output_blocks.2.1.conv.weight"
    assert ldm_layout.unet_key("up_blocks.1.upsamplers.0.conv.weight", cfg) == "output_blocks.5.2.conv.weight"
    assert ldm_layout.unet_key("up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0.weight", cfg) == \
        "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight"
    assert ldm_layout.unet_key("up_blocks.1.resnets.2.conv_shortcut.weight", cfg) == "output_blocks.5.0.skip_connection.weight"
    vcfg = tiny.full_size_configs()["vae"]
    assert ldm_layout.vae_key("decoder.up_blocks.0.resnets.2.conv1.weight", vcfg) == "decoder.up.3.block.2.conv1.weight"
    assert ldm_layout.vae_key("encoder.down_blocks.1.resnets.0.conv_shortcut.weight", vcfg) == "encoder.down.1.block.0.nin_shortcut.weight"


def _write(path, tensors):
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("keys, message", [
    ({"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": [2, 2],
      "model.diffusion_model.input_blocks.0.0.weight": [2, 2]}, "SDXL"),
    ({"cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": [2, 2],
      "model.diffusion_model.input_blocks.0.0.weight": [2, 2]}, "SD2"),
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": [2, 2]}, "SD3 checkpoint"),
    ({"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": [2, 2]}, "Flux checkpoint"),
    ({"down_blocks.0.resnets.0.conv1.weight": [2, 2]}, "diffusers layout"),
    ({"some.lora_up.weight": [2, 2]}, "not an SD1.5 checkpoint"),
])
def test_files_that_are_not_sd15_are_named(tmp_path, tiny_dir, keys, message):
    path = _write(tmp_path / "model.safetensors", {k: torch.zeros(v) for k, v in keys.items()})
    with pytest.raises(HostError, match=message):
        load_sd15(path, tiny_dir / "tokenizer")


def test_missing_empty_and_broken_files_get_clear_errors(tmp_path, tiny_dir, tiny_checkpoint):
    with pytest.raises(HostError, match="not found"):
        read_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(HostError, match="empty"):
        read_state_dict(tmp_path / "empty.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(HostError, match="Cannot read"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "text.ckpt").write_text("hello")
    with pytest.raises(HostError, match="Cannot read"):
        read_state_dict(tmp_path / "text.ckpt")


def test_incomplete_checkpoint_names_what_is_missing(tmp_path, tiny_dir, tiny_checkpoint):
    sd = load_file(str(tiny_checkpoint))
    sd.pop("model.diffusion_model.output_blocks.3.1.proj_out.weight")
    path = _write(tmp_path / "partial.safetensors", sd)
    with pytest.raises(HostError, match="lacks 1 tensors"):
        load_sd15(path, tiny_dir / "tokenizer")


def test_ckpt_pickle_files_load_with_weights_only(tmp_path, tiny_dir, tiny_checkpoint):
    sd = load_file(str(tiny_checkpoint))
    torch.save({"state_dict": sd}, tmp_path / "model.ckpt")
    model = load_sd15(tmp_path / "model.ckpt", tiny_dir / "tokenizer")
    assert model.name == "model"


@pytest.mark.parametrize("family, marker", [("SD1.5", "cond_stage_model.transformer.text_model.x"),
                                            ("SDXL", "conditioner.embedders.1.model.x")])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-tar"])
def test_a_pickle_checkpoints_family_is_read_without_its_tensors(tmp_path, family, marker, legacy):
    """The diffusers host picks its engine from the tensor names before loading (``serve --no-worker``: a front
    that never loads the model). A ``.ckpt`` used to be read whole for that: here a 200 MB one's names come with
    under 100 MB of memory (its tensors memory-mapped), measured as the subprocess's peak RSS (Linux ``VmHWM``,
    reset after the imports; the old code: +192 MB); a file in the pre-1.6
    format, which cannot be mapped, is still read (whole) and gives the same engine."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "model.ckpt"
    big = 2 * 10 ** 8 if not legacy else 10 ** 6  # bytes of fp16 (the legacy case checks the fallback only)
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(big // 2, dtype=torch.float16),
          marker: torch.zeros(4)}
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=not legacy)
    code = ("import re, sys, torch; from lib_profile.hosts.diffusers.engines import checkpoint_engine\n"
            "kb = lambda key: int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # the peak RSS (VmHWM) starts again from here\n"
            "before = kb('VmRSS'); engine = checkpoint_engine(sys.argv[1]); print(engine.family, kb('VmHWM') - before)")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-1500:]
    found, grown_kb = done.stdout.split()
    assert found == family
    if not legacy:
        assert int(grown_kb) < 100 * 1024, f"{int(grown_kb) // 1024} MB read to find the family of a 200 MB file"
