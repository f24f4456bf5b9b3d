"""A tiny LDM-shaped model that really computes, as A1111 1.10.1 and Forge 2 hold it (for the lent denoiser).

* A1111: ``shared.sd_model`` is an ldm ``LatentDiffusion``: ``model.diffusion_model`` (input/middle/output blocks;
  ``output_blocks.4.0`` a ResBlock; CrossAttention modules ``attn1``/``attn2`` with ldm's surface), ``alphas_cumprod``,
  ``scale_factor``, ``encode_first_stage`` (a Gaussian posterior), ``decode_first_stage``,
  ``get_learned_conditioning`` (75-token chunks, CLIP skip read from ``opts.CLIP_stop_at_last_layers``),
  ``cond_stage_model_empty_prompt``, ``apply_model(x, t, cond)`` -> eps.
* Forge: the engine with ``forge_objects`` (``unet`` patcher with ``model`` = a KModel whose ``apply_model`` takes
  sigma-scaled input and returns the denoised estimate, ``vae``, ``clip``), ``forge_objects_original`` /
  ``_after_applying_lora``, ``text_processing_engine`` and ``set_clip_skip``; weights made under
  ``torch.inference_mode`` as ``forge_loader`` makes them; the transformer blocks honour attention-replace patches.
* ``modules.extra_networks`` / ``networks``: ``<lora:NAME:W>`` tags activate a LoRA that scales one UNet weight
  (A1111: lazily at the next forward, restored from a backup; Forge: on a patcher clone, patched in place when the
  memory manager loads it).

Both flavours are built from the same seed, so their eps agree.
"""

from __future__ import annotations

import copy
import re
import sys
import types
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

DIM, CTX, HEADS, LAT = 8, 8, 2, 4
LORA_WEIGHT = "output_blocks.4.0.conv.weight"


class CrossAttention(nn.Module):
    def __init__(self, dim, context_dim):
        super().__init__()
        self.heads, self.scale = HEADS, (dim // HEADS) ** -0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, context=None, mask=None, **kwargs):
        ctx = x if context is None else context
        return self.to_out(attend(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads))


def attend(q, k, v, heads):
    b, n, inner = q.shape
    q, k, v = (t.reshape(t.shape[0], -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, inner)


class Block(nn.Module):
    inplace = False  # Forge's BasicTransformerBlock adds in place (``x += n``)

    def __init__(self, ctx=CTX):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.attn1, self.attn2 = CrossAttention(DIM, DIM), CrossAttention(DIM, ctx)

    def forward(self, x, context, options):
        replace = options.get("patches_replace", {})
        extra = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"] = HEADS
        key = (*options.get("block", ("", 0)), options.get("block_index", 0))
        for name, attn, ctx in (("attn1", self.attn1, None), ("attn2", self.attn2, context)):
            n = (self.norm1 if name == "attn1" else self.norm2)(x)
            patch = replace.get(name, {}).get(key)
            if patch is not None:  # Forge's attention-replace: projected q, k, v in; to_out applied after
                src = n if ctx is None else ctx
                n = attn.to_out(patch(attn.to_q(n), attn.to_k(src), attn.to_v(src), extra))
            else:
                n = attn(n, context=ctx)
            if self.inplace:
                x += n
            else:
                x = x + n
        return x


class SpatialTransformer(nn.Module):
    def __init__(self, ctx=CTX):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([Block(ctx)])

    def forward(self, x, emb, context, options):
        b, c, h, w = x.shape
        y = x.flatten(2).transpose(1, 2)
        for i, block in enumerate(self.transformer_blocks):
            options["block_index"] = i
            y = block(y, context, options)
        return y.transpose(1, 2).reshape(b, c, h, w)


class ResBlock(nn.Module):
    def __init__(self, c_in):
        super().__init__()
        self.conv = nn.Conv2d(c_in, DIM, 3, padding=1)
        self.emb = nn.Linear(DIM, DIM)

    def forward(self, x, emb, context, options):
        return torch.tanh(self.conv(x)) + self.emb(emb)[:, :, None, None]


class Seq(nn.ModuleList):
    def forward(self, x, emb, context, options):
        for layer in self:
            x = layer(x, emb, context, options)
        return x


class UNet(nn.Module):
    """ldm's UNetModel layout in miniature: output_blocks.4.0 (and 1.0) a ResBlock, each block with a transformer.
    ``ctx``: the cross-attention's key width; ``adm``: the width of the vector ``y`` added to the time embedding
    (sgm's ``label_emb``, SDXL's pooled text and sizes; 0: none, as on SD1.5)."""

    def __init__(self, ctx=CTX, adm=0):
        super().__init__()
        self.conv_in = nn.Conv2d(LAT, DIM, 3, padding=1)
        self.time = nn.Linear(DIM, DIM)
        self.label_emb = nn.Linear(adm, DIM) if adm else None
        self.input_blocks = nn.ModuleList([Seq([ResBlock(DIM), SpatialTransformer(ctx)]) for _ in range(2)])
        self.middle_block = Seq([ResBlock(DIM), SpatialTransformer(ctx)])
        self.output_blocks = nn.ModuleList([Seq([ResBlock(2 * DIM), SpatialTransformer(ctx)]) for _ in range(6)])
        self.out = nn.Conv2d(DIM, LAT, 3, padding=1)

    def forward(self, x, timesteps=None, context=None, control=None, transformer_options=None, y=None, **kwargs):
        options = transformer_options if transformer_options is not None else {}
        freqs = torch.arange(DIM // 2, dtype=torch.float32, device=x.device) / (DIM // 2)
        angles = timesteps.float()[:, None] * torch.exp(-4.0 * freqs)[None] / 10.0
        emb = self.time(torch.cat([angles.sin(), angles.cos()], dim=1).to(x.dtype))
        if (self.label_emb is None) != (y is None):
            raise TypeError("y must be given exactly when the UNet has a label_emb (sgm's assert)")
        if y is not None:
            emb = emb + self.label_emb(y.to(x.dtype))
        h, skips = self.conv_in(x), []
        for i, block in enumerate(self.input_blocks):
            options["block"] = ("input", i)
            h = block(h, emb, context, options)
            skips.append(h)
        options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, options)
        for i, block in enumerate(self.output_blocks):
            options["block"] = ("output", i)
            h = block(torch.cat([h, skips[-1 - i % len(skips)]], dim=1), emb, context, options)
        return self.out(h)


def checkpoint_info():
    return types.SimpleNamespace(filename="sd15.safetensors", title="sd15.safetensors [0123abcd]",
                                 name_for_extra="sd15", model_name="sd15")


def alphas_cumprod():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class Posterior:
    def __init__(self, moments):
        self.mean, self.logvar = moments.chunk(2, dim=1)

    def mode(self):
        return self.mean

    def sample(self):
        return self.mean + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mean)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(3, 2 * LAT, 8, stride=8)
        self.decoder = nn.ConvTranspose2d(LAT, 3, 8, stride=8)


class TextEncoder(nn.Module):
    """Words -> ids (75 a chunk, ``BREAK``-free), emphasis ignored; CLIP skip picks the last or the layer before."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, CTX)
        self.layers = nn.ModuleList([nn.Linear(CTX, CTX), nn.Linear(CTX, CTX)])

    bpe = False  # True: CLIP's BPE ids, as the WebUIs' encoders give them (for word positions: explain, edit)

    def tokenize_line(self, text):
        if self.bpe:
            from lib_profile.attention.explain import tokenizer

            tok = tokenizer()
            ids, bos, eos = tok(text, add_special_tokens=False)["input_ids"], tok.bos_token_id, tok.eos_token_id
        else:
            ids, bos, eos = [sum(map(ord, w)) % 997 + 1 for w in text.replace(",", " , ").split()], 0, 999
        chunks = [types.SimpleNamespace(tokens=[bos] + ids[i:i + 75] + [eos] * (76 - len(ids[i:i + 75])))
                  for i in range(0, max(len(ids), 1), 75)]
        return chunks, len(ids)

    def encode(self, texts, clip_skip):
        out = []
        for text in texts:
            chunks = [torch.tensor(c.tokens) for c in self.tokenize_line(text)[0]]
            h = self.embed(torch.cat(chunks) % 1000)
            states = [h]
            for layer in self.layers:
                states.append(torch.tanh(layer(states[-1])))
            out.append(states[-max(1, min(int(clip_skip), 2))])
        return torch.stack(out)


class Parts(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.unet, self.vae, self.text = UNet().eval(), VAE().eval(), TextEncoder().eval()


class LatentDiffusion(nn.Module):
    """A1111's ``shared.sd_model`` (SD1.5)."""

    is_sdxl = is_sd2 = False
    parameterization = "eps"
    scale_factor = 0.18215

    def __init__(self, parts, opts):
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = parts.unet
        self.model.conditioning_key = "crossattn"
        self.first_stage_model, self.text, self.opts = parts.vae, parts.text, opts
        self.register_buffer("alphas_cumprod", alphas_cumprod())
        self.cond_stage_model = types.SimpleNamespace(tokenize_line=parts.text.tokenize_line)
        self.sd_checkpoint_info = checkpoint_info()
        self.sd_model_hash = "0123abcd"
        with torch.no_grad():
            self.cond_stage_model_empty_prompt = self.get_learned_conditioning([""])

    def get_learned_conditioning(self, texts):
        return self.text.encode(texts, self.opts.data.get("CLIP_stop_at_last_layers", 1))

    def encode_first_stage(self, x):
        return Posterior(self.first_stage_model.encoder(x))

    @torch.no_grad()
    def decode_first_stage(self, z):
        return torch.tanh(self.first_stage_model.decoder(z / self.scale_factor))

    def apply_model(self, x, t, cond):
        return self.model.diffusion_model(x, t, context=cond)

    def posterior_mean(self, x):
        """The oracle of the lent denoiser's ``encode``: the VAE's mean times the scale factor."""
        return self.first_stage_model.encoder(x).chunk(2, dim=1)[0] * self.scale_factor


class Predictor(nn.Module):
    """Forge's ``k_prediction.Prediction`` (eps): sigma <-> t, input scaling and the denoised estimate."""

    prediction_type, sigma_data = "epsilon", 1.0  # from the checkpoint's diffusers scheduler config

    def __init__(self):
        super().__init__()
        ac = alphas_cumprod()
        sigmas = ((1 - ac) / ac) ** 0.5
        self.register_buffer("alphas_cumprod", ac)
        self.register_buffer("sigmas", sigmas)
        self.register_buffer("log_sigmas", sigmas.log())

    def timestep(self, sigma):
        return (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)

    def calculate_input(self, sigma, x):
        return x / (sigma.view(-1, 1, 1, 1) ** 2 + 1.0) ** 0.5

    def calculate_denoised(self, sigma, out, x):
        return x - out * sigma.view(-1, 1, 1, 1)


class KModel(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model, self.predictor = unet, Predictor()
        self.computation_dtype = torch.float32

    def apply_model(self, x, t, c_crossattn=None, transformer_options=None, y=None, **kwargs):
        sigma = t
        extra = {} if y is None else {"y": y}
        out = self.diffusion_model(self.predictor.calculate_input(sigma, x), self.predictor.timestep(sigma).float(),
                                   context=c_crossattn, transformer_options=dict(transformer_options or {}), **extra)
        return self.predictor.calculate_denoised(sigma, out.float(), x)


class Patcher:
    """Forge's ModelPatcher: ``clone`` shares the model, copies ``model_options``; LoRA patches are applied to the
    model's weights in place by the memory manager's load."""

    def __init__(self, model, lora=None):
        self.model, self.lora = model, lora
        self.model_options = {"transformer_options": {}}
        self.load_device = self.current_device = torch.device("cpu")

    def clone(self):
        n = Patcher(self.model, self.lora)
        n.model_options = copy.deepcopy(self.model_options)
        return n

    def _replace(self, name, patch, block, number, index):
        to = self.model_options["transformer_options"].setdefault("patches_replace", {})
        to.setdefault(name, {})[(block, number, index)] = patch

    def set_model_attn1_replace(self, patch, block, number, index=None):
        self._replace("attn1", patch, block, number, index)

    def set_model_attn2_replace(self, patch, block, number, index=None):
        self._replace("attn2", patch, block, number, index)


class ForgeObjects:
    def __init__(self, unet, clip, vae):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, None

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae)


class ForgeVAEModel(nn.Module):
    scaling_factor, shift_factor = 0.18215, 0.0

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def encode(self, x, regulation=None):
        posterior = Posterior(self.vae.encoder(x))
        return regulation(posterior) if regulation is not None else posterior.sample()

    def decode(self, z):
        return torch.tanh(self.vae.decoder(z))

    def process_in(self, latent):
        return (latent - self.shift_factor) * self.scaling_factor

    def process_out(self, latent):
        return latent / self.scaling_factor + self.shift_factor


class ForgeEngine:
    """Forge's ``StableDiffusion`` engine."""

    is_sd1, is_sd2, is_sdxl, is_sd3, is_inpaint = True, False, False, False, False

    def __init__(self, parts):
        vae = types.SimpleNamespace(first_stage_model=ForgeVAEModel(parts.vae), patcher=Patcher(None),
                                    device=torch.device("cpu"), vae_dtype=torch.float32)
        clip = types.SimpleNamespace(patcher=Patcher(None))
        self.forge_objects = ForgeObjects(Patcher(KModel(parts.unet)), clip, vae)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = "[]"
        self.text = parts.text
        self.text_processing_engine = types.SimpleNamespace(tokenize_line=parts.text.tokenize_line, clip_skip=1)
        self.sd_checkpoint_info = checkpoint_info()
        self.sd_model_hash = "0123abcd"

    def set_clip_skip(self, clip_skip):
        self.text_processing_engine.clip_skip = clip_skip

    @torch.inference_mode()
    def get_learned_conditioning(self, texts):
        memory().load_model_gpu(self.forge_objects.clip.patcher)
        return self.text.encode(texts, self.text_processing_engine.clip_skip)

    @torch.inference_mode()
    def decode_first_stage(self, x):
        vae = self.forge_objects.vae
        return vae.first_stage_model.decode(vae.first_stage_model.process_out(x)).to(x)

    def posterior_mean(self, x):
        return self.forge_objects.vae.first_stage_model.vae.encoder(x).chunk(2, dim=1)[0] * ForgeVAEModel.scaling_factor


def memory():
    return sys.modules["backend.memory_management"]


def make_memory_management(log):
    """``backend.memory_management``: loading a UNet patcher applies its LoRA patch in place (the previous
    patcher's undone first), as Forge's LoadedModel does."""
    mm = types.ModuleType("backend.memory_management")
    mm.current = None
    mm.backup = {}

    def load_model_gpu(patcher):
        log.append(("load", patcher))
        model = patcher.model
        if not isinstance(model, KModel) or mm.current is patcher:
            return
        weights = dict(model.diffusion_model.named_parameters())
        with torch.inference_mode():
            for name, value in mm.backup.items():
                weights[name].copy_(value)
            mm.backup.clear()
            if patcher.lora:
                mm.backup[LORA_WEIGHT] = weights[LORA_WEIGHT].clone()
                weights[LORA_WEIGHT].mul_(1.0 + patcher.lora[1])
        mm.current = patcher

    mm.load_model_gpu = load_model_gpu
    mm.load_models_gpu = lambda models, **kw: [load_model_gpu(m) for m in models]
    return mm


class ExtraNetworkParams:
    def __init__(self, items):
        self.items = items
        self.positional = items


def make_extra_networks(flavour, networks, shared):
    """``modules.extra_networks`` as A1111/Forge have it (parse_prompt, activate, deactivate), with one ``lora``."""
    en = types.ModuleType("modules.extra_networks")
    en.ExtraNetworkParams = ExtraNetworkParams
    en.calls = []

    def parse_prompt(prompt):
        res = defaultdict(list)

        def found(m):
            res[m.group(1)].append(ExtraNetworkParams(m.group(2).split(":")))
            return ""

        return re.sub(r"<(\w+):([^>]+)>", found, prompt), res

    def activate(p, data):
        en.calls.append(("activate", {k: [x.items for x in v] for k, v in data.items()}))
        params = data.get("lora", [])
        networks.load_networks([x.items[0] for x in params], [float(x.items[1]) if len(x.items) > 1 else 1.0
                                                              for x in params])

    def deactivate(p, data):
        en.calls.append(("deactivate", sorted(data)))

    en.parse_prompt, en.activate, en.deactivate = parse_prompt, activate, deactivate
    return en


def make_networks(flavour, available):
    """The built-in Lora extension's ``networks``: ``loaded_networks``; A1111 applies the weight lazily (here:
    at once, restored from a backup when unloaded); Forge builds a patcher clone carrying the LoRA."""
    net = types.ModuleType("networks")
    net.loaded_networks, net.available = [], set(available)
    net.backup = None

    def load_networks(names, multipliers):
        sd_model = sys.modules["modules.shared"].sd_model
        net.loaded_networks[:] = [types.SimpleNamespace(name=n, mentioned_name=n) for n in names if n in net.available]
        found = [(n, m) for n, m in zip(names, multipliers) if n in net.available]
        if flavour == "forge":
            wanted = str(found)
            if sd_model.current_lora_hash == wanted:
                return
            sd_model.current_lora_hash = wanted
            unet = sd_model.forge_objects_original.unet
            if found:
                unet = unet.clone()
                unet.lora = found[0]
            sd_model.forge_objects_after_applying_lora = ForgeObjects(unet, sd_model.forge_objects_original.clip,
                                                                      sd_model.forge_objects_original.vae)
            return
        weight = dict(sd_model.model.diffusion_model.named_parameters())[LORA_WEIGHT]
        with torch.no_grad():
            if net.backup is not None:
                weight.copy_(net.backup)
                net.backup = None
            if found:
                net.backup = weight.detach().clone()
                weight.mul_(1.0 + found[0][1])

    net.load_networks = load_networks
    return net


class SdConditioning(list):
    """``modules.prompt_parser.SdConditioning`` (A1111 1.10.1 and Forge): the prompts, with the picture's size and
    whether they are negative prompts (SDXL conditions on both)."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        copy_from = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def install(flavour: str, seed: int = 0, loras=("mylora",), family: str = "SD1.5"):
    """Give the installed stand-in ``modules`` a computing model of ``flavour`` and ``family`` (SD1.5 here, SDXL in
    :mod:`.sgm`); returns it."""
    mods = sys.modules
    shared = mods["modules.shared"]
    devices = types.ModuleType("modules.devices")
    devices.device, devices.cpu = torch.device("cpu"), torch.device("cpu")
    devices.dtype_unet = devices.dtype_vae = devices.dtype = torch.float32
    devices.autocast = lambda *a, **k: __import__("contextlib").nullcontext()
    networks = make_networks(flavour, loras)
    extra = make_extra_networks(flavour, networks, shared)
    prompt_parser = types.ModuleType("modules.prompt_parser")
    prompt_parser.SdConditioning = SdConditioning
    mods.update({"modules.devices": devices, "modules.extra_networks": extra, "networks": networks,
                 "modules.prompt_parser": prompt_parser})
    mods["modules"].devices, mods["modules"].extra_networks = devices, extra
    mods["modules"].prompt_parser = prompt_parser
    log: list = []
    if family == "SDXL":
        from . import sgm

        build = sgm.ForgeXLEngine if flavour == "forge" else (lambda parts: sgm.DiffusionEngine(parts, shared.opts))
        parts = sgm.PartsXL
    else:
        build = ForgeEngine if flavour == "forge" else (lambda parts: LatentDiffusion(parts, shared.opts))
        parts = Parts
    if flavour == "forge":
        backend = types.ModuleType("backend")
        backend.__path__ = []
        backend.memory_management = make_memory_management(log)
        mods["backend"], mods["backend.memory_management"] = backend, backend.memory_management
        with torch.inference_mode():  # forge_loader builds and loads the model in inference mode
            model = build(parts(seed))
        for module in model.forge_objects.unet.model.diffusion_model.modules():
            if isinstance(module, Block):
                module.inplace = True
    else:
        model = build(parts(seed))
    model.load_log = log
    shared.sd_model = model
    return model
