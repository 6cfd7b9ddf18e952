"""Enrol and identify, ms per image, with the real pipeline and gallery (CLI's code path).

Run: `python -m benchmarks.bench_pipeline [--pack open] [--size 640]`. Photos of shared/data/faces
are resized so that their longer side is --size (0 keeps the originals, up to 12 MP), enrolled into
a temporary gallery, then identified; prints the median and p90 per image for each step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks.face_accuracy import load_people
from gates.enrollment import EnrolmentError, enrolment_face
from gates.gallery import Gallery
from vision.faces.analyzer import build_analyzer
from vision.images import load_image


def _resized(path: Path, size: int) -> np.ndarray:
    image = load_image(path)
    scale = size / max(image.shape[:2]) if size else 1.0
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--faces", type=Path, default=repo.parent / "shared/data/faces")
    parser.add_argument("--pack", default="open")
    parser.add_argument("--size", type=int, default=640, help="longer side in pixels; 0 = original")
    args = parser.parse_args(argv)
    analyzer = build_analyzer(args.pack)
    people = load_people(args.faces)
    images = {person: [_resized(p, args.size) for p in paths] for person, paths in people.items()}
    analyzer.analyze(images[next(iter(images))][0])  # warm-up
    enrol_ms, identify_ms = [], []
    with tempfile.TemporaryDirectory() as tmp, \
            Gallery.open(Path(tmp), analyzer.model_id, analyzer.embedder.dim, accept_threshold=0.94,
                         margin=0.01) as gallery:
        for person, photos in images.items():
            start = time.perf_counter()
            try:
                face = enrolment_face(analyzer, photos[0])
            except EnrolmentError:
                continue
            gallery.add_resident_with_faces(person, face.embedding[None], [face.quality.score], ["bench"])
            enrol_ms.append(1000 * (time.perf_counter() - start))
        for photos in images.values():
            for image in photos[1:]:
                start = time.perf_counter()
                gallery.identify(analyzer.analyze(image).embeddings)
                identify_ms.append(1000 * (time.perf_counter() - start))
    for name, values in (("enrol", enrol_ms), ("identify", identify_ms)):
        p90 = float(np.percentile(values, 90))
        print(f"{name:9} {len(values):3} images at {args.size or 'original'} px: "
              f"median {statistics.median(values):6.1f} ms, p90 {p90:6.1f} ms per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
