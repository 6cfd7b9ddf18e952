"""What an enrolment photo's quality says about how its template will match.

Run: `python -m benchmarks.enrol_quality`. Every photo of `../shared/data/faces*` is also degraded as
a gate camera degrades a face (the whole image shrunk until the face is 50-90 px, JPEG at camera
quality, optical blur), then each version is embedded and scored against the same person's other
photos (fused, as the gallery scores) and against everybody else's. Binned by sharpness and by
face size, the table says where genuine scores fall and where impostor scores rise, the two ways a
poor template fails at the gate, so that enrolment refuses on what predicts them.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from benchmarks.face_accuracy import load_people
from vision.faces.analyzer import FaceAnalyzer, build_analyzer
from vision.images import ImageError, load_image

FACE_SIZES = (None, 90, 70, 50)  # None: the photo as it is
BLURS = (0.0, 1.5)


@dataclass(frozen=True)
class Probe:
    person: str
    face_px: float
    sharpness: float
    genuine: float  # similarity to the person's other photos, fused
    impostor: float  # best similarity to anybody else's photos, fused


def _degrade(image: np.ndarray, face_px: float, target: int | None, blur: float) -> np.ndarray:
    if target is not None and face_px > target:
        scale = target / face_px
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if blur:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    _ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def probes(analyzer: FaceAnalyzer, roots: list[Path]) -> list[Probe]:
    people = {name: paths for root in roots for name, paths in load_people(root).items()}
    originals: dict[str, list[tuple[np.ndarray, np.ndarray, float]]] = {}
    for name, paths in people.items():
        for path in paths:
            try:
                image = load_image(path)
            except ImageError:
                continue
            faces = analyzer.analyze(image, max_faces=1)
            if len(faces):
                originals.setdefault(name, []).append((image, faces.embeddings[0], faces.quality[0].face_px))
    fused = {name: _unit(np.mean([e for _, e, _ in rows], axis=0)) for name, rows in originals.items()}
    out = []
    for name, rows in originals.items():
        if len(rows) < 2:
            continue
        others = np.stack([f for n, f in fused.items() if n != name])
        for k, (image, _, face_px) in enumerate(rows):
            reference = _unit(np.mean([e for j, (_, e, _) in enumerate(rows) if j != k], axis=0))
            for target in FACE_SIZES:
                for blur in BLURS:
                    faces = analyzer.analyze(_degrade(image, face_px, target, blur), max_faces=1)
                    if not len(faces):
                        continue
                    e, q = faces.embeddings[0], faces.quality[0]
                    out.append(Probe(name, q.face_px, q.sharpness, float(reference @ e), float((others @ e).max())))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def table(rows: list[Probe], key: str, edges: tuple[float, ...], threshold: float) -> list[str]:
    lines = [f"{key:>14} {'n':>5} {'genuine mean':>13} {'genuine >= T':>13} {'impostor p95':>13} {'impostor max':>13}"]
    values = np.array([getattr(r, key) for r in rows])
    for lo, hi in itertools.pairwise(edges):
        sel = [r for r, v in zip(rows, values, strict=True) if lo <= v < hi]
        if not sel:
            continue
        g = np.array([r.genuine for r in sel])
        i = np.array([r.impostor for r in sel])
        lines.append(f"{f'{lo:g}-{hi:g}':>14} {len(sel):5d} {g.mean():13.3f} {np.mean(g >= threshold):13.2f} "
                     f"{np.percentile(i, 95):13.3f} {i.max():13.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from models import registry

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[repo.parent / "shared/data/faces", repo.parent / "shared/data/faces_east_asian"])
    args = parser.parse_args(argv)
    analyzer = build_analyzer("open")
    threshold = registry.get_entry("dlib_resnet_v1").accept_threshold
    rows = probes(analyzer, args.data)
    print(f"{len(rows)} probes (photos and their degraded versions); T = {threshold}")
    print("\n".join(table(rows, "sharpness", (0, 5, 10, 20, 40, 80, 1e9), threshold)))
    print("\n".join(table(rows, "face_px", (0, 40, 60, 80, 120, 1e9), threshold)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
