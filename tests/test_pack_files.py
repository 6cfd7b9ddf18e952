"""Model packs as YAML files in the data dir: a compound plugs in an ArcFace-format model, no code.

The model plugged in is the MobileFaceNet fixture of shared/models (128-d, ArcFace 112x112 input,
RGB (x-127.5)/127.5; licence unclear: a test fixture only). Its thresholds here were measured on
faces/ as these tests enrol (YuNet-s, flip-averaged, template = normalised mean of up to three
photos, the last photo held back): held-back genuine photos scored 0.548 (katy_perry, the lowest;
next 0.620 joe_biden) to 0.90; every photo against every other person's template at most 0.438
(leonardo_dicaprio vs matt_damon). accept_threshold 0.5 (margin 0.05) lies between the two.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import yaml

from gatewatch.cli import main
from models import registry
from models.pack_files import PackFileError, load_pack_dir

FIXTURE = "fixture_mobilefacenet_128d.onnx"
FIXTURE_SHA256 = "f055d9c9a4d826d198c42666590fdefa0fdc1374a75ccb6306c3d1b1bf8f74c5"
PACK = "compound_arcface"
ENROLLED = ("angelina_jolie", "barack_obama", "jack_dorsey", "katy_perry")
STRANGER = "elon_musk"


def embedder(**changes: object) -> dict:
    spec = {
        "id": "mobilefacenet_fixture",
        "licence": "unclear (test fixture only)",
        "file": {"name": FIXTURE, "sha256": FIXTURE_SHA256},
        "input_size": 112,
        "alignment": "arcface",
        "preprocess": {"channels": "RGB", "mean": [127.5] * 3, "std": [127.5] * 3},
        "dim": 128,
        "accept_threshold": 0.5,
        "margin": 0.05,
    }
    spec.update(changes)
    return spec


def write_pack(data_dir: Path, name: str = PACK, **changes: object) -> Path:
    pack = {"name": name, "description": "MobileFaceNet fixture behind YuNet-s", "detector": "yunet_s",
            "embedder": embedder()}
    pack.update(changes)
    path = data_dir / "packs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(pack, sort_keys=False), encoding="utf-8")
    return path


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def photos(faces_dir: Path, person: str) -> list[Path]:
    return sorted((faces_dir / person).glob("*.jpg"))


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, shared_models: Path, faces_dir: Path) -> Path:
    """A data dir whose pack file finds its model by `path:`, the licensed file copied beside the YAML;
    up to three photos per person enrolled, the last one held back."""
    if not (shared_models / FIXTURE).is_file():
        pytest.skip(f"{FIXTURE} not in {shared_models}")
    root = tmp_path_factory.mktemp("packs")
    data = root / "data"
    (data / "packs").mkdir(parents=True)
    shutil.copy(shared_models / FIXTURE, data / "packs" / "licensed.onnx")
    write_pack(data, embedder=embedder(file={"path": "licensed.onnx", "sha256": FIXTURE_SHA256}))
    residents = root / "residents"
    for person in ENROLLED:
        (residents / person).mkdir(parents=True)
        for photo in photos(faces_dir, person)[:-1][:3]:
            shutil.copy(photo, residents / person)
    code, out, err = run("enroll", str(residents), "--data-dir", str(data), "--pack", PACK, "--quiet")
    assert code == 0, err
    assert f"enrolled {len(ENROLLED)} people" in out and "of model mobilefacenet_fixture" in out
    return data


def identify(data: Path, images: list[Path], *extra: str) -> tuple[list[dict], str]:
    code, out, err = run("identify", *map(str, images), "--json", "--data-dir", str(data), "--pack", PACK, *extra)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()], err


def test_file_pack_identifies_residents_and_rejects_a_stranger(enrolled: Path, faces_dir: Path) -> None:
    probes = [photos(faces_dir, person)[-1] for person in ENROLLED]
    lines, _ = identify(enrolled, [*probes, photos(faces_dir, STRANGER)[0]])
    for person, line in zip(ENROLLED, lines, strict=False):
        match = line["faces"][0]["match"]
        assert match is not None and match["name"] == person, line
    assert lines[-1]["faces"] and all(face["match"] is None for face in lines[-1]["faces"])


def test_settings_file_thresholds_sit_between_the_options_and_the_pack(enrolled: Path, faces_dir: Path,
                                                                       tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(enrolled, data)
    probe = [photos(faces_dir, "barack_obama")[-1]]
    (data / "gatewatch.yaml").write_text(f"pack: {PACK}\naccept_threshold: 0.99\n", encoding="utf-8")
    lines, _ = identify(data, probe)
    assert lines[0]["faces"][0]["match"] is None  # 0.99 from the settings file, over the pack's 0.5
    lines, _ = identify(data, probe, "--threshold", "0.5")
    assert lines[0]["faces"][0]["match"]["name"] == "barack_obama"  # the option over the settings file
    # Thresholds calibrated for another pack are not applied to this one, and the CLI says so.
    (data / "gatewatch.yaml").write_text("pack: open\naccept_threshold: 0.99\n", encoding="utf-8")
    lines, err = identify(data, probe)
    assert lines[0]["faces"][0]["match"]["name"] == "barack_obama"
    assert "are for pack 'open'" in err


def test_service_runs_the_file_pack_of_its_data_dir(enrolled: Path, faces_dir: Path, tmp_path: Path) -> None:
    from conftest import ADMIN_KEY, service_client
    from pydantic import ValidationError

    from api.settings import Settings, SettingsError, load_settings

    data = tmp_path / "data"
    shutil.copytree(enrolled, data)
    assert Settings(data_dir=data, pack=PACK).pack == PACK
    (data / "gatewatch.yaml").write_text(f"pack: {PACK}\n", encoding="utf-8")
    assert load_settings(data_dir=data).pack == PACK
    with pytest.raises(SettingsError, match=rf"unknown model pack 'nope'; known: {PACK}, open, standard"):
        load_settings(data_dir=data, pack="nope")
    with pytest.raises(ValidationError, match=f"unknown model pack '{PACK}'"):  # not a pack of that data dir
        Settings(data_dir=tmp_path / "elsewhere", pack=PACK)
    with service_client(data, None, pack=PACK) as client:
        photo = photos(faces_dir, "katy_perry")[-1].read_bytes()
        r = client.post("/api/v1/identify", files={"file": ("p.jpg", photo, "image/jpeg")},
                        headers={"X-API-Key": ADMIN_KEY})
        assert r.status_code == 200, r.text
        assert r.json()["faces"][0]["match"]["name"] == "katy_perry"


def test_mirror_resolution_and_models_list(tmp_path: Path, shared_models: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWATCH_MODEL_MIRROR", str(shared_models))
    monkeypatch.setenv("GATEWATCH_MODEL_CACHE", str(tmp_path / "cache"))
    source = write_pack(tmp_path)  # no path: found by name in the mirror folder, checked by sha256
    code, out, err = run("models", "list", "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"pack {PACK} (file {source}): MobileFaceNet fixture behind YuNet-s" in out
    assert f"mobilefacenet_fixture    embedder         unclear (test fixture only) {FIXTURE}: " \
           f"{shared_models / FIXTURE}" in out
    code, out, err = run("models", "verify", "--pack", PACK, "--data-dir", str(tmp_path))
    assert code == 0, err
    assert f"mobilefacenet_fixture: {FIXTURE} ok ({shared_models / FIXTURE})" in out


def test_wrong_checksum_stops_the_cli_naming_the_pack_file(tmp_path: Path, shared_models: Path) -> None:
    source = write_pack(tmp_path, embedder=embedder(file={"name": FIXTURE, "sha256": "ab" * 32}))
    code, _, err = run("identify", str(tmp_path / "x.jpg"), "--data-dir", str(tmp_path), "--pack", PACK)
    assert code == 2
    assert f"expected {'ab' * 32} (declared in {source}: embedder.file)" in err


def test_unknown_pack_names_the_known_ones(tmp_path: Path) -> None:
    write_pack(tmp_path)
    code, _, err = run("identify", str(tmp_path / "x.jpg"), "--data-dir", str(tmp_path), "--pack", "nope")
    assert code == 2
    assert f"unknown model pack 'nope'; known: {PACK}, open, standard" in err


@pytest.mark.parametrize(("changes", "message"), [
    ({"embedder": embedder(thresold=0.4)}, "embedder.thresold: Extra inputs are not permitted"),
    ({"embedder": {k: v for k, v in embedder().items() if k != "dim"}}, "embedder.dim: Field required"),
    ({"embedder": {k: v for k, v in embedder().items() if k != "margin"}}, "embedder.margin: Field required"),
    ({"embedder": embedder(file={"name": FIXTURE, "sha256": "f055d9c9"})}, "embedder.file.sha256: String should"),
    ({"detector": "yunet_x"}, "detector: unknown built-in model 'yunet_x'; known: mtcnn, yunet_n, yunet_s"),
    ({"detector": "sface_2021dec"}, "detector: 'sface_2021dec' is of kind embedder, not detector"),
    ({"embedder": embedder(id="sface_2021dec")}, "embedder.id: 'sface_2021dec' clashes with a built-in"),
    ({"extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_bad_pack_files_are_clear_errors(tmp_path: Path, changes: dict, message: str) -> None:
    source = write_pack(tmp_path, **changes)
    with pytest.raises(PackFileError) as info:
        load_pack_dir(tmp_path)
    assert str(info.value).startswith(f"{source}: ") and message in str(info.value)


def test_a_built_in_name_cannot_be_taken(tmp_path: Path) -> None:
    for name, what in [("standard", "pack"), ("yunet_s", "model id")]:
        (tmp_path / "packs").mkdir(exist_ok=True)
        for old in (tmp_path / "packs").iterdir():
            old.unlink()
        source = write_pack(tmp_path, name=name)
        with pytest.raises(PackFileError, match=f"clashes with the built-in {what} '{name}'") as info:
            load_pack_dir(tmp_path)
        assert str(info.value).startswith(str(source))
    assert registry.PACKS["standard"].embedder == "sface_2021dec"


def test_bad_pack_file_stops_the_service_settings(tmp_path: Path) -> None:
    from api.settings import SettingsError, load_settings

    source = write_pack(tmp_path, embedder=embedder(dim="big"))
    with pytest.raises(SettingsError, match="bad model pack file") as info:
        load_settings(data_dir=tmp_path)  # even with the built-in pack: the file is broken
    assert str(source) in str(info.value) and "embedder.dim" in str(info.value)


def test_wrong_dim_is_found_when_the_model_is_loaded(tmp_path: Path, shared_models: Path) -> None:
    from vision.faces.analyzer import build_analyzer

    source = write_pack(tmp_path, embedder=embedder(id="mobilefacenet_512", dim=512))
    load_pack_dir(tmp_path)
    with pytest.raises(PackFileError, match=r"output shape \[1, 128\] does not end in dim 512") as info:
        build_analyzer(PACK)
    assert str(info.value).startswith(f"{source}: embedder 'mobilefacenet_512'")
