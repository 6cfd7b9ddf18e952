"""Where the benchmarks find the real media and the mirrored models: `../shared` beside the
checkout, or the folder GATEWATCH_SHARED names (as in the tests)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("GATEWATCH_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def use_model_mirror() -> None:
    """Models that are not on PyPI (YuNet, the liveness pair) come from the shared mirror, unless
    GATEWATCH_MODEL_MIRROR already names another folder."""
    os.environ.setdefault("GATEWATCH_MODEL_MIRROR", str(SHARED / "models"))
