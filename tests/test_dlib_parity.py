"""Our pipeline (MTCNN -> dlib's predictor from MTCNN's points -> our chips -> converted ResNet)
against dlib's own (HOG detector -> dlib predictor -> get_face_chip -> dlib ResNet), same photos.

The claim proven here: replacing dlib's detector, chips and network costs no accuracy, measured as leave-one-out
rank-1 and as the best balanced accuracy over all same/different-person photo pairs.
Flip averaging is off, so both sides run the very same network on one chip per face. Our
detector must also find a face in at least every photo dlib's HOG detector does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.face_accuracy import Sample, leave_one_out_rank1, load_people, verification_accuracy
from vision.faces.analyzer import build_analyzer
from vision.images import load_image

dlib = pytest.importorskip("dlib", reason="dlib-bin is not installed")
MAX_SIDE = 800  # both pipelines see the same downscaled photos; dlib's HOG is slow on 12 MP


def _photos(root: Path) -> list[tuple[str, Path, np.ndarray]]:
    out = []
    for person, paths in load_people(root).items():
        for path in paths:
            image = load_image(path)
            scale = MAX_SIDE / max(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            out.append((person, path, image))
    return out


def _ours(photos) -> list[Sample]:
    analyzer = build_analyzer("open")
    analyzer.embedder.flip_average = False
    samples = []
    for person, path, image in photos:
        faces = analyzer.analyze(image, max_faces=1)
        samples.append(Sample(person, path, faces.embeddings[0] if len(faces) else None,
                              faces.quality[0].score if len(faces) else 0.0))
    return samples


def _dlibs(photos) -> list[Sample]:
    import face_recognition_models as frm

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    samples = []
    for person, path, image in photos:
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        boxes = sorted(detector(rgb, 1), key=lambda r: -r.area())
        if not boxes:
            samples.append(Sample(person, path, None, 0.0))
            continue
        vector = np.array(encoder.compute_face_descriptor(rgb, predictor(rgb, boxes[0])), np.float32)
        samples.append(Sample(person, path, vector / np.linalg.norm(vector), float(boxes[0].area())))
    return samples


@pytest.mark.parametrize("dataset", ["faces", "faces_east_asian"])
def test_accuracy_equals_dlibs_own_pipeline_within_one_point(shared_data: Path, dataset: str) -> None:
    photos = _photos(shared_data / dataset)
    ours, theirs = _ours(photos), _dlibs(photos)
    # Compare like with like: the photos where both found a face, with the same photo enrolled
    # for each person (our quality score picks it). Detection coverage is compared separately.
    assert sum(s.embedding is None for s in ours) <= sum(s.embedding is None for s in theirs)
    both = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
            if a.embedding is not None and b.embedding is not None]
    ours = [ours[i] for i in both]
    theirs = [Sample(t.person, t.path, t.embedding, o.quality) for o, t in zip(ours, [theirs[i] for i in both],
                                                                               strict=True)]
    rank1_ours, _ = leave_one_out_rank1(ours)
    rank1_dlib, _ = leave_one_out_rank1(theirs)
    acc_ours, acc_dlib = verification_accuracy(ours), verification_accuracy(theirs)
    print(f"{dataset}: {len(both)} photos; rank-1 ours {rank1_ours:.3f} dlib {rank1_dlib:.3f}; "
          f"pair verification accuracy ours {acc_ours:.4f} dlib {acc_dlib:.4f}")
    assert rank1_ours >= rank1_dlib - 0.01
    assert acc_ours >= acc_dlib - 0.01
