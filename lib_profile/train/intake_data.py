"""What the trainer reads from an intake folder: the accepted crops, their captions, the reference face."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lib_profile.hosts.base import HostError


@dataclass
class IntakeData:
    crops: list[Path]
    captions: list[str]
    reference: Optional[np.ndarray]
    embedder: str
    token: str
    class_word: str


def read_intake(folder: str | Path) -> IntakeData:
    folder = Path(folder)
    report = folder / "report.json"
    if not report.is_file():
        raise HostError(f"{folder} is not an intake folder (no report.json); run `python -m lib_profile intake` first.")
    rep = json.loads(report.read_text("utf-8"))
    crops = sorted((folder / "train").glob("*.png"))
    if not crops:
        raise HostError(f"The intake in {folder} has no accepted photos; add photos and run intake again.")
    if not rep.get("ready", False):
        raise HostError(f"The intake in {folder} is not ready to train: {rep.get('next_step', '')}")
    captions = [(c.with_suffix(".txt").read_text("utf-8").strip() if c.with_suffix(".txt").is_file()
                 else rep.get("caption", "")) for c in crops]
    ident = folder / "identity.json"
    reference, embedder = None, rep.get("identity", {}).get("embedder", "dlib")
    if ident.is_file():
        data = json.loads(ident.read_text("utf-8"))
        reference, embedder = np.asarray(data["vector"], np.float32), data["embedder"]
    return IntakeData(crops, captions, reference, embedder, rep.get("token", "ohwx"), rep.get("class_word", "person"))
