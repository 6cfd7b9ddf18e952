"""Shared test fixtures: where the real media and models live, and skips when they are absent.

The media (../shared/data) and the model mirror (../shared/models) sit beside the checkout in CI
and on the developers' machines. A user's fresh clone has neither: tests that need them skip
with a reason that says so, instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GATEWATCH_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"


def pytest_configure(config: pytest.Config) -> None:
    """The model registry resolves mirror-only models (YuNet...) from shared/models; never downloads."""
    if SHARED_MODELS.is_dir():
        os.environ.setdefault("GATEWATCH_MODEL_MIRROR", str(SHARED_MODELS))
    os.environ["GATEWATCH_ALLOW_DOWNLOAD"] = "0"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set GATEWATCH_SHARED to the folder holding data/ and models/)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA, "the real test media (shared/data)")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    return _require(SHARED_MODELS, "the model mirror (shared/models)")


@pytest.fixture(scope="session")
def faces_dir(shared_data: Path) -> Path:
    return _require(shared_data / "faces", "faces/")


@pytest.fixture(scope="session")
def east_asian_dir(shared_data: Path) -> Path:
    return _require(shared_data / "faces_east_asian", "faces_east_asian/")


@pytest.fixture(scope="session")
def liveness_pair(shared_models: Path):  # -> vision.liveness.LivenessChecker (imported lazily: conftest stays light)
    """The MiniFASNet pair from the mirror, or a skip naming the missing weights."""
    from models.registry import ModelNotFoundError
    from vision.liveness import LivenessChecker

    try:
        return LivenessChecker.from_registry(allow_download=False)
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
