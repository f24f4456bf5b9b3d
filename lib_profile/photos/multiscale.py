"""Faces searched at more than one scale, so a small face in a large photo is still found.

A detector looks at the whole photo at one working size: mediapipe's full-range model letterboxes it into
192 x 192 px, dlib's HOG detector scales it to 1024 px (then upsamples once). A face is only seen when it
fills enough of the photo's longer side: measured on the astronaut sample, about 6.5 % for mediapipe and
4.5 % for dlib. In a 4000 x 3000 (12 MP) photo that is 260 px for mediapipe, so a clearly visible 240 px
face was missed and the photo rejected as ``no_face``.

:func:`find_faces` runs the detector on the whole photo first; only when that finds nothing does it search
overlapping square tiles, coarse to fine (each level's tiles half the side of the last), until a tile shows
faces down to ``smallest`` px. Tiles overlap by 1.5 times the largest face the level must catch (the
smallest the level before could see), so every such face lies whole in some tile; boxes, keypoints and
landmarks are moved back to photo pixels and duplicates from neighbouring tiles merged. The search stops at
the first level that finds a face, and after ``max_calls`` detector calls in all. Each face found in tiles is
measured again in a crop around it (:func:`refine`), since a face near a level's limit gets a loose box.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from lib_profile.photos.faces import Face

DEFAULT_FRACTION = 0.1  # a detector that does not say: faces down to 10 % of the longer side
OVERLAP = 1.5  # tile overlap, times the largest face a level must catch (the head around the box)
REFINE = 5.0  # a face found in tiles is measured again in a crop this many times its side (it fills ~20 %)
MAX_REFINED = 4  # faces measured again at most
MAX_CALLS = 160  # detector calls per photo at most, unless the detector's max_search_calls says fewer


@dataclass
class Search:
    """What :func:`find_faces` did: the faces (photo pixels, largest first) and how it looked."""

    faces: list[Face]
    tiles: list[int] = field(default_factory=list)  # tile side (px) of each level searched, the photo first
    smallest_seen: float = 0.0  # px: the smallest face the finest level searched can find
    calls: int = 0  # detector calls
    seconds: float = 0.0


def smallest_visible(detector, side: float) -> float:
    """The smallest face box side (px) ``detector`` finds in an image whose longer side is ``side`` px:
    its ``min_face_fraction`` of the side, and never below its ``min_face_px`` (0 when it has none)."""
    return max(getattr(detector, "min_face_fraction", DEFAULT_FRACTION) * side, getattr(detector, "min_face_px", 0.0))


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spread tile starts along one side so tiles cover it and neighbours overlap by >= ``overlap``."""
    if tile >= length:
        return [0]
    n = math.ceil((length - tile) / max(tile - overlap, 1.0)) + 1
    return sorted({round(v) for v in np.linspace(0, length - tile, n)})


def _shifted(face: Face, dx: int, dy: int) -> Face:
    x1, y1, x2, y2 = face.box
    landmarks = None
    if face.landmarks is not None:
        landmarks = face.landmarks.copy()
        landmarks[:, 0] += dx
        landmarks[:, 1] += dy
    return Face((x1 + dx, y1 + dy, x2 + dx, y2 + dy), face.score,
                {k: (x + dx, y + dy) for k, (x, y) in face.keypoints.items()}, landmarks, face.yaw, face.roll)


def _overlap(a: Face, b: Face) -> float:
    """Intersection over the smaller box's area (a half-face at a tile edge inside the whole one gives ~1)."""
    x1, y1 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
    x2, y2 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / max(min(a.area, b.area), 1e-6)


def merge(found: list[tuple[Face, bool]], same: float = 0.3) -> list[Face]:
    """One face per place, largest first: of boxes overlapping by more than ``same`` (of the smaller one),
    keep the one not cut by an inner tile edge, then the higher score. ``found``: (face, cut by an edge)."""
    kept: list[Face] = []
    for face, _cut in sorted(found, key=lambda fc: (fc[1], -fc[0].score)):
        if all(_overlap(face, k) <= same for k in kept):
            kept.append(face)
    return sorted(kept, key=lambda f: f.area, reverse=True)


def _search_level(detector, rgb: np.ndarray, tile: int, overlap: float) -> tuple[list[Face], int]:
    h, w = rgb.shape[:2]
    found, calls = [], 0
    for y in _starts(h, tile, overlap):
        for x in _starts(w, tile, overlap):
            th, tw = min(tile, h), min(tile, w)
            for face in detector.detect(np.ascontiguousarray(rgb[y:y + th, x:x + tw])):
                fx1, fy1, fx2, fy2 = face.box
                margin = 2.0  # px: a box this close to an edge shared with a neighbour is probably cut
                cut = ((x > 0 and fx1 < margin) or (y > 0 and fy1 < margin) or (x + tw < w and fx2 > tw - margin)
                       or (y + th < h and fy2 > th - margin))
                found.append((_shifted(face, x, y), cut))
            calls += 1
    return merge(found), calls


def refine(detector, rgb: np.ndarray, face: Face) -> Face:
    """``face`` detected again in a crop ``REFINE`` times its side around it: a face near the smallest size a
    tile shows gets a box up to 1.5x too large (seen with mediapipe), and face_too_small reads that box."""
    h, w = rgb.shape[:2]
    cx, cy = face.center
    half = REFINE * max(face.width, face.height) / 2
    x1, y1 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x2, y2 = int(min(cx + half, w)), int(min(cy + half, h))
    again = [_shifted(f, x1, y1) for f in detector.detect(np.ascontiguousarray(rgb[y1:y2, x1:x2]))]
    x_lo, y_lo, x_hi, y_hi = face.box
    inside = [f for f in again if x_lo <= f.center[0] <= x_hi and y_lo <= f.center[1] <= y_hi]
    return min(inside, key=lambda f: math.dist(f.center, face.center)) if inside else face


def find_faces(detector, rgb: np.ndarray, smallest: float, max_calls: int = MAX_CALLS) -> Search:
    """Faces in ``rgb`` (uint8 H x W x 3) down to ``smallest`` px (face box side), largest first.

    The whole photo first; when it shows none, tiles coarse to fine as the module says, stopping at the
    first level with a face, when tiles show faces of ``smallest`` px, or before a level that would take the
    calls past ``max_calls`` (or the detector's ``max_search_calls``, if lower; re-measuring the faces found
    takes up to ``MAX_REFINED`` more). Measured on 2 busy CPU cores, 4000 x 3000 px: mediapipe 0.03 s for the first look, 0.6 s to find a 240 px face, 2.9 s (82 calls) to
    find a 64 px one or to find none; dlib 1.2 s first (it sees 240 px faces there), about 30 s (28 calls)
    to find a 64 px face or none."""
    max_calls = min(max_calls, getattr(detector, "max_search_calls", max_calls))
    started = time.perf_counter()
    h, w = rgb.shape[:2]
    side = max(h, w)
    faces = detector.detect(rgb)
    search = Search(faces, [side], smallest_visible(detector, side), 1)
    fraction = getattr(detector, "min_face_fraction", DEFAULT_FRACTION)
    finest = max(int(smallest / fraction), 64)  # the tile side that shows faces of `smallest` px
    tile = side
    while not search.faces and search.smallest_seen > smallest and tile > finest:
        tile = max(tile // 2, finest)
        seen = smallest_visible(detector, tile)
        if seen >= search.smallest_seen:  # the detector's own floor: smaller tiles show nothing new
            break
        overlap = OVERLAP * search.smallest_seen
        if search.calls + len(_starts(h, tile, overlap)) * len(_starts(w, tile, overlap)) > max_calls:
            break
        search.faces, calls = _search_level(detector, rgb, tile, overlap)
        search.calls += calls
        if search.faces:
            refined = [refine(detector, rgb, f) for f in search.faces[:MAX_REFINED]]
            search.faces = merge([(f, False) for f in refined + search.faces[MAX_REFINED:]])
            search.calls += len(refined)
        search.tiles.append(tile)
        search.smallest_seen = seen
    if search.faces and search.faces[0].landmarks is None and hasattr(detector, "add_landmarks"):
        detector.add_landmarks(rgb, search.faces[0])
    search.seconds = time.perf_counter() - started
    return search
