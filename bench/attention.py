"""Attention control cost, side by side in one run, on the same host, model, prompt, size, steps and seed:

* DAAM: a plain generation vs ours with DAAM recording vs the reference ``daam`` package tracing the
  same pipeline (overhead ratios against plain; targets: ours under 1.10x at full size, and below daam);
* Prompt-to-Prompt: an edit (source + edit, one batch, word swap with self-attention injection) vs a
  plain batch-2 generation (target: under 1.10x).

    .venv/bin/python bench/attention.py                 # tiny model, CPU
    .venv/bin/python bench/attention.py --full-size     # random weights at real SD1.5 shape (meant for a GPU)
    .venv/bin/python bench/attention.py --layout        # SD1.5's layer layout, narrow: the launch-bound regime on a CPU
    .venv/bin/python bench/attention.py --layout --count-ops  # also each run's aten op count (a launch count stand-in)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import median_times, model_folder, op_counts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", action="store_true", help="random SD1.5-shaped weights instead of the tiny model")
    ap.add_argument("--layout", action="store_true",
                    help="SD1.5's exact layer layout at narrow widths (per-operation overhead, as on a fast GPU)")
    ap.add_argument("--size", type=int, default=None, help="image side in px (default 128 tiny, 512 full size)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--count-ops", action="store_true",
                    help="also count each run's aten ops with the torch profiler (all, and those that do work)")
    args = ap.parse_args()

    import torch

    from lib_profile.attention.daam import DaamRecorder, TokenMap
    from lib_profile.attention.explain import tokenizer
    from lib_profile.attention.p2p import Edit, run_edit
    from lib_profile.hosts.diffusers import tiny
    from lib_profile.hosts.base import RunControl, Txt2ImgRequest
    from lib_profile.hosts.diffusers.host import DiffusersHost

    work = Path(tempfile.mkdtemp(prefix="bench-attention-"))
    folder = model_folder(work, args.full_size, layout=args.layout)
    size = args.size or (512 if args.full_size else 128)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    host = DiffusersHost(folder / tiny.CHECKPOINT, device=device, data_dir=work)
    prompt = "studio portrait photo of a woman in a red sweater, soft light"
    words = ["woman", "red", "sweater", "light"]
    req = Txt2ImgRequest(prompt=prompt, width=size, height=size, steps=args.steps, cfg_scale=7.0, sampler="Euler",
                         scheduler="Automatic", seed=1)
    req2 = Txt2ImgRequest(prompt=prompt, width=size, height=size, steps=args.steps, cfg_scale=7.0, sampler="Euler",
                          scheduler="Automatic", seeds=[1, 1], batch_size=2)
    tok = tokenizer()
    tokens = TokenMap.from_prompt(tok, prompt)
    positions = {w: tokens.positions(tok, w) for w in words}
    edit = Edit(source=prompt, target=prompt.replace("red", "blue"), mode="swap")

    def plain():
        host.txt2img(req)

    def ours_daam():
        rec = DaamRecorder([p for ps in positions.values() for p in ps])
        image = host.txt2img(req, RunControl(attention=rec)).images[0]
        for ps in positions.values():
            rec.word_map(ps, image.size)

    try:
        import daam
    except ImportError:
        daam = None
    pipe = host.pipeline("txt2img")

    def package_daam():
        with daam.trace(pipe) as tc:
            tc.latent_hw = (size // 8) ** 2
            for hooker in tc.module:
                if hasattr(hooker, "latent_hw"):
                    hooker.latent_hw = tc.latent_hw
            image = pipe(prompt, width=size, height=size, num_inference_steps=args.steps, guidance_scale=7.0,
                         generator=[torch.Generator("cpu").manual_seed(1)]).images[0]
            heat = tc.compute_global_heat_map()
            for w in words:
                heat.compute_word_heat_map(w).expand_as(image)

    def plain_batch2():
        host.txt2img(req2)

    def p2p():
        run_edit(host, req, edit, tokenizer=tok)

    runs = {"plain": plain, "ours+DAAM": ours_daam, "plain batch 2": plain_batch2, "P2P edit": p2p}
    if daam is not None:
        runs["daam package"] = package_daam
    med = median_times(runs, args.repeats, device)
    shape = "full SD1.5 shape" if args.full_size else "SD1.5 layout, narrow" if args.layout else "tiny model"
    print(f"txt2img {size}x{size}, {args.steps} steps Euler, CFG 7, {shape}, {device}, {args.repeats} repeats, "
          f"{len(words)} words")
    print(f"  plain generation          : {med['plain']:.4f} s")
    print(f"  ours with DAAM            : {med['ours+DAAM']:.4f} s   ratio {med['ours+DAAM'] / med['plain']:.3f}")
    if daam is not None:
        print(f"  daam package              : {med['daam package']:.4f} s   "
              f"ratio {med['daam package'] / med['plain']:.3f}")
    else:
        print("  daam package              : not installed (pip install --no-deps daam==0.2.0 spacy)")
    print(f"  plain batch-2 generation  : {med['plain batch 2']:.4f} s")
    print(f"  P2P edit (swap, batch 2)  : {med['P2P edit']:.4f} s   "
          f"ratio {med['P2P edit'] / med['plain batch 2']:.3f}")
    if args.count_ops:
        counts = op_counts(runs)
        print("aten ops of one generation (all / doing work, i.e. not a view or an empty tensor), vs its plain one:")
        for name, base in (("plain", "plain"), ("ours+DAAM", "plain"), ("daam package", "plain"),
                           ("plain batch 2", "plain batch 2"), ("P2P edit", "plain batch 2")):
            if name in counts:
                (total, work), (total0, work0) = counts[name], counts[base]
                print(f"  {name:24s}: {total:7d} / {work:6d}   extra {total - total0:+6d} / {work - work0:+5d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
