"""Our LoRA trainer against a plain reference loop, side by side in one process.

The reference is what a straightforward script does: diffusers + peft LoRA on the same attention
projections, encoding every batch with the VAE and the text encoder at every step, reading the loss
back every step. Ours caches latents and text once, syncs only at log steps, and on a GPU replays each
step as one CUDA graph (lib_profile/train/step.py). Same model, rank,
steps, batch, resolution and learning rate. Reports steps/s of each and the ratio, the achieved TFLOP/s of ours
(one step's FLOPs counted with torch's FlopCounterMode), and on a GPU the peak memory of each.

    .venv-forge/bin/python bench/train.py                  # tiny model, CPU (peft is in the Forge env)
    .venv-forge/bin/python bench/train.py --full-size      # SD1.5 shape, random weights, 512 px (GPU)
    .venv-forge/bin/python bench/train.py --full-size --end-to-end 1000   # + whole 1,000-step runs, both memory modes
    .venv-forge/bin/python bench/train.py --sdxl           # tiny SDXL-shaped model, CPU: the quick check
    .venv-forge/bin/python bench/train.py --sdxl --full-size   # SDXL base shape, random weights, 1024 px (GPU);
                                                               # --resolution 768 for the small-card setting

On SDXL the reference also encodes both text encoders (penultimate states, pooled text) and builds the size/crop
numbers at every step, as diffusers' ``train_text_to_image_lora_sdxl.py`` does; its frozen weights are bfloat16 on a
GPU, its LoRA weights float32. Ours is also run in the low-memory (12 GB) mode, whose peak memory is the one to hold
against 12 GB.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_intake(work: Path) -> Path:
    from lib_profile import sample_photos
    from lib_profile.photos.intake import run_intake

    src = work / "photos"
    src.mkdir()
    for name, im in sample_photos.selfies(sample_photos.astronaut, 8):
        im.save(src / f"{name}.jpg")
    out = work / "intake"
    run_intake(src, out)
    return out


def _reference_setup(model, crops, res, lr, rank, float_params=False):
    """What both plain loops share: a peft LoRA on the UNet's attention projections (its weights float32 when
    ``float_params``), AdamW, DDPM's noise schedule, the crops as tensors in -1..1 at ``res`` px with their original
    ``(height, width)``, a seeded generator; the UNet in training mode."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    from lib_profile.hosts.diffusers.checkpoint import SCHEDULER_CONFIG

    unet = model.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    if float_params:
        for p in params:
            p.data = p.data.float()
    loaded = [Image.open(c).convert("RGB") for c in crops]
    images = [torch.from_numpy(np.asarray(im.resize((res, res)), np.float32) / 127.5 - 1).permute(2, 0, 1)
              for im in loaded]
    unet.train()
    return (unet, torch.optim.AdamW(params, lr=lr), DDPMScheduler.from_config(SCHEDULER_CONFIG), images,
            [(im.height, im.width) for im in loaded], torch.Generator().manual_seed(0))


def _noised(sched, lat, batch, device):
    """``(noise, t, noisy latents)`` at random timesteps, as every plain loop draws them."""
    import torch

    noise = torch.randn_like(lat)
    t = torch.randint(0, 1000, (batch,), device=device)
    noisy = sched.add_noise(lat, noise, t.cpu()).to(device) if device.type == "cpu" else sched.add_noise(lat, noise, t)
    return noise, t, noisy


def _update(opt, pred, noise) -> float:
    """One AdamW step on the MSE to the noise; the loss read back every step (the plain loops' sync)."""
    import torch.nn.functional as F

    loss = F.mse_loss(pred.float(), noise.float())
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def reference_loop(model, crops, captions, steps, batch, res, lr, rank, device, dtype):
    """The plain loop: peft LoRA, VAE + text encoding inside every step, loss.item() every step."""
    import torch

    unet, opt, sched, images, _sizes, gen = _reference_setup(model, crops, res, lr, rank)

    def step():
        idx = torch.randint(len(images), (batch,), generator=gen).tolist()
        pixels = torch.stack([images[i] for i in idx]).to(device)
        with torch.no_grad():
            lat = model.vae.encode(pixels).latent_dist.sample() * model.vae.config.scaling_factor
            ids = model.tokenizer([captions[i] for i in idx], padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids.to(device)
            cond = model.text_encoder(ids)[0]
        noise, t, noisy = _noised(sched, lat, batch, device)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
        return _update(opt, pred, noise)

    return step


def reference_loop_sdxl(model, crops, captions, steps, batch, res, lr, rank, device, dtype):
    """The plain SDXL loop: peft LoRA, VAE + both text encoders inside every step, loss.item() every step."""
    import torch

    unet, opt, sched, images, sizes, gen = _reference_setup(model, crops, res, lr, rank, float_params=True)

    def step():
        idx = torch.randint(len(images), (batch,), generator=gen).tolist()
        pixels = torch.stack([images[i] for i in idx]).to(device)
        with torch.no_grad():
            lat = model.vae.encode(pixels.to(model.vae.dtype)).latent_dist.sample() * model.vae.config.scaling_factor
            ids = model.tokenizer([captions[i] for i in idx], padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids.to(device)
            out_1 = model.text_encoder(ids, output_hidden_states=True)
            out_2 = model.text_encoder_2(ids, output_hidden_states=True)
            cond = torch.cat([out_1.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
            pooled = out_2.text_embeds
            time_ids = torch.tensor([[*sizes[i], 0, 0, res, res] for i in idx], device=device, dtype=cond.dtype)
        noise, t, noisy = _noised(sched, lat, batch, device)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            pred = unet(noisy, t, encoder_hidden_states=cond,
                        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        return _update(opt, pred, noise)

    return step


def sdxl_components(full_size: bool, work: Path):
    """Fresh SDXL components (tiny, or SDXL base's shape with random weights) as the trainer takes them."""
    from lib_profile import paths
    from lib_profile.hosts.diffusers import tiny_sdxl
    from lib_profile.prompts.tokenizer import load_tokenizer
    from lib_profile.train.sdxl import sdxl_model

    unet, vae, text, text_2 = tiny_sdxl.build_modules(tiny_sdxl.sdxl_base_configs() if full_size else None)
    tok = load_tokenizer(str(paths.tokenizer_dir(work)))
    return sdxl_model(unet, vae, text, text_2, tok, None, work / "sdxl-random.safetensors")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", action="store_true")
    ap.add_argument("--sdxl", action="store_true", help="an SDXL-shaped model (tiny; SDXL base's with --full-size)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--intake", help="an intake folder to train on (default: made here from the sample photos)")
    ap.add_argument("--end-to-end", type=int, default=0, metavar="STEPS",
                    help="also time whole runs of STEPS steps with the defaults (load, cache, validation every 100 "
                         "steps, export), in the normal and the low-memory mode, with the peak GPU memory of each")
    args = ap.parse_args()

    import torch

    try:
        import peft  # noqa: F401
    except ImportError:
        print("the reference loop needs peft: run this with .venv-forge/bin/python")
        return 2
    from lib_profile.hosts.diffusers import tiny
    from lib_profile.hosts.diffusers.checkpoint import load_sd15
    from lib_profile.train.trainer import TrainConfig, Trainer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    sdxl = args.sdxl
    res = args.resolution or ((1024 if sdxl else 512) if args.full_size else (64 if sdxl else 128))
    steps = args.steps or (100 if gpu else (10 if sdxl else 30))
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    intake = Path(args.intake) if args.intake else make_intake(work)
    ckpt = None
    if not sdxl:
        ckpt_dir = work / "model"
        ckpt_dir.mkdir()
        tiny.build_into(ckpt_dir, tiny.full_size_configs() if args.full_size else None, diffusers_copy=False,
                        half=args.full_size)
        ckpt = ckpt_dir / tiny.CHECKPOINT

    def ours(name: str, checkpointing: bool):
        low = checkpointing and sdxl  # SDXL's low-memory run is the 12 GB mode, not only checkpointing
        cfg = TrainConfig(name="bench", steps=steps, rank=args.rank, alpha=args.rank, batch_size=args.batch,
                          resolution=res, validation_images=0, validate_every=10**9, save_every=10**9,
                          log_every=max(steps // 2, 1), select="last", gradient_checkpointing=checkpointing,
                          low_memory=low)
        model = sdxl_components(args.full_size, work) if sdxl else ckpt
        trainer = Trainer(intake, model, work / name, cfg, data_dir=work)
        trainer.prepare()
        reset_peak(gpu)
        t0 = time.perf_counter()
        trainer.run()
        sync(gpu)
        return trainer, steps / (time.perf_counter() - t0), peak(gpu)

    trainer, ours_s, ours_mem = ours("ours", False)
    flops = step_flops(trainer, args.batch)
    del trainer
    low = None
    if gpu:
        torch.cuda.empty_cache()
        trainer, low_s, low_mem = ours("ours-low-memory", True)
        low = (low_s, low_mem)
        del trainer
        torch.cuda.empty_cache()

    # reference
    dtype = torch.bfloat16 if gpu else torch.float32
    if sdxl:
        model = sdxl_components(args.full_size, work)
        for m in (model.unet, model.text_encoder, model.text_encoder_2):
            m.to(device, dtype).requires_grad_(False)
        model.vae.to(device).requires_grad_(False)  # SDXL's VAE overflows in half precision
    else:
        model = load_sd15(ckpt, work / "tok")
        for m in (model.unet, model.vae, model.text_encoder):
            m.to(device).requires_grad_(False)
    from lib_profile.train.trainer import read_intake

    data = read_intake(intake)
    loop = reference_loop_sdxl if sdxl else reference_loop
    step = loop(model, data.crops, data.captions, steps, args.batch, res, 1e-4, args.rank, device, dtype)
    step()  # warm-up
    reset_peak(gpu)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(gpu)
    ref_s = steps / (time.perf_counter() - t0)
    ref_mem = peak(gpu)
    del model, step
    if gpu:
        torch.cuda.empty_cache()

    shape = ({True: "SDXL base shape", False: "SD1.5 shape"}[sdxl] + " (random weights)" if args.full_size
             else ("tiny SDXL-shaped model" if sdxl else "tiny model"))
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    print(f"LoRA training, {shape}, {res}px, batch {args.batch}, rank {args.rank}, {steps} steps, {name}")
    print(f"  reference loop (peft, encode every step): {ref_s:.2f} steps/s{ref_mem}")
    print(f"  Profile Studio trainer                  : {ours_s:.2f} steps/s{ours_mem}")
    if low:
        what = "12 GB mode" if sdxl else "grad. checkpoint."
        print(f"  ... low-memory mode ({what})".ljust(42) + f": {low[0]:.2f} steps/s{low[1]}")
    print(f"  ratio ours / reference                  : {ours_s / ref_s:.2f}x")
    print(f"  achieved (ours): {flops * ours_s / 1e12:.3f} TFLOP/s ({flops / 1e9:.1f} GFLOP per step, counted); "
          f"1,000 steps would take {1000 / ours_s / 60:.1f} min")
    sys.stdout.flush()
    for checkpointing in ((False, True) if gpu else (False,)) if args.end_to_end and not sdxl else ():
        end_to_end(intake, ckpt, work, args.end_to_end, res, checkpointing, gpu)
    return 0


def sync(gpu: bool) -> None:
    import torch

    if gpu:
        torch.cuda.synchronize()


def reset_peak(gpu: bool) -> None:
    import torch

    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak(gpu: bool) -> str:
    """Peak GPU memory since the last reset: allocated by tensors, and reserved by the caching allocator."""
    import torch

    if not gpu:
        return ""
    return (f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated "
            f"({torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved)")


def end_to_end(intake: Path, ckpt: Path, work: Path, steps: int, res: int, checkpointing: bool, gpu: bool) -> None:
    """A whole training run with the default settings, timed from loading the checkpoint to the exported LoRA."""
    import torch

    from lib_profile.train import validation
    from lib_profile.train.trainer import TrainConfig, Trainer, read_intake

    cfg = TrainConfig(name="bench", steps=steps, resolution=res, gradient_checkpointing=checkpointing)
    note = ""
    try:
        from PIL import Image

        validation._Scorer(read_intake(intake))(Image.new("RGB", (64, 64)))  # loads the face detector and embedder
    except Exception as exc:  # the identity model is not installed here: validation renders, scores are None
        note = f" (validation portraits rendered but not scored: {type(exc).__name__}: {exc})"
        validation._Scorer = lambda intake: (lambda image: None)
    gc.collect()  # the previous run's model and CUDA graph pool
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer = Trainer(intake, ckpt, work / f"e2e-{int(checkpointing)}", cfg, data_dir=work)
    result = trainer.run()
    sync(gpu)
    took = time.perf_counter() - t0
    mode = "low-memory mode" if checkpointing else "normal mode"
    print(f"  whole run, {steps} steps, {mode}: {took:.1f} s ({took / 60:.2f} min) from loading the checkpoint to "
          f"the exported LoRA, {cfg.validation_images} validation portraits every {cfg.validate_every} steps, "
          f"select {cfg.select}{peak(gpu)}{note}")
    print(f"    -> {Path(result['file']).name}")
    sys.stdout.flush()
    del trainer


def step_flops(trainer, batch: int) -> float:
    """FLOPs of one training step (UNet forward + backward), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    lat = trainer.latents[:, 0].repeat(batch, 1, 1, 1)[:batch]
    cond, extra = trainer.conditioning(torch.zeros(batch, dtype=torch.long))
    t = torch.full((batch,), 500, device=lat.device)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(lat.device.type, dtype=trainer.amp_dtype, enabled=trainer.gpu):
            pred = trainer.model.unet(lat, t, encoder_hidden_states=cond, **extra).sample
        pred.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


if __name__ == "__main__":
    sys.exit(main())
