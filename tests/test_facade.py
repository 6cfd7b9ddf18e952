"""Facade calibration and camera files: the geometry every throw report rests on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throw_scenarios import make_scenario
from vision.cameras import CameraConfigError, FacadeSettings, dump_camera, load_camera
from vision.throws.facade import FacadeCalibration, homography_from_corners

FACADE = "id: f\nrole: facade\nsource: a.mp4\nfacade: "
CORNERS = [[100, 1000], [900, 980], [820, 80], [160, 60]]  # bl, br, tr, tl: a keystoned tower


def test_corners_map_exactly() -> None:
    H = homography_from_corners(CORNERS, floors=20, columns=8)
    cal = FacadeCalibration(H, 20, 8)
    img = cal.to_image(np.array([[0, 0], [8, 0], [8, 20], [0, 20]], float))
    np.testing.assert_allclose(img, CORNERS, atol=1e-6)
    uv = cal.to_facade(np.asarray(CORNERS, float))
    np.testing.assert_allclose(uv, [[0, 0], [8, 0], [8, 20], [0, 20]], atol=1e-6)


def test_floor_and_column_of_a_pixel() -> None:
    cal = FacadeCalibration(homography_from_corners(CORNERS, 20, 8), 20, 8)
    # The centre of floor 7 (v in [6, 7)), column 3 (u in [2, 3)).
    xy = cal.to_image(np.array([[2.5, 6.5]]))[0]
    fc = cal.floor_column(xy)
    assert (fc.floor, fc.column) == (7, 3)
    assert fc.u == pytest.approx(2.5) and fc.v == pytest.approx(6.5)
    # Outside the facade clamps to its edge rather than inventing floor 0 or 21.
    assert cal.floor_column_of(-0.3, 25.0).floor == 20
    assert cal.floor_column_of(-0.3, 25.0).column == 1


def test_jacobian_matches_finite_differences() -> None:
    cal = FacadeCalibration(homography_from_corners(CORNERS, 20, 8), 20, 8)
    uv = np.array([3.3, 12.1])
    eps = 1e-5
    num = np.stack(
        [
            (cal.to_image(uv + d) - cal.to_image(uv - d))[0] / (2 * eps)
            for d in (np.array([eps, 0]), np.array([0, eps]))
        ],
        1,
    )
    np.testing.assert_allclose(cal.jacobian(tuple(uv)), num, rtol=1e-5)


def test_tilted_camera_makes_higher_floors_shorter_and_corners_recover_h() -> None:
    scenario, _ = make_scenario(1234, width=1280, height=720, n_throws=0)
    cal = FacadeCalibration(np.asarray(scenario.homography), scenario.floors, scenario.columns)
    mid = scenario.columns / 2
    heights = [
        np.linalg.norm(cal.to_image(np.array([[mid, f + 1]])) - cal.to_image(np.array([[mid, f]])))
        for f in (0, scenario.floors - 1)
    ]
    assert heights[1] < heights[0]  # the top floor looks shorter than the ground floor
    corners = cal.to_image(
        np.array(
            [[0, 0], [scenario.columns, 0], [scenario.columns, scenario.floors], [0, scenario.floors]], float
        )
    )
    H2 = homography_from_corners(corners, scenario.floors, scenario.columns)
    np.testing.assert_allclose(H2, cal.H / cal.H[2, 2], rtol=1e-6, atol=1e-6)


def test_homography_rescaled_for_another_frame_size() -> None:
    H = homography_from_corners(CORNERS, 20, 8)
    settings = FacadeSettings(homography=H.tolist(), floors=20, columns=8, image_size=(1000, 1100))
    half = FacadeCalibration.from_settings(settings, (500, 550))
    np.testing.assert_allclose(
        half.to_image(np.array([[0.0, 0.0]]))[0], np.asarray(CORNERS[0]) / 2, atol=1e-6
    )


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cam.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_facade_camera_round_trip(tmp_path: Path) -> None:
    scenario, _ = make_scenario(1234, width=640, height=360, n_throws=0)
    path = _write(tmp_path, dump_camera(scenario.camera("rtsp://cam/1")))
    cam = load_camera(path)
    assert cam.role == "facade" and cam.facade is not None
    assert cam.facade.floors == scenario.floors
    assert {z.kind for z in cam.facade.mask_zones} >= {"sky", "road"}


def test_gate_camera_needs_only_id_role_source(tmp_path: Path) -> None:
    cam = load_camera(_write(tmp_path, "id: gate-1\nrole: gate\nsource: 0\n"))
    assert cam.source == "0" and cam.facade is None and cam.gate_id is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("id: f\nrole: facade\nsource: a.mp4\n", "needs a 'facade:' section"),
        (
            FACADE + "{homography: [[1,0,0],[0,1,0]], floors: 3, columns: 2}\n",
            "3x3",
        ),
        (
            FACADE + "{homography: [[1,2,0],[2,4,0],[0,0,0]], floors: 3, columns: 2}\n",
            "singular",
        ),
        (
            FACADE + "{homography: [[1,0,0],[0,1,0],[0,0,1]], floors: 0, columns: 2}\n",
            "facade.floors",
        ),
        (
            FACADE + "{homograpy: [[1,0,0],[0,1,0],[0,0,1]], floors: 3, columns: 2}\n",
            "homograpy",
        ),
        ("id: f\nrole: tower\nsource: a.mp4\n", "role"),
        ("id: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_bad_camera_files_say_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CameraConfigError) as err:
        load_camera(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_missing_camera_file(tmp_path: Path) -> None:
    with pytest.raises(CameraConfigError, match="cannot read"):
        load_camera(tmp_path / "nope.yaml")
