"""The one place that creates ONNX Runtime sessions.

Threads, providers, warm-up and batching are decided here so that every model in gatewatch runs
the same way: CPU here, CUDA or TensorRT where the installed onnxruntime offers them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

_PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    """Providers in order of preference among those this onnxruntime build offers.

    GATEWATCH_ORT_PROVIDERS (comma-separated) overrides the choice, e.g. to force CPU on a GPU box.
    """
    wanted = os.environ.get("GATEWATCH_ORT_PROVIDERS")
    available = ort.get_available_providers()
    if wanted:
        chosen = [p.strip() for p in wanted.split(",") if p.strip()]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise RuntimeError(f"ONNX Runtime providers {missing} are not available; "
                               f"this build has {available}")
        return chosen
    return [p for p in _PREFERRED_PROVIDERS if p in available]


def default_threads() -> int:
    value = os.environ.get("GATEWATCH_ORT_THREADS")
    return int(value) if value else (os.cpu_count() or 1)


class OrtModel:
    """An ONNX Runtime session with one image-like input, run on batches of any size.

    Models whose batch axis is fixed (some exports pin it to 1) are run in chunks of that size,
    so callers always hand over the whole batch.
    """

    def __init__(self, source: str | Path | bytes, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Busy-waiting workers burn the cores that the other sessions (MTCNN runs three) and
        # OpenCV need: measured 3.7x slower MTCNN on a loaded 2-core machine with spinning on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model = source if isinstance(source, bytes) else str(source)
        self.session = ort.InferenceSession(model, sess_options=options,
                                            providers=list(providers or default_providers()))
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = list(first.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        batch = self.input_shape[0]
        self.max_batch = batch if isinstance(batch, int) and batch > 0 else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Outputs for a whole batch, in the session's output order."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.max_batch is None or len(batch) <= self.max_batch:
            return self.session.run(self.output_names, {self.input_name: batch})
        parts = [self.session.run(self.output_names, {self.input_name: batch[i:i + self.max_batch]})
                 for i in range(0, len(batch), self.max_batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.output_names))]

    def warm_up(self, shape: Sequence[int]) -> None:
        """One throw-away run, so that the first real request does not pay for graph set-up."""
        self.run(np.zeros(shape, np.float32))
