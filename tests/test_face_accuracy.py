"""The open pack on real photos: the figures the issue asks for, asserted at their targets.

The embeddings of each data set are computed once per session (about 1-2 minutes on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.face_accuracy import calibrate, embed_people, leave_one_out_rank1, load_people, two_fold_open_set
from models import registry
from vision.faces.analyzer import FaceAnalyzer, build_analyzer


@pytest.fixture(scope="module")
def faces_samples(analyzer: FaceAnalyzer, faces_dir: Path):
    return embed_people(analyzer, load_people(faces_dir))


@pytest.fixture(scope="module")
def east_asian_samples(analyzer: FaceAnalyzer, east_asian_dir: Path):
    return embed_people(analyzer, load_people(east_asian_dir))


def _thresholds() -> tuple[float, float]:
    entry = registry.get_entry("dlib_resnet_v1")
    return entry.accept_threshold, entry.margin


def test_every_photo_of_faces_has_a_face(faces_samples) -> None:
    missing = [str(s.path) for s in faces_samples if s.embedding is None]
    assert not missing


def test_leave_one_out_rank1_on_faces(faces_samples) -> None:
    rank1, probes = leave_one_out_rank1(faces_samples)
    assert probes >= 90
    assert rank1 >= 0.97


def test_open_set_on_faces(faces_samples, analyzer: FaceAnalyzer) -> None:
    accept, margin = _thresholds()
    result = two_fold_open_set(faces_samples, analyzer.model_id, accept, margin)
    assert result.impostor_accept_rate <= 0.01
    assert result.genuine_match_rate >= 0.95
    assert result.genuine_wrong == 0


def test_east_asian_rank1_and_the_strict_threshold(east_asian_samples, analyzer: FaceAnalyzer) -> None:
    """dlib's embedder crowds East Asian faces: closed-set ranking holds, but the open-set threshold
    calibrated on faces/ lets strangers in (README's table). The registry's strict threshold keeps
    never-enrolled people out, at the cost of the match rate."""
    rank1, probes = leave_one_out_rank1(east_asian_samples)
    assert probes >= 60
    assert rank1 >= 0.97
    entry = registry.get_entry("dlib_resnet_v1")
    result = two_fold_open_set(east_asian_samples, analyzer.model_id, entry.strict_accept_threshold, entry.margin)
    assert result.impostor_accept_rate <= 0.01
    assert result.genuine_wrong == 0
    assert result.genuine_match_rate >= 0.5


def test_an_arcface_format_model_closes_the_east_asian_gap(faces_dir: Path, east_asian_dir: Path,
                                                           shared_models: Path) -> None:
    """The plug-in path for ArcFace-format files (insightface's loader), with the MobileFaceNet test
    fixture: thresholds calibrated on faces/ only, then applied unchanged to faces_east_asian/."""
    analyzer = build_analyzer("open", embedder_path=shared_models / "fixture_mobilefacenet_128d.onnx")
    accept, margin, rate = calibrate(embed_people(analyzer, load_people(faces_dir)))
    assert rate >= 0.95
    result = two_fold_open_set(embed_people(analyzer, load_people(east_asian_dir)), analyzer.model_id, accept, margin)
    print(f"\nfixture ArcFace model, accept {accept} margin {margin} from faces/: East Asian match rate "
          f"{result.genuine_match_rate:.3f}, strangers accepted {result.impostor_accept_rate:.3f}")
    assert result.impostor_accept_rate <= 0.01
    assert result.genuine_match_rate >= 0.95
