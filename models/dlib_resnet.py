"""dlib's ResNet face embedder (dlib_face_recognition_resnet_model_v1.dat) converted to ONNX.

The CC0 dlib weights give good 128-d embeddings, but running them through dlib costs ~70 ms a face
on a small CPU and ties the gate to a C++ build. Our own reader turns the .dat into an ONNX graph
that ONNX Runtime runs an order of magnitude faster, with dlib only needed by the tests that check
the two agree.

The .dat holds weights, not the wiring: tag/skip indices and the block structure live in dlib's C++
template (``anet_type`` in examples/dnn_face_recognition_ex.cpp), so the topology is written out
here and the file is parsed against it. Any mismatch, and any byte left over or missing, is a
:class:`DlibFormatError`: a silently mis-parsed embedder would still output 128 numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.dlib_serialize import DlibFormatError, DlibReader
from models.preprocess import Preprocess

__all__ = [
    "DLIB_RESNET_EMBEDDING_SIZE",
    "DLIB_RESNET_INPUT_SIZE",
    "DLIB_RESNET_PREPROCESS",
    "DLIB_RESNET_SHA256",
    "DlibFormatError",
    "convert_dlib_resnet",
]

DLIB_RESNET_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
DLIB_RESNET_FILE_SIZE = 22_466_066
DLIB_RESNET_INPUT_SIZE = 150
DLIB_RESNET_EMBEDDING_SIZE = 128
# dlib's input_rgb_image_sized subtracts these means and divides by 256 (not by a std); the
# normalisation stays out of the graph so that all embedders share one Preprocess code path.
DLIB_RESNET_PREPROCESS = Preprocess(channels="RGB", mean=(122.782, 117.001, 104.298),
                                    std=(256.0, 256.0, 256.0), layout="NCHW")

_OPSET = 17
_IR_VERSION = 8  # the IR that opset 17 shipped with, so older ONNX Runtime builds load the model
_CONV_MODE = 0   # dlib::layer_mode::CONV_MODE: one affine gamma/beta per channel

_Kind = Literal["con", "affine", "relu", "max_pool", "avg_pool", "tag", "skip", "add_prev", "fc"]


@dataclass(frozen=True)
class _Node:
    """One dlib layer wrapper, in forward order. Tags and skips carry no data in the file."""

    kind: _Kind
    num: int = 0      # con filters / fc outputs
    size: int = 0     # con or pool window; 0 for a pool means "the whole input" (avg_pool_everything)
    stride: int = 1
    tag: int = 0      # tag id for tag / skip / add_prev


def _block(filters: int, stride: int) -> list[_Node]:
    return [_Node("con", filters, 3, stride), _Node("affine"), _Node("relu"),
            _Node("con", filters, 3, 1), _Node("affine")]


def _ares(filters: int) -> list[_Node]:
    return [_Node("tag", tag=1), *_block(filters, 1), _Node("add_prev", tag=1), _Node("relu")]


def _ares_down(filters: int) -> list[_Node]:
    return [_Node("tag", tag=1), *_block(filters, 2), _Node("tag", tag=2), _Node("skip", tag=1),
            _Node("avg_pool", size=2, stride=2), _Node("add_prev", tag=2), _Node("relu")]


def _anet_type() -> list[_Node]:
    """dlib's ``anet_type`` unrolled, input side first (the loss layer is handled apart)."""
    nodes = [_Node("con", 32, 7, 2), _Node("affine"), _Node("relu"), _Node("max_pool", size=3, stride=2)]
    nodes += _ares(32) * 3                                   # alevel4
    nodes += _ares_down(64) + _ares(64) * 3                  # alevel3
    nodes += _ares_down(128) + _ares(128) * 2                # alevel2
    nodes += _ares_down(256) + _ares(256) * 2                # alevel1
    nodes += _ares_down(256)                                 # alevel0
    nodes += [_Node("avg_pool", size=0, stride=1), _Node("fc", DLIB_RESNET_EMBEDDING_SIZE)]
    return nodes


@dataclass
class _Params:
    """Weights read for one node; ``weight`` is OIHW for con and (inputs, outputs) for fc."""

    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Parsing


def _expect_name(r: DlibReader, expected: str) -> None:
    """A layer's version string; a wrong file can hold any length here, so only a preview is shown."""
    start = r.pos
    length = r.int()
    if length != len(expected):
        preview = r.data[r.pos:r.pos + min(max(length, 0), 24)]
        raise DlibFormatError(f"expected {expected!r} at byte {start}, found a {length}-byte string "
                              f"starting {preview!r}")
    r.pos = start
    r.expect_string(expected)


def _tensor(r: DlibReader, what: str) -> np.ndarray:
    start = r.pos
    r.expect_int(2, f"{what}: tensor version")
    dims = [r.int() for _ in range(4)]
    if min(dims) < 0 or int(np.prod(dims, dtype=np.int64)) * 4 > len(r.data) - r.pos:
        raise DlibFormatError(f"{what}: tensor at byte {start} has impossible dims {dims}")
    r.pos = start
    values = r.tensor()
    if not np.isfinite(values).all():
        raise DlibFormatError(f"{what}: tensor at byte {start} holds NaN or infinite values")
    return values


def _alias_shape(r: DlibReader, what: str) -> tuple[int, ...]:
    """An alias_tensor: version 1 then its four dims; it only says how params are sliced."""
    r.expect_int(1, f"{what}: alias_tensor version")
    return tuple(r.int() for _ in range(4))


def _expect_shape(found: tuple[int, ...], expected: tuple[int, ...], what: str, at: int) -> None:
    if found != expected:
        raise DlibFormatError(f"{what}: expected shape {expected} near byte {at}, found {found}")


def _skip_multipliers(r: DlibReader) -> None:
    """Learning-rate and weight-decay multipliers: training-only, read to stay in step."""
    for _ in range(4):
        r.float()


def _read_con(r: DlibReader, node: _Node, in_channels: int, at: str) -> _Params:
    _expect_name(r, "con_4")
    start = r.pos
    params = _tensor(r, at).ravel()
    pad = node.size // 2 if node.stride == 1 else 0
    for value, name in [(node.num, "num_filters"), (node.size, "nr"), (node.size, "nc"),
                        (node.stride, "stride_y"), (node.stride, "stride_x"), (pad, "padding_y"),
                        (pad, "padding_x")]:
        r.expect_int(value, f"{at} {name}")
    w_shape = (node.num, in_channels, node.size, node.size)
    _expect_shape(_alias_shape(r, at), w_shape, f"{at} filters", start)
    _expect_shape(_alias_shape(r, at), (1, node.num, 1, 1), f"{at} biases", start)
    _skip_multipliers(r)
    n_weights = int(np.prod(w_shape))
    if params.size != n_weights + node.num:
        raise DlibFormatError(f"{at}: {params.size} params at byte {start}, expected {n_weights + node.num}")
    return _Params(params[:n_weights].reshape(w_shape), params[n_weights:])


def _read_affine(r: DlibReader, channels: int, at: str) -> _Params:
    _expect_name(r, "affine_")
    start = r.pos
    params = _tensor(r, at).ravel()
    _expect_shape(_alias_shape(r, at), (1, channels, 1, 1), f"{at} gamma", start)
    _expect_shape(_alias_shape(r, at), (1, channels, 1, 1), f"{at} beta", start)
    r.expect_int(_CONV_MODE, f"{at} mode (CONV_MODE)")
    if params.size != 2 * channels:
        raise DlibFormatError(f"{at}: {params.size} params at byte {start}, expected {2 * channels}")
    return _Params(params[:channels], params[channels:])


def _read_pool(r: DlibReader, node: _Node, name: str, at: str) -> None:
    _expect_name(r, name)
    for value, field in [(node.size, "nr"), (node.size, "nc"), (node.stride, "stride_y"),
                         (node.stride, "stride_x"), (0, "padding_y"), (0, "padding_x")]:
        r.expect_int(value, f"{at} {field}")


def _read_fc(r: DlibReader, node: _Node, inputs: int, at: str) -> _Params:
    _expect_name(r, "fc_2")
    r.expect_int(node.num, f"{at} num_outputs")
    r.expect_int(inputs, f"{at} num_inputs")
    start = r.pos
    params = _tensor(r, at).ravel()
    _expect_shape(_alias_shape(r, at), (inputs, node.num, 1, 1), f"{at} weights", start)
    _expect_shape(_alias_shape(r, at), (0, 0, 0, 0), f"{at} biases", start)
    r.expect_int(1, f"{at} bias mode (FC_NO_BIAS)")
    _skip_multipliers(r)
    if params.size != inputs * node.num:
        raise DlibFormatError(f"{at}: {params.size} params at byte {start}, expected {inputs * node.num}")
    return _Params(params.reshape(inputs, node.num))


def _channels_after(nodes: list[_Node]) -> list[int]:
    """Channels each node outputs, so the parser can check every weight shape it reads."""
    out: list[int] = []
    channels, tagged = 3, {}
    for node in nodes:
        if node.kind in ("con", "fc"):
            channels = node.num
        elif node.kind == "tag":
            tagged[node.tag] = channels
        elif node.kind == "skip":
            channels = tagged[node.tag]
        elif node.kind == "add_prev":
            channels = max(channels, tagged[node.tag])
        out.append(channels)
    return out


def _parse(data: bytes, nodes: list[_Node]) -> list[_Params | None]:
    r = DlibReader(data)
    r.expect_int(1, "add_loss_layer version")
    _expect_name(r, "loss_metric_2")
    r.float()  # margin and distance threshold: training-only
    r.float()

    # Wrapper versions, output side first: 2 for add_layer, 1 for tag/skip; the bottom add_layer
    # (the one holding the input layer) is 2, or 3 when it also stores a sample_expansion_factor.
    bottom_version = 0
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        at = f"layer {index} ({node.kind}) wrapper version"
        if node.kind in ("tag", "skip"):
            r.expect_int(1, at)
        elif index == 0:
            start = r.pos
            bottom_version = r.int()
            if bottom_version not in (2, 3):
                raise DlibFormatError(f"{at}: expected 2 or 3 at byte {start}, found {bottom_version}")
        else:
            r.expect_int(2, at)

    _expect_name(r, "input_rgb_image_sized")
    start = r.pos
    means = tuple(r.float() for _ in range(3))
    if not np.allclose(means, DLIB_RESNET_PREPROCESS.mean, atol=1e-3):
        raise DlibFormatError(f"input means {means} at byte {start} differ from "
                              f"DLIB_RESNET_PREPROCESS.mean {DLIB_RESNET_PREPROCESS.mean}")
    r.expect_int(DLIB_RESNET_INPUT_SIZE, "input rows")
    r.expect_int(DLIB_RESNET_INPUT_SIZE, "input columns")

    channels = _channels_after(nodes)
    params: list[_Params | None] = []
    for index, node in enumerate(nodes):
        at = f"layer {index} ({node.kind})"
        in_channels = channels[index - 1] if index else 3
        found: _Params | None = None
        if node.kind in ("tag", "skip"):
            params.append(None)
            continue
        if node.kind == "con":
            found = _read_con(r, node, in_channels, at)
        elif node.kind == "affine":
            found = _read_affine(r, in_channels, at)
        elif node.kind == "relu":
            _expect_name(r, "relu_")
        elif node.kind == "add_prev":
            _expect_name(r, "add_prev_")
        elif node.kind == "max_pool":
            _read_pool(r, node, "max_pool_2", at)
        elif node.kind == "avg_pool":
            _read_pool(r, node, "avg_pool_2", at)
        elif node.kind == "fc":
            found = _read_fc(r, node, in_channels, at)
        params.append(found)
        # add_layer state: three bools, then x_grad, cached_output and a gradient buffer (empty
        # in a cleaned net, but read as tensors so a net saved mid-training still parses).
        for _ in range(3):
            r.bool()
        for name in ("x_grad", "cached_output", "gradient"):
            _tensor(r, f"{at} {name}")
        if index == 0 and bottom_version == 3:
            r.expect_int(1, f"{at} sample_expansion_factor")

    if not r.at_end:
        raise DlibFormatError(f"parse ended at byte {r.pos} of {len(data)}: not dlib's ResNet embedder "
                              "(dlib_face_recognition_resnet_model_v1.dat), or a different topology")
    return params


# ---------------------------------------------------------------------------------------------
# Graph building


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: object) -> str:
        output = output or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output


def _pad_to(g: _Graph, x: str, shape: tuple[int, int, int], target: tuple[int, int, int]) -> str:
    """dlib's add_prev adds tensors of different sizes by zero-filling the smaller one at the end
    of each axis (extra channels, bottom rows, right columns), never centred."""
    extra = [t - s for s, t in zip(shape, target, strict=True)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], np.int64)
    return g.op("Pad", [x, g.const("pads", pads)], mode="constant")


def _build(nodes: list[_Node], params: list[_Params | None], *, fold_affine: bool,
           source_sha256: str) -> onnx.ModelProto:
    g = _Graph()
    x, shape = "input", (3, DLIB_RESNET_INPUT_SIZE, DLIB_RESNET_INPUT_SIZE)
    tagged: dict[int, tuple[str, tuple[int, int, int]]] = {}
    last = len(nodes) - 1
    index = 0
    while index <= last:
        node, p = nodes[index], params[index]
        c, h, w = shape
        if node.kind == "con":
            assert p is not None and p.weight is not None and p.bias is not None
            weight, bias = p.weight.astype(np.float64), p.bias.astype(np.float64)
            after = params[index + 1] if index < last and nodes[index + 1].kind == "affine" else None
            if fold_affine and after is not None and after.weight is not None and after.bias is not None:
                # affine(conv(x)) = conv with W*gamma and b*gamma + beta: one op fewer per block.
                gamma, beta = after.weight.astype(np.float64), after.bias.astype(np.float64)
                weight, bias = weight * gamma[:, None, None, None], bias * gamma + beta
                index += 1
            pad = node.size // 2 if node.stride == 1 else 0
            inputs = [x, g.const("W", weight.astype(np.float32)), g.const("B", bias.astype(np.float32))]
            x = g.op("Conv", inputs, kernel_shape=[node.size] * 2, strides=[node.stride] * 2, pads=[pad] * 4)
            out = (h + 2 * pad - node.size) // node.stride + 1, (w + 2 * pad - node.size) // node.stride + 1
            shape = (node.num, *out)
        elif node.kind == "affine":
            assert p is not None and p.weight is not None and p.bias is not None
            x = g.op("Mul", [x, g.const("gamma", p.weight.reshape(1, c, 1, 1))])
            x = g.op("Add", [x, g.const("beta", p.bias.reshape(1, c, 1, 1))])
        elif node.kind == "relu":
            x = g.op("Relu", [x])
        elif node.kind == "avg_pool" and node.size == 0:
            x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
            shape = (c, 1, 1)
        elif node.kind in ("max_pool", "avg_pool"):
            op_type = "MaxPool" if node.kind == "max_pool" else "AveragePool"
            x = g.op(op_type, [x], kernel_shape=[node.size] * 2, strides=[node.stride] * 2)
            shape = (c, (h - node.size) // node.stride + 1, (w - node.size) // node.stride + 1)
        elif node.kind == "tag":
            tagged[node.tag] = (x, shape)
        elif node.kind == "skip":
            x, shape = tagged[node.tag]
        elif node.kind == "add_prev":
            other, other_shape = tagged[node.tag]
            target = tuple(max(a, b) for a, b in zip(shape, other_shape, strict=True))
            x = g.op("Add", [_pad_to(g, x, shape, target), _pad_to(g, other, other_shape, target)])
            shape = target
        elif node.kind == "fc":
            assert p is not None and p.weight is not None
            x = g.op("MatMul", [x, g.const("fc", p.weight)], output="embedding")
            shape = (node.num, 1, 1)
        index += 1

    if x != "embedding":
        raise AssertionError("the topology must end in the fc layer")
    graph = helper.make_graph(
        g.nodes, "dlib_resnet_v1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["N", 3, DLIB_RESNET_INPUT_SIZE, DLIB_RESNET_INPUT_SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", DLIB_RESNET_EMBEDDING_SIZE])],
        initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="gatewatch.models.dlib_resnet", ir_version=_IR_VERSION)
    model.doc_string = ("dlib_face_recognition_resnet_model_v1 (CC0, Davis King) converted by gatewatch. "
                        "Input: RGB 150x150 chip aligned like dlib.get_face_chip(size=150, padding=0.25), "
                        "(pixel - mean) / 256. Output: raw 128-d embedding, not L2-normalised.")
    helper.set_model_props(model, {"source_sha256": source_sha256,
                                   "preprocess_mean_rgb": ",".join(map(str, DLIB_RESNET_PREPROCESS.mean)),
                                   "preprocess_std": "256"})
    onnx.checker.check_model(model)
    return model


def convert_dlib_resnet(dat_path: str | Path, *, fold_affine: bool = True) -> bytes:
    """Serialized ONNX model of dlib's face embedder, read from its .dat without dlib.

    ``fold_affine=False`` keeps dlib's affine layers as separate Mul/Add ops; it exists so that the
    folded graph can be checked against a literal one, not for use.
    """
    path = Path(dat_path)
    data = path.read_bytes()
    nodes = _anet_type()
    try:
        params = _parse(data, nodes)
    except DlibFormatError as error:
        hint = ""
        if len(data) != DLIB_RESNET_FILE_SIZE:
            hint = (f" (file is {len(data)} bytes; dlib_face_recognition_resnet_model_v1.dat"
                    f" is {DLIB_RESNET_FILE_SIZE})")
        raise DlibFormatError(f"{path}: not a readable dlib ResNet face embedder: {error}{hint}") from error
    except (ValueError, UnicodeDecodeError, OverflowError) as error:
        raise DlibFormatError(f"{path}: corrupt dlib ResNet face embedder: {error}") from error
    sha256 = hashlib.sha256(data).hexdigest()
    model = _build(nodes, params, fold_affine=fold_affine, source_sha256=sha256)
    return model.SerializeToString()
