"""User-supplied insightface-format models plug in through insightface's own loaders.

The ArcFace path runs a real model (the MobileFaceNet test fixture). No SCRFD weights can be had
offline here, so the SCRFD path is exercised with a small graph of the SCRFD output layout built
in the test: it scores bright pixels as faces, which makes the expected detection known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from vision.faces.insightface_models import ScrfdDetector, UnsupportedModelError, load_arcface_embedder

SIZE = 640
STRIDES = (8, 16, 32)
ANCHORS = 2


def _scrfd_like(path: Path) -> Path:
    """input (1,3,640,640) -> per stride: scores (N,1), box distances (N,4), keypoints (N,10)."""
    nodes, inits, outputs = [], [], {"score": [], "bbox": [], "kps": []}
    for s in STRIDES:
        nodes.append(helper.make_node("AveragePool", ["input"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]))
        for kind, channels, bias in (("score", 1, -2.0), ("bbox", 4, 1.5), ("kps", 10, 0.0)):
            weight = np.zeros((channels * ANCHORS, 3, 1, 1), np.float32)
            if kind == "score":
                weight[:] = 4.0 / 3  # bright (about +1 after SCRFD's normalisation) -> logit +2
            offsets = {"bbox": [bias] * 4, "kps": [-0.5, -0.5, 0.5, -0.5, 0, 0, -0.4, 0.5, 0.4, 0.5]}.get(kind)
            b = np.array((offsets or [bias]) * ANCHORS, np.float32)
            inits += [numpy_helper.from_array(weight, f"w_{kind}{s}"), numpy_helper.from_array(b, f"b_{kind}{s}")]
            out = f"{kind}{s}"
            nodes += [
                helper.make_node("Conv", [f"pool{s}", f"w_{kind}{s}", f"b_{kind}{s}"], [f"c_{out}"]),
                helper.make_node("Transpose", [f"c_{out}"], [f"t_{out}"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"t_{out}", f"shape_{kind}"], [f"r_{out}" if kind == "score" else out]),
            ]
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [f"r_{out}"], [out]))
            count = (SIZE // s) ** 2 * ANCHORS
            outputs[kind].append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [count, channels]))
    for kind, channels in (("score", 1), ("bbox", 4), ("kps", 10)):
        inits.append(numpy_helper.from_array(np.array([-1, channels], np.int64), f"shape_{kind}"))
    graph = helper.make_graph(nodes, "scrfd_like",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              outputs["score"] + outputs["bbox"] + outputs["kps"], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_scrfd_layout_is_decoded_by_insightface_into_detections(tmp_path: Path) -> None:
    detector = ScrfdDetector(_scrfd_like(tmp_path / "scrfd.onnx"), score_threshold=0.5)
    image = np.zeros((480, 640, 3), np.uint8)
    image[200:264, 300:364] = 255  # the only bright patch
    faces = detector.detect(image)
    assert len(faces) >= 1 and faces.landmarks.shape == (len(faces), 5, 2)
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    assert np.all((centres >= [296, 196]) & (centres <= [368, 268]))
    assert np.all(faces.scores >= 0.5)
    assert len(detector.detect(np.zeros((480, 640, 3), np.uint8))) == 0


def test_arcface_fixture_loads_with_its_preprocessing(shared_models: Path) -> None:
    embedder, size = load_arcface_embedder(shared_models / "fixture_mobilefacenet_128d.onnx")
    assert size == 112 and embedder.dim == 128
    assert embedder.preprocess.channels == "RGB" and embedder.preprocess.mean == (127.5, 127.5, 127.5)
    assert embedder.model_id.startswith("onnx-")
    chips = np.random.default_rng(0).integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    vectors = embedder(chips)  # the fixture's batch axis is fixed at 1: OrtModel runs it in chunks
    assert vectors.shape == (3, 128) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_wrong_formats_are_refused(tmp_path: Path, shared_models: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="not an SCRFD layout"):
        ScrfdDetector(shared_models / "fixture_mobilefacenet_128d.onnx")
    with pytest.raises(UnsupportedModelError, match="an embedder has one"):
        load_arcface_embedder(shared_models / "yunet_s_640_640.onnx")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_arcface_embedder(tmp_path / "absent.onnx")


def test_standard_pack_detector_with_a_user_embedder(shared_models: Path, faces_dir: Path) -> None:
    """YuNet (from the mirror) + an ArcFace-format file: the standard pack's path minus SFace."""
    from vision.faces.analyzer import build_analyzer
    from vision.faces.yunet import YunetDetector
    from vision.images import load_image

    analyzer = build_analyzer("standard", embedder_path=shared_models / "fixture_mobilefacenet_128d.onnx")
    assert isinstance(analyzer.detector, YunetDetector) and analyzer.aligner.size == 112
    photos = sorted((faces_dir / "barack_obama").glob("*.jpg"))[:2]
    a, b = (analyzer.analyze(load_image(p), max_faces=1) for p in photos)
    assert float(a.embeddings[0] @ b.embeddings[0]) > 0.43  # the fixture's threshold calibrated on faces/
