"""The studio plan's orchestration overhead: the plan's wall time against the sum of the same stages
run as bare host calls (same requests, no plan), side by side in one run on the tiny model.
Target ratio under 1.05. Also prints per-stage times.

    .venv/bin/python bench/studio.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from lib_profile.hosts.base import Img2ImgRequest, Txt2ImgRequest
    from lib_profile.hosts.diffusers.host import DiffusersHost, tiny_controlnet
    from lib_profile.studio.detail import DetailParams, detail_pass
    from lib_profile.studio.plan import build_plan
    from lib_profile.studio.run import run_plan, tiled_upscale
    from lib_profile.studio.tone import get_tone, grade_image

    work = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    host = DiffusersHost("tiny", device="cpu", data_dir=work)
    tile = str(tiny_controlnet(work))

    def plan():
        p = build_plan("studio portrait photo of ohwx woman", None, None, "warm", 1, 7, controlnet_tile=tile,
                       data_dir=work, width=256, height=384, steps=10)
        for s in p.stages:
            s.params.update({k: v for k, v in (("steps", 10), ("size", 256)) if k in s.params})
        return p

    def bare(p):
        """The same stages as direct host calls: what a hand-written script would do."""
        times = {}
        t = time.perf_counter()
        img = host.txt2img(Txt2ImgRequest(prompt=p.prompt, negative_prompt=p.negative_prompt, width=p.width,
                                          height=p.height, steps=p.steps, cfg_scale=p.cfg_scale, sampler=p.sampler,
                                          scheduler=p.scheduler, seed=p.seed, clip_skip=p.clip_skip)).images[0]
        times["txt2img"] = time.perf_counter() - t
        for i, stage in enumerate(p.stages[1:], 1):
            t = time.perf_counter()
            if stage.kind == "detail":
                img, _ = detail_pass(host, img, p.prompt, p.negative_prompt, [], p.seed, p.sampler, p.scheduler,
                                     p.cfg_scale, p.clip_skip, DetailParams(**stage.params))
            elif stage.kind == "refine":
                img = host.img2img(Img2ImgRequest(prompt=stage.params["prompt"], negative_prompt=p.negative_prompt,
                                                  width=img.width, height=img.height, steps=stage.params["steps"],
                                                  cfg_scale=p.cfg_scale, sampler=p.sampler, scheduler=p.scheduler,
                                                  seed=p.seed, clip_skip=p.clip_skip, init_image=img,
                                                  denoising_strength=stage.params["denoising_strength"])).images[0]
            elif stage.kind == "upscale":
                img = tiled_upscale(host, img, p, stage.params, [], p.seed, None)
            elif stage.kind == "grade":
                img = grade_image(img, get_tone(p.tone, work))
            times[f"{i}:{stage.kind}"] = time.perf_counter() - t
        return times

    run_plan(plan(), host, work / "warm-up")  # warm-up
    walls, sums, per_stage = [], [], []
    for r in range(3):
        t = time.perf_counter()
        result = run_plan(plan(), host, work / f"run{r}")
        walls.append(time.perf_counter() - t)
        per_stage.append(result["images"][0]["stage_seconds"])
        sums.append(sum(bare(plan()).values()))
    wall, base = statistics.median(walls), statistics.median(sums)
    print("studio plan, tiny model, 256x384 -> 512x768, 10 steps per pass, CPU, median of 3")
    print(f"  bare host calls, summed : {base:.2f} s")
    print(f"  plan wall time          : {wall:.2f} s")
    print(f"  orchestration ratio     : {wall / base:.3f} (target < 1.05)")
    print("  per stage (plan run):", ", ".join(f"{k} {v:.2f}s" for k, v in per_stage[-1].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
