"""MiniFASNet liveness weights (Silent-Face-Anti-Spoofing, Apache-2.0) converted to ONNX without torch.

The official weights are PyTorch checkpoints in the legacy (pre-1.6) format. Importing torch at run
time would add a gigabyte to every gate, so this module reads the pickles itself and rebuilds the
network as an ONNX graph. A checkpoint is untrusted input: unpickling can run arbitrary code, so the
Unpickler resolves only the handful of globals a state dict needs and rejects everything else.

The file holds weights, not wiring; the topology (MiniFASNet's conv-bn-PReLU blocks, depthwise
bottlenecks with residuals, optional squeeze-excitation, a linear head) is derived here from the
state-dict names and shapes, with BatchNorm folded into the preceding convolution or linear layer.
"""

from __future__ import annotations

import io
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "MINIFASNET_INPUT_SIZE",
    "MINIFASNET_REAL_CLASS",
    "CheckpointFormatError",
    "build_minifasnet_onnx",
    "convert_minifasnet",
    "read_legacy_checkpoint",
]

MINIFASNET_INPUT_SIZE = 80
MINIFASNET_REAL_CLASS = 1

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_BN_EPS = 1e-5  # torch's BatchNorm default; the checkpoints do not store it
_OPSET = 17
_IR_VERSION = 8
_PREFIX = "module."  # the weights were saved from a DataParallel wrapper


class CheckpointFormatError(ValueError):
    """The file is not the legacy torch checkpoint layout this reader understands."""


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


_STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}


def _rebuild_tensor_v2(storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                       _requires_grad: bool, _hooks: object, *_: object) -> _TensorRef:
    """Stands in for torch's tensor factory: records where the data lives, to be read after the pickles."""
    if not isinstance(storage, _StorageRef):
        raise CheckpointFormatError(f"tensor built on {type(storage).__name__}, not a storage reference")
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _StorageType:
    """What ``torch.FloatStorage`` unpickles to: only its element type matters."""

    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


class _CheckpointUnpickler(pickle.Unpickler):
    """Resolves exactly the globals a legacy state dict uses; anything else is refused, never imported."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointFormatError(f"checkpoint refers to {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid: object) -> _StorageRef:
        # ("storage", type, key, location, element count, view metadata); views are never saved here.
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[5] is None):
            raise CheckpointFormatError(f"unexpected persistent id {pid!r}")
        return _StorageRef(str(pid[2]), pid[1].dtype, pid[4])


def _load(f: BinaryIO) -> object:
    return _CheckpointUnpickler(f).load()


def _read_storage(f: BinaryIO, ref: _StorageRef) -> np.ndarray:
    header = f.read(8)
    if len(header) != 8 or int.from_bytes(header, "little", signed=True) != ref.numel:
        raise CheckpointFormatError(f"storage {ref.key}: element count does not match its reference")
    nbytes = ref.numel * ref.dtype.itemsize
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise CheckpointFormatError(f"storage {ref.key} is truncated")
    return np.frombuffer(data, dtype=ref.dtype)


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    flat = storages[ref.storage.key]
    itemsize = flat.dtype.itemsize
    extent = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True)) + 1
    if ref.offset < 0 or (all(ref.shape) and extent > len(flat)):
        raise CheckpointFormatError(f"tensor reaches past the end of storage {ref.storage.key}")
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], ref.shape, [s * itemsize for s in ref.stride])
    return np.array(view, dtype=np.float32 if flat.dtype.kind == "f" else flat.dtype)


def read_legacy_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The state dict of a pre-1.6 ``torch.save`` file, keys without the DataParallel prefix.

    Every byte is accounted for: a checkpoint that does not end exactly after its last storage
    is rejected, since a mis-parse would otherwise still yield plausible-looking weights.
    """
    f = io.BytesIO(Path(path).read_bytes())
    try:
        if _load(f) != _MAGIC or _load(f) != _PROTOCOL:
            raise CheckpointFormatError(f"{path} is not a legacy torch checkpoint")
        info = _load(f)
        state = _load(f)
        keys = _load(f)
    except (pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from exc
    if not (isinstance(info, dict) and info.get("little_endian") and isinstance(state, OrderedDict)
            and isinstance(keys, list)):
        raise CheckpointFormatError(f"{path}: unexpected checkpoint header")
    refs = {r.storage.key: r.storage for r in state.values() if isinstance(r, _TensorRef)}
    if sorted(refs) != sorted(keys):
        raise CheckpointFormatError(f"{path}: storage list does not match the tensors")
    storages = {key: _read_storage(f, refs[key]) for key in keys}
    if f.read(1):
        raise CheckpointFormatError(f"{path}: trailing bytes after the last storage")
    return {name.removeprefix(_PREFIX): _materialise(ref, storages) for name, ref in state.items()}


class _GraphBuilder:
    """Accumulates ONNX nodes and folded initialisers while walking the state dict."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: set[str] = set()
        self.shapes: dict[str, int] = {"input": 3}  # channel count of each tensor, to derive conv groups

    def param(self, name: str) -> np.ndarray:
        if name not in self.w:
            raise CheckpointFormatError(f"missing weight {name}")
        self.used.add(name)
        return self.w[name]

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def bn_scale_shift(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """Inference BatchNorm as y = x*scale + shift, so it folds into the layer before it."""
        self.used.add(f"{prefix}.num_batches_tracked")
        scale = self.param(f"{prefix}.weight") / np.sqrt(self.param(f"{prefix}.running_var") + _BN_EPS)
        return scale, self.param(f"{prefix}.bias") - self.param(f"{prefix}.running_mean") * scale

    def conv_bn(self, x: str, conv: str, bn: str, stride: int, pad: int | None = None) -> str:
        weight = self.param(f"{conv}.weight")
        out_c, in_per_group, kh, kw = weight.shape
        groups = self.channels(x) // in_per_group
        scale, shift = self.bn_scale_shift(bn)
        pad = kh // 2 if pad is None else pad
        w = self.const(f"{conv}.w", weight * scale[:, None, None, None])
        b = self.const(f"{conv}.b", shift)
        out = self.node("Conv", [x, w, b], conv, kernel_shape=[kh, kw], strides=[stride, stride],
                        pads=[pad] * 4, group=groups)
        self.shapes[out] = out_c
        return out

    def channels(self, x: str) -> int:
        return self.shapes[x]

    def conv_block(self, x: str, prefix: str, stride: int = 1, prelu: bool = True, pad: int | None = None) -> str:
        """Conv_block (conv-bn-PReLU) or, without the PReLU, Linear_block.

        PReLU is written as (1 - a) * relu(x) + a * x, the same function (outputs within 1e-6):
        ONNX Runtime's PRelu kernel runs outside its blocked convolution layout and took half of
        the network's time (6.6 ms a face on one core); Relu, Mul and Add stay in that layout
        (2.6 ms). The pair runs on every frame of a track that names a resident."""
        out = self.conv_bn(x, f"{prefix}.conv", f"{prefix}.bn", stride, pad)
        if not prelu:
            return out
        slope = self.param(f"{prefix}.prelu.weight")[:, None, None]
        positive = self.node("Relu", [out], f"{prefix}.prelu.relu")
        kept = self.node("Mul", [positive, self.const(f"{prefix}.prelu.keep", 1 - slope)], f"{prefix}.prelu.kept")
        leaked = self.node("Mul", [out, self.const(f"{prefix}.prelu.slope", slope)], f"{prefix}.prelu.leaked")
        result = self.node("Add", [kept, leaked], f"{prefix}.prelu")
        self.shapes[result] = self.shapes[out]
        return result

    def squeeze_excite(self, x: str, prefix: str) -> str:
        pooled = self.node("GlobalAveragePool", [x], f"{prefix}.pool")
        self.shapes[pooled] = self.shapes[x]
        hidden = self.node("Relu", [self.conv_bn(pooled, f"{prefix}.fc1", f"{prefix}.bn1", 1, 0)], f"{prefix}.relu")
        self.shapes[hidden] = self.shapes[f"{prefix}.fc1"]
        gate = self.node("Sigmoid", [self.conv_bn(hidden, f"{prefix}.fc2", f"{prefix}.bn2", 1, 0)], f"{prefix}.gate")
        return self.node("Mul", [x, gate], f"{prefix}.scaled")

    def depth_wise(self, x: str, prefix: str, stride: int, residual: bool) -> str:
        """The bottleneck: 1x1 expand, depthwise 3x3, linear 1x1 project; SE before the skip if present."""
        out = self.conv_block(x, f"{prefix}.conv")
        out = self.conv_block(out, f"{prefix}.conv_dw", stride)
        out = self.conv_block(out, f"{prefix}.project", prelu=False)
        channels = self.shapes[out]
        if f"{prefix}.se_module.fc1.weight" in self.w:
            out = self.squeeze_excite(out, f"{prefix}.se_module")
        if residual:
            out = self.node("Add", [x, out], f"{prefix}.add")
        self.shapes[out] = channels
        return out

    def residual_stage(self, x: str, prefix: str) -> str:
        count = len({m.group(1) for k in self.w if (m := re.match(rf"{re.escape(prefix)}\.model\.(\d+)\.", k))})
        if count == 0:
            raise CheckpointFormatError(f"no blocks under {prefix}")
        for i in range(count):
            x = self.depth_wise(x, f"{prefix}.model.{i}", 1, residual=True)
        return x

    def head(self, x: str) -> str:
        """Flatten, linear+BatchNorm1d (folded), dropout (inert at inference), class logits."""
        flat = self.node("Flatten", [x], "flatten", axis=1)
        scale, shift = self.bn_scale_shift("bn")
        linear = self.param("linear.weight") * scale[:, None]
        embedding = self.node("Gemm", [flat, self.const("linear.w", linear), self.const("linear.b", shift)],
                              "embedding", transB=1)
        return self.node("Gemm", [embedding, self.const("prob.w", self.param("prob.weight"))], "logits", transB=1)

    def build(self) -> str:
        x = self.conv_block("input", "conv1", stride=2)
        x = self.conv_block(x, "conv2_dw")
        x = self.depth_wise(x, "conv_23", 2, residual=False)
        x = self.residual_stage(x, "conv_3")
        x = self.depth_wise(x, "conv_34", 2, residual=False)
        x = self.residual_stage(x, "conv_4")
        x = self.depth_wise(x, "conv_45", 2, residual=False)
        x = self.residual_stage(x, "conv_5")
        x = self.conv_block(x, "conv_6_sep")
        x = self.conv_block(x, "conv_6_dw", prelu=False, pad=0)
        return self.head(x)


def build_minifasnet_onnx(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The ONNX graph for a MiniFASNet state dict: input [N,3,80,80] BGR 0..255, output logits [N,classes]."""
    builder = _GraphBuilder(weights)
    logits = builder.build()
    unused = sorted(set(weights) - builder.used)
    if unused:
        raise CheckpointFormatError(f"weights not used by the derived architecture: {unused[:5]}")
    classes = weights["prob.weight"].shape[0]
    size = MINIFASNET_INPUT_SIZE
    graph = helper.make_graph(
        builder.nodes, "minifasnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
        builder.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="gatewatch.models.minifasnet")
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def convert_minifasnet(path: Path) -> bytes:
    """Registry converter: official .pth -> serialised ONNX model."""
    return build_minifasnet_onnx(read_legacy_checkpoint(path)).SerializeToString()
