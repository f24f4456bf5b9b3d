"""Our diffusers host's txt2img against a plain diffusers pipeline call, side by side in one run.

Same model weights, prompt, size, steps, CFG, sampler (Euler a) and seed. The plain reference is
``StableDiffusionPipeline.from_pretrained`` on the same model saved as a diffusers folder. Prints
the median seconds of each and the ratio ours / plain (the host's overhead: prompt chunking, LoRA
bookkeeping, result and infotext building).

    .venv/bin/python bench/host_overhead.py                 # tiny model, CPU
    .venv/bin/python bench/host_overhead.py --full-size     # random weights at real SD1.5 shape (GPU)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import median_times, model_folder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", action="store_true", help="random SD1.5-shaped weights instead of the tiny model")
    ap.add_argument("--size", type=int, default=None, help="image side in px (default 64 tiny, 512 full size)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from lib_profile.hosts.diffusers import tiny
    from lib_profile.hosts.base import Txt2ImgRequest
    from lib_profile.hosts.diffusers.host import DiffusersHost

    work = Path(tempfile.mkdtemp(prefix="bench-host-"))
    folder = model_folder(work, args.full_size, diffusers_copy=True)
    size = args.size or (512 if args.full_size else 64)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device == "cuda" else torch.float32

    ours = DiffusersHost(folder / tiny.CHECKPOINT, device=device, data_dir=work)
    plain = StableDiffusionPipeline.from_pretrained(str(folder / tiny.DIFFUSERS), torch_dtype=dtype,
                                                    local_files_only=True, safety_checker=None,
                                                    requires_safety_checker=False).to(device)
    plain.scheduler = EulerAncestralDiscreteScheduler.from_config(plain.scheduler.config, timestep_spacing="linspace")
    plain.set_progress_bar_config(disable=True)
    prompt, negative = "studio portrait photo of a person, soft light", "blurry"
    req = Txt2ImgRequest(prompt=prompt, negative_prompt=negative, width=size, height=size, steps=args.steps,
                         cfg_scale=7.0, sampler="Euler a", seed=1)

    def run_ours():
        ours.txt2img(req)

    def run_plain():
        plain(prompt, negative_prompt=negative, width=size, height=size, num_inference_steps=args.steps,
              guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(1))

    med = median_times({"ours": run_ours, "plain": run_plain}, args.repeats, device)
    shape = "full SD1.5 shape" if args.full_size else "tiny model"
    print(f"txt2img {size}x{size}, {args.steps} steps Euler a, CFG 7, {shape}, {device}, {args.repeats} repeats")
    print(f"  plain diffusers pipeline : {med['plain']:.4f} s (median)")
    print(f"  Profile Studio host      : {med['ours']:.4f} s (median)")
    print(f"  ratio ours / plain       : {med['ours'] / med['plain']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
