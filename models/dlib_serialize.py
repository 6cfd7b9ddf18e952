"""Reader for dlib's binary serialization (dlib/serialize.h), enough for its CC0 face models.

dlib's face embedder is read by our own code and converted to ONNX, so that it runs batched on
ONNX Runtime rather than one face at a time in dlib.
"""

from __future__ import annotations

import numpy as np


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

