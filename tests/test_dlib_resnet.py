"""Our ONNX conversion of dlib's face embedder must give dlib's own embeddings on real faces.

dlib (dlib-bin) is only the reference here; the converter itself never imports it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from benchmarks.bench_embedder import dlib_reference_chips
from models.dlib_resnet import (
    DLIB_RESNET_PREPROCESS,
    DLIB_RESNET_SHA256,
    DlibFormatError,
    convert_dlib_resnet,
)
from models.runtime import OrtModel

N_CHIPS = 20


@pytest.fixture(scope="module")
def model_dir() -> Path:
    package = pytest.importorskip("face_recognition_models", reason="the CC0 dlib weights are not installed")
    return Path(os.path.dirname(package.__file__)) / "models"


@pytest.fixture(scope="module")
def dat_path(model_dir: Path) -> Path:
    return model_dir / "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def onnx_bytes(dat_path: Path) -> bytes:
    return convert_dlib_resnet(dat_path)


@pytest.fixture(scope="module")
def embedder(onnx_bytes: bytes) -> OrtModel:
    return OrtModel(onnx_bytes)


@pytest.fixture(scope="module")
def chips_rgb(faces_dir: Path, model_dir: Path) -> np.ndarray:
    """Aligned 150x150 RGB chips cut by dlib itself, round-robin over the identities."""
    pytest.importorskip("dlib")
    chips = dlib_reference_chips(faces_dir, N_CHIPS, model_dir)
    assert len(chips) == N_CHIPS, f"only {len(chips)} faces found in {faces_dir}"
    return chips


def _embed(model: OrtModel, chips_rgb: np.ndarray) -> np.ndarray:
    return model.run(DLIB_RESNET_PREPROCESS(chips_rgb[..., ::-1]))[0]  # Preprocess takes BGR


def test_file_is_the_pinned_release(dat_path: Path) -> None:
    assert hashlib.sha256(dat_path.read_bytes()).hexdigest() == DLIB_RESNET_SHA256


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_graph_interface(onnx_bytes: bytes) -> None:
    model = onnx.load_from_string(onnx_bytes)
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and _dims(inp) == ["N", 3, 150, 150]
    assert out.name == "embedding" and _dims(out) == ["N", 128]
    ops = {n.op_type for n in model.graph.node}
    assert "Mul" not in ops, "affine layers should be folded into the convolutions"


def test_matches_dlib_on_real_faces(embedder: OrtModel, chips_rgb: np.ndarray, dat_path: Path) -> None:
    dlib = pytest.importorskip("dlib")
    reference = dlib.face_recognition_model_v1(str(dat_path))
    expected = np.array([np.asarray(reference.compute_face_descriptor(chip)) for chip in chips_rgb])
    ours = _embed(embedder, chips_rgb)
    assert ours.shape == (N_CHIPS, 128)
    diff = float(np.abs(ours - expected).max())
    assert diff < 1e-4, f"max abs diff to dlib {diff:.3g}"
    # Raw, not L2-normalised: dlib's descriptors have norms around 1.3-1.6, and ours must too.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(expected, axis=1), atol=1e-4)


def test_batch_equals_single(embedder: OrtModel, chips_rgb: np.ndarray) -> None:
    batch = _embed(embedder, chips_rgb)
    single = np.concatenate([_embed(embedder, chip[None]) for chip in chips_rgb])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-5)


def test_folded_affine_equals_literal_graph(dat_path: Path, embedder: OrtModel) -> None:
    """Checks the folding without dlib, so it still guards the converter where dlib is absent."""
    literal_bytes = convert_dlib_resnet(dat_path, fold_affine=False)
    assert "Mul" in {n.op_type for n in onnx.load_from_string(literal_bytes).graph.node}
    literal = OrtModel(literal_bytes)
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    np.testing.assert_allclose(_embed(embedder, chips), _embed(literal, chips), rtol=0, atol=1e-5)


@pytest.mark.parametrize("cut", [
    pytest.param(lambda d: d[: len(d) // 2], id="truncated-half"),
    pytest.param(lambda d: d[:-1], id="truncated-last-byte"),
    pytest.param(lambda d: d[:1000], id="truncated-header"),
    pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
    pytest.param(lambda d: d.replace(b"\x05con_4", b"\x05con_5", 1), id="wrong-layer-version"),
    pytest.param(lambda d: b"", id="empty"),
])
def test_corrupt_file_raises(dat_path: Path, tmp_path: Path, cut) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(cut(dat_path.read_bytes()))
    with pytest.raises(DlibFormatError, match=r"bad\.dat"):
        convert_dlib_resnet(bad)


@pytest.mark.parametrize("name", ["shape_predictor_5_face_landmarks.dat", "mmod_human_face_detector.dat"])
def test_other_dlib_model_raises(model_dir: Path, name: str) -> None:
    with pytest.raises(DlibFormatError, match="expected 'loss_metric_2'"):
        convert_dlib_resnet(model_dir / name)
