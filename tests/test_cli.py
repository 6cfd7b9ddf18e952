"""The `gatewatch` command as a user runs it: a real process, real photos, a real data dir."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gates.gallery import DB_NAME

PEOPLE = ("barack_obama", "katy_perry", "matt_damon")  # enrolled from their photos but the second
WEAK = "rob_lowe"  # one photo: enrolled, and named as weak


def gatewatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gatewatch.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(Path.cwd())})


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, shared_data: Path) -> dict:
    root = tmp_path_factory.mktemp("cli")
    residents = root / "residents"
    for person in PEOPLE:
        (residents / person).mkdir(parents=True)
        photos = sorted((faces_dir / person).glob("*.jpg"))
        for photo in photos[:1] + photos[2:4]:
            shutil.copy(photo, residents / person)
    (residents / WEAK).mkdir()
    shutil.copy(sorted((faces_dir / WEAK).glob("*.jpg"))[0], residents / WEAK)
    # A folder whose photos are all unusable: nothing may be stored for that person.
    bad = residents / "nobody_usable"
    bad.mkdir()
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (bad / "empty.png").write_bytes(b"")
    cv2.imwrite(str(bad / "blank.png"), np.full((480, 640, 3), 127, np.uint8))
    shutil.copy(shared_data / "groups" / "facerec_obama_and_biden.jpg", bad / "group.jpg")
    result = gatewatch("enroll", str(residents), "--data-dir", str(root / "data"), "--quiet", cwd=root)
    return {"root": root, "data": root / "data", "result": result}


def test_enroll_reports_each_bad_photo_and_stores_only_good_people(enrolled: dict) -> None:
    result = enrolled["result"]
    assert result.returncode == 0, result.stderr
    assert "enrolled 4 people (1 without a usable photo)" in result.stdout
    assert f"weak templates, likely to be turned away at the gate: 1\n  {WEAK} (1 photo(s)" in result.stdout
    err = result.stderr
    assert "corrupt.jpg: bad_image: " in err and "not a decodable image" in err
    assert "empty.png: bad_image: " in err and "empty file" in err
    assert "blank.png: no_face" in err
    assert "group.jpg: several_faces: " in err and "faces of similar size" in err
    assert "nobody_usable: not enrolled" in err
    with sqlite3.connect(enrolled["data"] / DB_NAME) as db:
        names = sorted(n for (n,) in db.execute("SELECT name FROM residents"))
    assert names == sorted([*PEOPLE, WEAK])


def test_identify_json_lines(enrolled: dict, faces_dir: Path) -> None:
    probes = [sorted((faces_dir / p).glob("*.jpg"))[1] for p in PEOPLE]
    stranger = sorted((faces_dir / "elon_musk").glob("*.jpg"))[0]
    broken = enrolled["root"] / "broken.jpg"
    broken.write_bytes(b"not an image")
    result = gatewatch("identify", *map(str, [*probes, stranger, broken]), "--json",
                       "--data-dir", str(enrolled["data"]), cwd=enrolled["root"])
    assert result.returncode == 1  # one image could not be read
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == list(map(str, [*probes, stranger, broken]))
    for person, line in zip(PEOPLE, lines[:3], strict=True):
        face = line["faces"][0]
        assert face["match"]["name"] == person
        assert set(face) == {"box", "score", "match"} and len(face["box"]) == 4
        assert face["match"]["similarity"] >= 0.97
    assert all(face["match"] is None for face in lines[3]["faces"]) and lines[3]["faces"]
    assert "not a decodable image" in lines[4]["error"]


def test_identify_lists_faces_largest_first(enrolled: dict, shared_data: Path) -> None:
    group = shared_data / "groups" / "facerec_obama_and_biden.jpg"
    result = gatewatch("identify", str(group), "--json", "--data-dir", str(enrolled["data"]), cwd=enrolled["root"])
    faces = json.loads(result.stdout)["faces"]
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert len(faces) >= 2 and areas == sorted(areas, reverse=True)
    assert [f["match"] and f["match"]["name"] for f in faces[:2]].count("barack_obama") == 1
    assert all(f["match"] is None or f["match"]["name"] == "barack_obama" for f in faces)  # Biden: not enrolled


def test_models_verify_and_list(tmp_path: Path) -> None:
    result = gatewatch("models", "verify", "--pack", "open", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dlib_resnet_v1: dlib_face_recognition_resnet_model_v1.dat ok" in result.stdout
    listing = gatewatch("models", "list", cwd=tmp_path)
    assert "pack open:" in listing.stdout and "sface_2021dec" in listing.stdout


def test_models_can_be_named_one_by_one(tmp_path: Path, shared_models: Path) -> None:
    """install.sh fetches the liveness pair by name, from the mirror here (never downloading)."""
    result = gatewatch("models", "verify", "minifasnet_v2", "minifasnet_v1se", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["minifasnet_v2", "minifasnet_v1se"]
    unknown = gatewatch("models", "verify", "minifasnet_v3", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown model 'minifasnet_v3'" in unknown.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    env_free = {k: v for k, v in os.environ.items() if k != "GATEWATCH_MODEL_MIRROR"}
    result = subprocess.run([sys.executable, "-m", "gatewatch.cli", "models", "verify", "--pack", "standard"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**env_free, "GATEWATCH_MODEL_CACHE": str(tmp_path / "cache"),
                                 "PYTHONPATH": str(Path.cwd())})
    assert result.returncode == 1
    assert "face_recognition_sface_2021dec.onnx (sha256 f6abbfff" in result.stderr
    assert "GATEWATCH_MODEL_MIRROR" in result.stderr


def test_enroll_needs_a_folder_of_folders(tmp_path: Path) -> None:
    result = gatewatch("enroll", str(tmp_path / "absent"), "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 2 and "is not a folder" in result.stderr
