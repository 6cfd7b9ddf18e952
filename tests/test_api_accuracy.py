"""The service tried as a gate controller would, on real photos: the held-out people (never used to
choose a method or a threshold, benchmarks/face_accuracy.HELD_OUT) enrolled through the API with
their first two accepted photos, everyone's other photos posted to a gate's access endpoint, every
photo of everybody else as a stranger. The thresholds are the pack's (registry), as `gatewatch
serve` uses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from benchmarks.face_accuracy import EAST_ASIAN_IN_FACES, HELD_OUT
from vision.faces.analyzer import build_analyzer

ADMIN = "accuracy-admin-key-0123456789"
A = {"X-API-Key": ADMIN}
PHOTOS = 2


def _people(*roots: Path) -> dict[str, tuple[str, list[Path]]]:
    """name -> (population, photos)."""
    out = {}
    for root in roots:
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            east_asian = root.name == "faces_east_asian" or d.name in EAST_ASIAN_IN_FACES
            out[d.name] = ("east_asian" if east_asian else "other", sorted(d.glob("*.jpg")))
    return out


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, east_asian_dir: Path) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("accuracy")
    # Recognition accuracy alone: liveness passes only ~82 % of these press photos (test_liveness.py).
    settings = Settings(data_dir=data_dir, admin_key=ADMIN, timezone="UTC", liveness="off")
    with TestClient(create_app(settings, analyzer=build_analyzer("open"))) as c:
        gate = c.post("/api/v1/gates", json={"name": "A", "kind": "main"}, headers=A).json()
        people = _people(faces_dir, east_asian_dir)
        residents: dict[str, list[Path]] = {}  # name -> photos left to knock with
        for name in HELD_OUT:
            rid = c.post("/api/v1/residents", json={"name": name}, headers=A).json()["id"]
            photos, enrolled = people[name][1], 0
            rest = []
            for path in photos:
                if enrolled < PHOTOS:
                    files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
                    if c.post(f"/api/v1/residents/{rid}/faces", files=files, headers=A).status_code == 201:
                        enrolled += 1
                        continue
                rest.append(path)
            residents[name] = rest

        def knock(path: Path) -> dict:
            r = c.post(f"/api/v1/gates/{gate['id']}/access",
                       files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                       headers={"X-API-Key": gate["api_key"]})
            assert r.status_code == 200, r.text
            return r.json()

        yield {"people": people, "residents": residents, "knock": knock}


def test_residents_are_let_in_and_never_as_someone_else(trial: dict) -> None:
    """README's figures for two photos, through the service (East Asian 11/17, others 20/24 with
    dlib): below the issue's targets, which the safe threshold does not allow with this embedder."""
    outcomes = {"east_asian": [], "other": []}
    wrong = []
    for name, photos in trial["residents"].items():
        for path in photos:
            r = trial["knock"](path)
            outcomes[trial["people"][name][0]].append(r["decision"] == "unlock")
            if r["resident"] and r["resident"]["name"] != name:
                wrong.append((name, r["resident"]["name"]))
    rates = {pop: sum(o) / len(o) for pop, o in outcomes.items()}
    print(f"\nheld-out residents ({PHOTOS} photos) let in at the access endpoint: "
          + ", ".join(f"{pop} {sum(o)}/{len(o)}" for pop, o in outcomes.items()))
    assert not wrong
    assert rates["east_asian"] >= 0.6
    assert rates["other"] >= 0.8


def test_no_stranger_of_either_population_is_let_in(trial: dict) -> None:
    let_in, knocked = [], {"east_asian": 0, "other": 0}
    for name, (pop, photos) in trial["people"].items():
        if name in trial["residents"]:
            continue
        for path in photos:
            knocked[pop] += 1
            r = trial["knock"](path)
            if r["decision"] == "unlock":
                let_in.append((name, r["resident"]["name"], r["similarity"]))
    print(f"\nstrangers knocked: {knocked}; let in (who, as, similarity): {let_in}")
    assert min(knocked.values()) > 20
    assert let_in == []
