"""Photo inversion cost, side by side in one run, on the same host, model, photo, size, steps and CFG:

* a plain generation (txt2img, DDIM, the same steps and CFG) - the unit;
* each inversion method alone (Direct Inversion, null-text inversion, plain DDIM inversion: invert + sample back);
* each method + an edit: Plug-and-Play restyle and a Prompt-to-Prompt word swap on the photo (batch of 2).

Anchor: null-text inversion takes about a minute a photo on an A100 (Mokady et al. 2023, section 4); aim: the fast
path (Direct Inversion + restyle) under 2.5x one plain generation.

    .venv/bin/python bench/inversion.py                       # tiny model, CPU
    .venv/bin/python bench/inversion.py --full-size --steps 50  # random weights at real SD1.5 shape (for a GPU)
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
    ap.add_argument("--size", type=int, default=None, help="the photo's short side in px (default 128 tiny, 512 full)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--null-text-iterations", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--skip-null-text", action="store_true", help="leave out the (slow) null-text runs")
    args = ap.parse_args()

    import torch

    from lib_profile import sample_photos
    from lib_profile.attention.p2p import Edit
    from lib_profile.hosts.base import Txt2ImgRequest
    from lib_profile.hosts.diffusers import tiny
    from lib_profile.hosts.diffusers.host import DiffusersHost
    from lib_profile.inversion import photo

    work = Path(tempfile.mkdtemp(prefix="bench-inversion-"))
    folder = model_folder(work, args.full_size)
    size = args.size or (512 if args.full_size else 128)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    host = DiffusersHost(folder / tiny.CHECKPOINT, device=device, data_dir=work)
    picture = sample_photos.astronaut().crop((96, 0, 416, 480))  # a 2:3 portrait
    source = "a photo of an astronaut in a white suit"
    target = "studio portrait photo of an astronaut in a white suit, soft light"
    fitted = photo.fit_photo(picture, size)
    req = Txt2ImgRequest(prompt=target, width=fitted.width, height=fitted.height, steps=args.steps,
                         cfg_scale=args.cfg, sampler="DDIM", scheduler="Automatic", seed=1)

    def settings(method):
        return photo.PhotoSettings(method=method, steps=args.steps, cfg_scale=args.cfg, size=size,
                                   null_text_iterations=args.null_text_iterations)

    def plain():
        host.txt2img(req)

    def invert_only(method):
        return lambda: photo.restyle(host, picture, source, source, settings(method), 1.0, 1.0)

    def pnp(method):
        return lambda: photo.restyle(host, picture, source, target, settings(method))

    def p2p(method):
        edit = Edit(source=source, target=source.replace("white", "orange"), mode="swap")
        return lambda: photo.edit_photo(host, picture, edit, settings(method))

    methods = ["direct", "ddim"] + ([] if args.skip_null_text else ["null-text"])
    runs = {"plain": plain}
    for method in methods:
        runs[f"{method}: invert + reconstruct"] = invert_only(method)
        runs[f"{method}: + restyle (PnP)"] = pnp(method)
        runs[f"{method}: + edit (P2P swap)"] = p2p(method)
    med = median_times(runs, args.repeats, device)
    shape = "full SD1.5 shape" if args.full_size else "tiny model"
    print(f"photo {fitted.width}x{fitted.height}, {args.steps} steps DDIM, CFG {args.cfg:g}, {shape}, {device}, "
          f"{args.repeats} repeats, null-text {args.null_text_iterations} iterations at most")
    print(f"  {'plain generation (txt2img)':36s}: {med['plain']:.3f} s")
    for name, seconds in med.items():
        if name != "plain":
            print(f"  {name:36s}: {seconds:.3f} s   ratio {seconds / med['plain']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
