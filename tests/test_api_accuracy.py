"""The service tried as a gate controller would, on real photos: residents enrolled through the
API with one photo each, everyone's other photos posted to the gates' access endpoints.

Half of the people of faces/ are enrolled; the other half and all of faces_east_asian/ are never
enrolled. Gate A lets every resident in; gate B only half of them. The thresholds are the pack's
calibrated ones (registry), as `gatewatch serve` uses them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from models import registry
from vision.faces.analyzer import build_analyzer

ADMIN = "accuracy-admin-key-0123456789"
A = {"X-API-Key": ADMIN}


def _people(root: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(d.glob("*.jpg")) for d in sorted(root.iterdir()) if d.is_dir()}


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, east_asian_dir: Path) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("accuracy")
    # Recognition accuracy alone: liveness passes only ~82 % of these press photos (test_liveness.py).
    settings = Settings(data_dir=data_dir, admin_key=ADMIN, timezone="UTC", liveness="off")
    analyzer = build_analyzer("open")
    with TestClient(create_app(settings, analyzer=analyzer)) as c:
        gate_a = c.post("/api/v1/gates", json={"name": "A", "kind": "main"}, headers=A).json()
        gate_b = c.post("/api/v1/gates", json={"name": "B", "kind": "stairwell"}, headers=A).json()
        people = _people(faces_dir)
        names = sorted(people)
        residents: dict[str, tuple[int, list[Path]]] = {}
        for i, name in enumerate(names[::2]):
            gates = [gate_a["id"]] if i % 2 else None  # odd ones may not pass gate B
            body = {"name": name, "allowed_gates": gates}
            rid = c.post("/api/v1/residents", json=body, headers=A).json()["id"]
            for j, path in enumerate(people[name]):  # the first photo the enrolment accepts
                files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
                if c.post(f"/api/v1/residents/{rid}/faces", files=files, headers=A).status_code == 201:
                    residents[name] = (rid, people[name][:j] + people[name][j + 1:])
                    break
        strangers = {"faces": [p for n in names[1::2] for p in people[n]],
                     "faces_east_asian": [p for photos in _people(east_asian_dir).values() for p in photos]}

        def knock(gate: dict, path: Path) -> dict:
            r = c.post(f"/api/v1/gates/{gate['id']}/access",
                       files={"file": (path.name, path.read_bytes(), "image/jpeg")},
                       headers={"X-API-Key": gate["api_key"]})
            assert r.status_code == 200, r.text
            return r.json()

        yield {"client": c, "gate_a": gate_a, "gate_b": gate_b, "residents": residents,
               "strangers": strangers, "knock": knock, "data_dir": data_dir,
               "analyzer": analyzer}


def test_every_resident_was_enrolled_from_one_photo(trial: dict, faces_dir: Path) -> None:
    assert len(trial["residents"]) == len(sorted(_people(faces_dir))[::2])


def test_residents_are_let_in_and_never_as_someone_else(trial: dict) -> None:
    outcomes = [(name, trial["knock"](trial["gate_a"], path))
                for name, (_, photos) in trial["residents"].items() for path in photos]
    unlocked = [r for _, r in outcomes if r["decision"] == "unlock"]
    wrong = [(name, r["resident"]) for name, r in outcomes if r["resident"] and r["resident"]["name"] != name]
    print(f"\nresidents at gate A: {len(unlocked)}/{len(outcomes)} unlocked "
          f"({len(unlocked) / len(outcomes):.1%}), wrong person {len(wrong)}")
    assert not wrong
    assert len(unlocked) / len(outcomes) >= 0.95


def _strangers_denied(trial: dict, source: str) -> float:
    paths = trial["strangers"][source]
    results = [trial["knock"](trial["gate_a"], path) for path in paths]
    let_in = [(path.parent.name, r["resident"]["name"], r["similarity"])
              for path, r in zip(paths, results, strict=True) if r["decision"] == "unlock"]
    rate = 1 - len(let_in) / len(results)
    print(f"\nnever enrolled ({source}) at gate A: {len(results) - len(let_in)}/{len(results)} denied "
          f"({rate:.1%}); let in (who, as, similarity): {let_in}")
    return rate


def test_people_never_enrolled_are_denied(trial: dict) -> None:
    """The issue's figure: the other half of faces/."""
    assert _strangers_denied(trial, "faces") >= 0.99


def test_east_asian_strangers_are_denied_at_the_strict_threshold(trial: dict) -> None:
    """dlib's embedder crowds East Asian faces together: at the threshold calibrated on faces/
    some never-enrolled East Asian people pass as the one East Asian resident (README gives the
    figure). The registry's strict threshold, set through the service's settings, denies them."""
    strict = registry.get_entry("dlib_resnet_v1").strict_accept_threshold
    settings = Settings(data_dir=trial["data_dir"], admin_key=ADMIN, timezone="UTC", accept_threshold=strict,
                        liveness="off")
    with TestClient(create_app(settings, analyzer=trial["analyzer"])) as c:
        gate = trial["gate_a"]
        results = [c.post(f"/api/v1/gates/{gate['id']}/access",
                          files={"file": (p.name, p.read_bytes(), "image/jpeg")},
                          headers={"X-API-Key": gate["api_key"]}).json()
                   for p in trial["strangers"]["faces_east_asian"]]
    denied = sum(r["decision"] == "deny" for r in results) / len(results)
    print(f"\nEast Asian strangers denied at the strict threshold {strict}: {denied:.1%}")
    assert denied >= 0.99
