"""Load and save single-file SD1.x checkpoints and ControlNet models (original layout), offline.

Only the tensors come from the file; the model classes come from diffusers/transformers with
configs read off the tensor shapes (``ldm_layout``), and the tokenizer from open_clip's vocabulary.
Nothing is fetched from a hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from lib_profile import families
from lib_profile.hosts.diffusers import ldm_layout
from lib_profile.hosts.base import HostError
from lib_profile.store.file_hash import file_sha256

SCHEDULER_CONFIG: dict[str, Any] = {
    # SD1.5's training noise schedule
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


def read_state_dict(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Tensors of a .safetensors or .ckpt/.pt file (pickles loaded with weights_only). ``mmap``: a pickle's tensors
    stay in the file (``torch.load(mmap=True)``: only what is touched is read; a file in the pre-1.6 format, which
    cannot be mapped, is read whole)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise HostError(f"Model file not found: {path}")
    if path.stat().st_size == 0:
        raise HostError(f"Model file is empty: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as exc:
                if not mmap or "mmap" not in str(exc):
                    raise
                sd = torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy (tar) format
            sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise HostError(f"Cannot read model file {path.name}: {exc}. Is it complete and a .safetensors/.ckpt model?") from exc
    if not isinstance(sd, dict) or not sd:
        raise HostError(f"Model file {path.name} holds no tensors")
    return sd


def _build(cls, cfg: dict[str, Any], tensors: dict[str, Any]):
    """Instantiate ``cls`` from ``cfg`` without random init (meta device) and take ``tensors`` as its
    weights, strictly: every parameter must come from the file."""
    import torch

    with torch.device("meta"):
        model = cls.from_config(cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if missing or unexpected:
        raise HostError(f"Model tensors do not match {cls.__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise HostError(f"{cls.__name__} has tensors the file does not fill: {left[:3]}")
    return model.eval().requires_grad_(False)


def _shapes(cls, cfg):
    """The parameter names and shapes of ``cls(**cfg)``, without allocating its weights."""
    import torch

    with torch.device("meta"):
        model = cls.from_config(cfg)
    return model.state_dict()


@dataclass
class SD15:
    """A loaded SD1.x model: the diffusers parts plus where they came from."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    path: Path
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler_config: dict[str, Any] = field(default_factory=lambda: dict(SCHEDULER_CONFIG))
    family: ClassVar[str] = families.SD15.name

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def shorthash(self) -> str:
        return file_sha256(self.path)[:10]


def load_sd15(path: str | Path, tokenizer_dir: str | Path, sd: Mapping[str, Any] | None = None) -> SD15:
    """Load an SD1.x single-file checkpoint into diffusers modules on the CPU in float32 (``sd``: its tensors when
    already read); HostError naming the family for a checkpoint of another (:func:`ldm_layout.check_sd1`)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from lib_profile.prompts.tokenizer import load_tokenizer

    path = Path(path)
    sd = read_state_dict(path) if sd is None else sd
    ldm_layout.check_sd1(sd)
    ucfg, vcfg, tcfg = ldm_layout.infer_unet_config(sd), ldm_layout.infer_vae_config(sd), ldm_layout.infer_text_config(sd)
    unet_t = ldm_layout.from_ldm(sd, _shapes(UNet2DConditionModel, ucfg), ldm_layout.unet_key, ucfg, ldm_layout.UNET_PREFIX)
    vae_t = ldm_layout.from_ldm(sd, _shapes(AutoencoderKL, vcfg), ldm_layout.vae_key, vcfg, ldm_layout.VAE_PREFIX)
    with torch.device("meta"):
        text_keys = CLIPTextModel(CLIPTextConfig(**tcfg)).state_dict()
    text_t = ldm_layout.from_ldm(sd, text_keys, ldm_layout.text_key, tcfg, ldm_layout.TEXT_PREFIX)
    del sd
    as_f32 = lambda d: {k: v.float() for k, v in d.items()}  # noqa: E731 - fp16/bf16 files load as fp32
    unet = _build(UNet2DConditionModel, ucfg, as_f32(unet_t))
    vae = _build(AutoencoderKL, vcfg, as_f32(vae_t))
    text = CLIPTextModel(CLIPTextConfig(**tcfg))
    missing, unexpected = text.load_state_dict(as_f32(text_t), strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise HostError(f"Text encoder tensors do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    text.eval().requires_grad_(False)
    tokenizer = load_tokenizer(str(tokenizer_dir))
    if tokenizer.vocab_size != tcfg["vocab_size"] and len(tokenizer) != tcfg["vocab_size"]:
        raise HostError(f"The checkpoint's text encoder has {tcfg['vocab_size']} tokens, the CLIP tokenizer {len(tokenizer)}")
    return SD15(unet, vae, text, tokenizer, path, {"unet": ucfg, "vae": vcfg, "text_encoder": tcfg})


def save_sd15(path: str | Path, unet, vae, text_encoder, metadata: dict[str, str] | None = None) -> Path:
    """Write diffusers modules as one single-file checkpoint in the original layout (safetensors)."""
    from safetensors.torch import save_file

    path = Path(path)
    out: dict[str, Any] = {}
    out.update(ldm_layout.to_ldm(unet.state_dict(), ldm_layout.unet_key, dict(unet.config), ldm_layout.UNET_PREFIX))
    out.update(ldm_layout.to_ldm(vae.state_dict(), ldm_layout.vae_key, dict(vae.config), ldm_layout.VAE_PREFIX))
    out.update(ldm_layout.to_ldm(text_encoder.state_dict(), ldm_layout.text_key, None, ldm_layout.TEXT_PREFIX))
    _atomic_save(save_file, {k: v.contiguous() for k, v in out.items()}, path, metadata)
    return path


def _atomic_save(save_file, tensors, path: Path, metadata: dict[str, str] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()} or None)
    tmp.replace(path)

