"""Scoring a generated image against a person's reference embedding (the one that travels with the LoRA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image


def reference_from_lora(lora_path: str | Path) -> Optional[dict]:
    """The identity a Profile Studio LoRA carries: its metadata, else the ``.identity.json`` beside it."""
    from lib_profile.lora.apply import read_metadata

    path = Path(lora_path)
    meta = read_metadata(path)
    if meta.get("profile_studio_identity"):
        return json.loads(meta["profile_studio_identity"])
    side = path.with_name(path.stem + ".identity.json")
    return json.loads(side.read_text("utf-8")) if side.is_file() else None


class IdentityScorer:
    """Cosine similarity of the largest face in an image to the reference (None when there is no face)."""

    def __init__(self, reference: Optional[dict]):
        from lib_profile.photos.faces import default_detector

        self.vector = np.asarray(reference["vector"], np.float32) if reference else None
        self.embedder_name = reference.get("embedder", "dlib") if reference else None
        self.detector = default_detector()
        self._embedder = None

    @property
    def embedder(self):
        if self._embedder is None and self.embedder_name == "dlib":
            from lib_profile.identity.embed import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def __call__(self, image: Image.Image) -> Optional[float]:
        from lib_profile.identity.embed import cosine

        if self.vector is None or self.embedder is None:
            return None
        rgb = np.asarray(image.convert("RGB"))
        faces = self.detector.detect(rgb)
        if not faces:
            return None
        return round(cosine(self.embedder.embed(rgb, faces[0]), self.vector), 4)
