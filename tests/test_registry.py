"""The model registry resolves offline, verifies checksums, and says exactly what is missing."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from models import registry


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GATEWATCH_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GATEWATCH_MODEL_MIRROR", raising=False)
    monkeypatch.setenv("GATEWATCH_ALLOW_DOWNLOAD", "0")
    return tmp_path


def test_open_pack_resolves_from_installed_packages_only(isolated: Path) -> None:
    pack = registry.get_pack("open")
    for model_id in pack.model_ids:
        for st in registry.status(model_id):
            assert st.problem is None, st.problem
            assert "site-packages" in str(st.path)


def test_missing_model_names_file_checksum_and_where_to_put_it(isolated: Path) -> None:
    entry = registry.get_entry("sface_2021dec")
    with pytest.raises(registry.ModelNotFoundError) as info:
        registry.resolve_file(entry.files[0])
    message = str(info.value)
    assert "face_recognition_sface_2021dec.onnx" in message
    assert entry.files[0].sha256 in message
    assert "GATEWATCH_MODEL_MIRROR" in message and "gatewatch models fetch" in message


def test_mirror_resolution_and_checksum(isolated: Path, monkeypatch: pytest.MonkeyPatch,
                                        shared_models: Path) -> None:
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(shared_models))
    path = registry.resolve_file(registry.get_entry("yunet_s").files[0])
    assert path == shared_models / "yunet_s_640_640.onnx"
    bad = isolated / "mirror"
    bad.mkdir()
    (bad / "yunet_s_640_640.onnx").write_bytes(b"not the model")
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(bad))
    with pytest.raises(registry.ModelChecksumError, match="expected 8f2383e4"):
        registry.resolve_file(registry.get_entry("yunet_s").files[0])


def test_download_verifies_sha256_and_leaves_nothing_on_mismatch(isolated: Path) -> None:
    source = isolated / "served.onnx"
    source.write_bytes(b"weights" * 1000)
    good = registry.ModelFile("m.onnx", hashlib.sha256(source.read_bytes()).hexdigest(), url=source.as_uri())
    assert registry.resolve_file(good, allow_download=True).read_bytes() == source.read_bytes()
    bad = dataclasses.replace(good, name="n.onnx", sha256="0" * 64)
    with pytest.raises(registry.ModelChecksumError):
        registry.resolve_file(bad, allow_download=True)
    assert sorted(p.name for p in (isolated / "cache").iterdir()) == ["m.onnx"]


def test_no_download_unless_allowed(isolated: Path) -> None:
    source = isolated / "served.onnx"
    source.write_bytes(b"x")
    spec = registry.ModelFile("m.onnx", hashlib.sha256(b"x").hexdigest(), url=source.as_uri())
    with pytest.raises(registry.ModelNotFoundError):
        registry.resolve_file(spec)


def test_unknown_names_are_clear() -> None:
    with pytest.raises(KeyError, match="unknown model pack 'nope'"):
        registry.get_pack("nope")
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        registry.get_entry("nope")


def test_open_pack_runs_with_the_network_cut_off(monkeypatch: pytest.MonkeyPatch, faces_dir: Path) -> None:
    """The default pack builds and analyses a photo with every socket connection refused."""
    import socket

    from vision.faces.analyzer import build_analyzer
    from vision.images import load_image

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("GATEWATCH_MODEL_MIRROR", raising=False)
    analyzer = build_analyzer("open")
    faces = analyzer.analyze(load_image(sorted((faces_dir / "joe_biden").glob("*.jpg"))[0]))
    assert len(faces) == 1 and faces.embeddings.shape == (1, 128)
