"""Selfie intake speed: 20 real-photo selfies end to end (read, detect, face mesh, checks, dlib
embedding, crops, report, contact sheet), seconds per photo. Target: under 0.5 s per photo on 2 CPU
cores. For scale: EasyPhoto's preprocessing took ~3 minutes for ~20 photos on an A10 GPU.

    .venv/bin/python bench/intake.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import torch

    from lib_profile import sample_photos
    from lib_profile.identity.embed import default_embedder
    from lib_profile.photos.faces import default_detector
    from lib_profile.photos.intake import run_intake

    work = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    src = work / "photos"
    src.mkdir()
    photos = sample_photos.selfies(sample_photos.astronaut, 10) + sample_photos.selfies(sample_photos.grace_hopper, 10)
    for i, (name, im) in enumerate(photos):
        im.save(src / f"{i:02d}_{name}.jpg", quality=92)
    t0 = time.perf_counter()
    default_detector(), default_embedder()  # model loading, once per process
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = run_intake(src, work / "out")
    run = time.perf_counter() - t1
    n = len(photos)
    print(f"intake of {n} photos ({torch.get_num_threads()} CPU threads)")
    print(f"  model loading (once): {load:.2f} s")
    print(f"  intake end to end   : {run:.2f} s = {run / n:.3f} s per photo (target < 0.5)")
    print(f"  accepted {report['counts']['accepted']}, rejected {report['counts']['rejected']} "
          f"(the second person's photos are flagged different_person)")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
