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
def liveness_pair(shared_models: Path):  # -> vision.faces.liveness.LivenessChecker (lazy: conftest stays light)
    """The MiniFASNet pair from the mirror, or a skip naming the missing weights."""
    from models.registry import ModelNotFoundError
    from vision.faces.liveness import LivenessChecker

    try:
        return LivenessChecker.from_registry(allow_download=False)
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def analyzer():  # -> vision.faces.FaceAnalyzer: the open pack, built once for every test that reads faces
    from vision.faces.analyzer import build_analyzer

    return build_analyzer("open")


ADMIN_KEY = "test-admin-key-0123456789"


def service_client(data_dir: Path, analyzer, **settings: object):  # -> fastapi.testclient.TestClient
    """The gate service in-process on a data dir, with ADMIN_KEY as its admin key and UTC windows.

    Liveness is off unless a test turns it on: the tests' faces are press photos, not gate
    captures, and the liveness pair passes only ~82 % of them (tests/test_liveness.py)."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    settings.setdefault("liveness", "off")
    settings.setdefault("timezone", "UTC")
    return TestClient(create_app(Settings(data_dir=data_dir, admin_key=ADMIN_KEY, **settings), analyzer=analyzer))
