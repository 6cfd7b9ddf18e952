"""Reader for dlib's binary serialization (dlib/serialize.h), enough for its CC0 face models.

dlib's face embedder is read by our own code and converted to ONNX, so that it runs batched on
ONNX Runtime rather than one face at a time in dlib.
"""

from __future__ import annotations

import struct
from functools import cached_property

import numpy as np

# Byte count of a dlib int (its control byte plus payload), indexed by the control byte.
_INT_STEP = bytes(1 + (b & 0x0F) for b in range(256))


class DlibFormatError(ValueError):
    """The bytes are not what a dlib model of the expected kind stores."""


class DlibReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def at_end(self) -> bool:
        return self.pos == len(self.data)

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """A control byte (low 4 bits: byte count, bit 7: sign) then |value| little-endian."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"integer of {size} bytes at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def float(self) -> float:
        """Mantissa (int64) then exponent (int16), both dlib ints: value = m * 2**e."""
        mantissa = self.int()
        exponent = self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        value = self._take(1)
        if value not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {value!r} at byte {self.pos - 1}")
        return value == b"1"

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def expect_string(self, expected: str) -> None:
        start = self.pos
        found = self.string()
        if found != expected:
            raise DlibFormatError(f"expected {expected!r} at byte {start}, found {found!r}")

    def expect_int(self, expected: int, what: str) -> None:
        start = self.pos
        found = self.int()
        if found != expected:
            raise DlibFormatError(f"{what}: expected {expected} at byte {start}, found {found}")

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: version 2, dims (num_samples, k, nr, nc), raw float32 LE."""
        self.expect_int(2, "tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).copy()

    def float_matrix(self) -> np.ndarray:
        """A dlib::matrix<float>: -nr, -nc (negated by dlib), then each element as a dlib float."""
        rows, cols = -self.int(), -self.int()
        if rows < 0 or cols < 0:
            raise DlibFormatError(f"bad matrix size {rows}x{cols} at byte {self.pos}")
        return np.array([self.float() for _ in range(rows * cols)], np.float32).reshape(rows, cols)

    @cached_property
    def _steps(self) -> bytes:
        return self.data.translate(_INT_STEP)

    def ints(self, count: int) -> np.ndarray:
        """`count` dlib ints in a row as int64, decoded in bulk.

        Model weights are millions of ints; int() one at a time takes seconds. Only finding where
        each int starts is sequential (a tight loop); the values are then decoded with numpy.
        """
        if count < 0 or count > len(self.data) - self.pos:
            raise DlibFormatError(f"{count} ints cannot fit in the {len(self.data) - self.pos} bytes left")
        steps, pos, starts = self._steps, self.pos, [0] * count
        try:
            for k in range(count):
                starts[k] = pos
                pos += steps[pos]
        except IndexError:
            raise DlibFormatError(f"unexpected end of data while reading {count} ints") from None
        if pos > len(self.data):
            raise DlibFormatError(f"unexpected end of data while reading {count} ints")
        self.pos = pos
        return _decode_ints(np.frombuffer(self.data, np.uint8), np.array(starts, np.int64))

    def floats(self, count: int) -> np.ndarray:
        """`count` dlib floats in a row (mantissa, exponent pairs) as float64."""
        pairs = self.ints(2 * count).reshape(count, 2)
        return np.ldexp(pairs[:, 0].astype(np.float64), pairs[:, 1])

    def raw_float32(self) -> float:
        return struct.unpack("<f", self._take(4))[0]


def _decode_ints(buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    control = buf[starts]
    size = (control & 0x0F).astype(np.int64)
    if np.any(size > 8):
        bad = int(starts[np.argmax(size > 8)])
        raise DlibFormatError(f"integer of {int(buf[bad]) & 0x0F} bytes at byte {bad}")
    magnitude = np.zeros(len(starts), np.uint64)
    for j in range(int(size.max(initial=0))):
        byte = buf[np.minimum(starts + 1 + j, len(buf) - 1)].astype(np.uint64)
        magnitude |= np.where(j < size, byte, 0).astype(np.uint64) << np.uint64(8 * j)
    if np.any(magnitude >= np.uint64(1 << 63)):
        raise DlibFormatError("integer too large for int64")
    value = magnitude.astype(np.int64)
    return np.where(control & 0x80, -value, value)
