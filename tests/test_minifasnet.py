"""Our torch-free reading of the official MiniFASNet checkpoints, and the ONNX graph built from them.

The reference is the network as the Silent-Face-Anti-Spoofing code defines it, re-implemented
plainly here in numpy (im2col convolutions, BatchNorm applied, not folded, float64), so the ONNX
graph's wiring, BN folding and group counts are checked against an independent forward pass.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import registry
from models.minifasnet import (
    CheckpointFormatError,
    convert_minifasnet,
    read_legacy_checkpoint,
)
from models.runtime import OrtModel
from vision.faces.liveness import PAIR_SCALES, scaled_crop

CHECKPOINTS = {"minifasnet_v2": ("minifasnet_v2_2.7_80x80.pth", 334),
               "minifasnet_v1se": ("minifasnet_v1se_4.0_80x80.pth", 370)}


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def model_id(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def pth(model_id: str, shared_models: Path) -> Path:
    path = shared_models / CHECKPOINTS[model_id][0]
    if not path.exists():
        pytest.skip(f"{path.name} not in the model mirror")
    return path


@pytest.fixture(scope="module")
def weights(pth: Path) -> dict[str, np.ndarray]:
    return read_legacy_checkpoint(pth)


@pytest.fixture(scope="module")
def face_crop(faces_dir: Path, model_id: str) -> np.ndarray:
    """A real face at the model's own crop scale, (1,3,80,80) BGR 0..255."""
    from vision.faces.analyzer import build_analyzer

    image = cv2.imread(str(faces_dir / "barack_obama" / "facerec_obama.jpg"))
    faces = build_analyzer("open").detector.detect(image).largest_first()
    assert len(faces) >= 1
    chip = scaled_crop(image, faces.boxes[0], PAIR_SCALES[model_id], 80)
    return chip.transpose(2, 0, 1)[None].astype(np.float32)


def test_reader_returns_every_tensor_with_its_shape(weights: dict[str, np.ndarray], model_id: str) -> None:
    assert len(weights) == CHECKPOINTS[model_id][1]
    assert not any(k.startswith("module.") for k in weights)
    assert weights["conv1.conv.weight"].shape == (32, 3, 3, 3)
    assert weights["conv2_dw.conv.weight"].shape == (32, 1, 3, 3)
    assert weights["conv_6_dw.conv.weight"].shape == (512, 1, 5, 5)
    assert weights["linear.weight"].shape == (128, 512)
    assert weights["prob.weight"].shape == (3, 128)
    assert weights["conv1.bn.num_batches_tracked"].dtype == np.int64
    floats = [v for v in weights.values() if v.dtype == np.float32]
    assert all(np.isfinite(v).all() for v in floats)
    assert all((weights[k] > 0).all() for k in weights if k.endswith("running_var"))
    has_se = any(".se_module." in k for k in weights)
    assert has_se == (model_id == "minifasnet_v1se")


def test_reader_rejects_trailing_and_missing_bytes(pth: Path, tmp_path: Path) -> None:
    data = pth.read_bytes()
    for name, body in [("trailing.pth", data + b"\0"), ("truncated.pth", data[:-4])]:
        (tmp_path / name).write_bytes(body)
        with pytest.raises(CheckpointFormatError):
            read_legacy_checkpoint(tmp_path / name)


def test_reader_never_resolves_foreign_globals(tmp_path: Path) -> None:
    """A checkpoint is untrusted: a pickle that calls os.system must be refused before anything runs."""
    import os

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    path = tmp_path / "evil.pth"
    path.write_bytes(header + pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(CheckpointFormatError, match="never needs"):
        read_legacy_checkpoint(path)
    assert not marker.exists()


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Grouped 2-D convolution by explicit im2col: (N,C,H,W) x (O,C/g,k,k) -> (N,O,H',W')."""
    n, c, h, width = x.shape
    out_c, cg, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (width + 2 * pad - k) // stride + 1
    cols = np.empty((n, c, k, k, oh, ow), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    cols = cols.reshape(n, groups, cg, k, k, oh, ow)
    wg = w.reshape(groups, out_c // groups, cg, k, k)
    return np.einsum("ngcijhw,gocij->ngohw", cols, wg).reshape(n, out_c, oh, ow)


class _Reference:
    """MiniFASNet's forward pass, layer by layer as the reference code writes it."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = {k: v.astype(np.float64) for k, v in weights.items()}

    def bn(self, x: np.ndarray, p: str) -> np.ndarray:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean, var = self.w[f"{p}.running_mean"].reshape(shape), self.w[f"{p}.running_var"].reshape(shape)
        return (x - mean) / np.sqrt(var + 1e-5) * self.w[f"{p}.weight"].reshape(shape) + self.w[f"{p}.bias"].reshape(
            shape)

    def block(self, x: np.ndarray, p: str, stride: int = 1, pad: int = 0, depthwise: bool = False,
              prelu: bool = True) -> np.ndarray:
        w = self.w[f"{p}.conv.weight"]
        y = self.bn(_conv(x, w, stride, pad, x.shape[1] if depthwise else 1), f"{p}.bn")
        if prelu:
            y = np.where(y > 0, y, y * self.w[f"{p}.prelu.weight"].reshape(1, -1, 1, 1))
        return y

    def se(self, x: np.ndarray, p: str) -> np.ndarray:
        s = x.mean(axis=(2, 3), keepdims=True)
        s = np.maximum(self.bn(_conv(s, self.w[f"{p}.fc1.weight"], 1, 0, 1), f"{p}.bn1"), 0)
        s = self.bn(_conv(s, self.w[f"{p}.fc2.weight"], 1, 0, 1), f"{p}.bn2")
        return x / (1 + np.exp(-s))

    def depth_wise(self, x: np.ndarray, p: str, stride: int, residual: bool) -> np.ndarray:
        y = self.block(x, f"{p}.conv")
        y = self.block(y, f"{p}.conv_dw", stride, 1, depthwise=True)
        y = self.block(y, f"{p}.project", prelu=False)
        if f"{p}.se_module.fc1.weight" in self.w:
            y = self.se(y, f"{p}.se_module")
        return x + y if residual else y

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.block(x.astype(np.float64), "conv1", 2, 1)
        x = self.block(x, "conv2_dw", 1, 1, depthwise=True)
        for down, stage in [("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")]:
            x = self.depth_wise(x, down, 2, residual=False)
            blocks = {int(m.group(1)) for k in self.w if (m := re.match(rf"{stage}\.model\.(\d+)\.", k))}
            for i in sorted(blocks):
                x = self.depth_wise(x, f"{stage}.model.{i}", 1, residual=True)
        x = self.block(x, "conv_6_sep")
        x = self.block(x, "conv_6_dw", depthwise=True, prelu=False).reshape(len(x), -1)
        x = self.bn(x @ self.w["linear.weight"].T, "bn")
        return x @ self.w["prob.weight"].T


def test_onnx_graph_matches_numpy_reference_on_a_real_face(pth: Path, weights: dict[str, np.ndarray],
                                                           face_crop: np.ndarray) -> None:
    expected = _Reference(weights).forward(face_crop)
    got = OrtModel(convert_minifasnet(pth), threads=1).run(face_crop)[0]
    assert got.shape == (1, 3)
    assert np.abs(got - expected).max() < 1e-4
    assert expected.argmax() == 1, "the reference itself should call this press photo real"


def test_graph_runs_batches(pth: Path, face_crop: np.ndarray) -> None:
    model = OrtModel(convert_minifasnet(pth), threads=1)
    batch = np.concatenate([face_crop, face_crop[:, :, ::-1].copy(), face_crop * 0.5])
    together = model.run(batch)[0]
    alone = np.concatenate([model.run(b[None])[0] for b in batch])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_registry_converts_once_and_caches(model_id: str, pth: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(pth.parent))
    monkeypatch.setenv("GATEWATCH_MODEL_CACHE", str(tmp_path))
    entry = registry.get_entry(model_id)
    first = registry.resolve_onnx(entry, allow_download=False)
    assert first.parent == tmp_path and first.suffix == ".onnx"
    mtime = first.stat().st_mtime_ns
    assert registry.resolve_onnx(entry, allow_download=False).stat().st_mtime_ns == mtime
