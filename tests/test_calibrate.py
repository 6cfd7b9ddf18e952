"""`gatewatch calibrate`: the statistics on synthetic scores, the operating point chosen on the
tuning people of faces_east_asian/ checked on the held-out ones, the plot, and --apply."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.stats import binomtest

from benchmarks.face_accuracy import HELD_OUT
from gates import calibration as cal
from gates.gallery import Gallery

MODEL, DIM = "dlib_resnet_v1", 128


# --- statistics on synthetic scores ---------------------------------------------------------------


def _scores(genuine: np.ndarray, impostor: np.ndarray, *, margin: float = 0.5) -> cal.Scores:
    return cal.Scores(genuine, np.full(len(genuine), margin), np.ones(len(genuine), bool),
                      impostor, np.full(len(impostor), margin), people=10, enrolled_people=10, enrol_photos=2)


@pytest.mark.parametrize("n", [30, 100, 1000, 3000])
def test_bound_at_zero_accepts_is_about_three_over_n(n: int) -> None:
    assert cal.far_floor(n) == pytest.approx(1 - 0.05 ** (1 / n))
    assert cal.far_floor(n) == pytest.approx(3 / n, rel=0.1)
    needed = cal.impostors_needed(cal.far_floor(n) * (1 + 1e-12))
    assert needed == n


def test_impostors_needed_for_one_in_a_thousand() -> None:
    assert cal.impostors_needed(0.001) == 2995
    assert cal.far_floor(2995) <= 0.001 < cal.far_floor(2994)


@pytest.mark.parametrize(("k", "n"), [(0, 20), (3, 40), (17, 17), (75, 80)])
def test_clopper_pearson_matches_scipy_exact_interval(k: int, n: int) -> None:
    exact = binomtest(k, n).proportion_ci(0.95, method="exact")
    interval = cal.clopper_pearson_interval(k, n)
    assert interval.low == pytest.approx(exact.low, abs=1e-9)
    assert interval.high == pytest.approx(exact.high, abs=1e-9)
    assert k / n in interval
    assert k / n <= cal.clopper_pearson_upper(k, n) <= interval.high


def test_perfectly_separated_scores_put_the_threshold_between_them() -> None:
    rng = np.random.default_rng(0)
    scores = _scores(rng.uniform(0.8, 0.95, 300), rng.uniform(0.2, 0.5, 400))
    result = cal.choose_operating_point(scores, 0.01)
    point = result.point
    assert result.target_supported and result.far_floor == pytest.approx(cal.far_floor(400))
    assert scores.impostor_best.max() < point.threshold <= scores.genuine_best.min()
    assert point.pass_rate == 1.0 and point.accepted == 0 and point.far_upper == pytest.approx(result.far_floor)
    assert (point.genuine, point.impostors) == (300, 400)


def test_overlapping_scores_take_the_most_residents_the_bound_allows() -> None:
    rng = np.random.default_rng(1)
    scores = _scores(rng.normal(0.7, 0.1, 500), rng.normal(0.4, 0.1, 3000))
    result = cal.choose_operating_point(scores, 0.01, margins=(0.0,))
    point = result.point
    assert point.far_upper <= 0.01 and point.accepted > 0  # some strangers accepted, within the bound
    # Optimal: the next genuine score below the threshold would break the bound.
    lower = scores.genuine_best[scores.genuine_best < point.threshold].max()
    accepted_there = int(np.sum(scores.impostor_best >= lower))
    assert cal.clopper_pearson_upper(accepted_there, 3000) > 0.01


def test_target_below_what_the_data_supports_picks_the_strictest_supported_point() -> None:
    rng = np.random.default_rng(2)
    scores = _scores(rng.normal(0.7, 0.1, 80), rng.normal(0.45, 0.1, 42))
    result = cal.choose_operating_point(scores, 0.001)
    assert not result.target_supported and result.impostors_needed == 2995
    assert result.point.accepted == 0 and result.point.far_upper == pytest.approx(cal.far_floor(42))
    assert result.point.threshold > scores.impostor_best.max()
    assert any("below that" in line for line in cal.summary_lines(result, scores))


def test_a_margin_that_keeps_more_residents_is_chosen() -> None:
    """Strangers that look about as much like two residents are stopped by the margin, not the
    threshold: the threshold can then be lower and let more residents in."""
    genuine = np.linspace(0.6, 0.9, 100)
    impostor = np.linspace(0.3, 0.85, 200)
    scores = cal.Scores(genuine, np.full(100, 0.1), np.ones(100, bool), impostor, np.full(200, 0.005),
                        people=10, enrolled_people=10, enrol_photos=2)
    point = cal.choose_operating_point(scores, 0.05).point
    assert point.margin == 0.01 and point.pass_rate == 1.0 and point.accepted == 0


def test_scores_mirror_the_gallery(tmp_path: Path) -> None:
    """score_people's numbers are the ones a real Gallery computes for the same enrolment."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, DIM))
    people = {f"p{i}": centres[i] + 0.6 * rng.normal(size=(4 + i, DIM)) for i in range(5)}
    people["single"] = rng.normal(size=(1, DIM))  # one photo: a stranger only
    scores = cal.score_people(people, enrol_photos=2, max_rotations=5)
    assert (scores.people, scores.enrolled_people) == (6, 5)
    # rotations of 2-photo blocks: 4 photos -> 2 rotations x 2 probes; 5 -> 2 x 3; 6 -> 3 x 4; ...
    assert scores.genuine == sum((n // 2) * (n - 2) for n in range(4, 9))
    assert scores.impostors == sum(len(v) for v in people.values())
    assert scores.genuine_right.all()

    row = 0
    for left_out, rows in people.items():
        with Gallery.open(tmp_path / left_out, "synthetic", DIM, accept_threshold=0.0, margin=0.0) as gallery:
            for name, others in people.items():
                if name != left_out and len(others) >= 2:
                    gallery.add_resident_with_faces(name, others[:2])
            for found in gallery.search(rows, k=2):
                assert found[0].similarity == pytest.approx(scores.impostor_best[row], abs=1e-5)
                runner_up = found[1].similarity if len(found) > 1 else -1.0
                assert found[0].similarity - runner_up == pytest.approx(scores.impostor_margin[row], abs=1e-5)
                row += 1


# --- real photos --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(analyzer, east_asian_dir: Path, shared_data: Path) -> dict[str, cal.FolderEmbeddings]:
    return {"east_asian": cal.embed_folder(analyzer, east_asian_dir),
            "faces": cal.embed_folder(analyzer, shared_data / "faces")}


@pytest.fixture(scope="module")
def tuned(embedded: dict[str, cal.FolderEmbeddings]) -> tuple[cal.Scores, cal.Calibration]:
    tuning = {p: rows for p, rows in embedded["east_asian"].people.items() if p not in HELD_OUT}
    scores = cal.score_people(tuning, enrol_photos=2)
    return scores, cal.choose_operating_point(scores, 0.001)


def test_east_asian_tuning_point_holds_on_the_held_out_people(embedded, tuned) -> None:
    scores, result = tuned
    point = result.point
    print("\n".join(cal.summary_lines(result, scores)))
    # 42 tuning photos cannot show 0.1 %: the strictest point they support is chosen, and said so.
    assert not result.target_supported and point.accepted == 0
    assert point.far_upper == pytest.approx(cal.far_floor(scores.impostors))

    held = {p: rows for p, rows in embedded["east_asian"].people.items() if p in HELD_OUT}
    genuine_right = genuine = 0
    strangers = np.concatenate([rows for folder in embedded.values() for p, rows in folder.people.items()
                                if p not in held])
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(Path(tmp), MODEL, DIM, accept_threshold=point.threshold,
                                                            margin=point.margin) as gallery:
        for person, rows in held.items():
            gallery.add_resident_with_faces(person, rows[:2])
        for person, rows in held.items():
            if len(rows) > 2:
                matches = gallery.identify(rows[2:])
                genuine += len(matches)
                genuine_right += sum(m is not None and m.name == person for m in matches)
        strangers_in = sum(m is not None for m in gallery.identify(strangers))
    stranger_rate, pass_rate = strangers_in / len(strangers), genuine_right / genuine
    print(f"held out: residents {genuine_right}/{genuine} = {pass_rate:.1%} (claimed "
          f"{point.pass_interval.low:.1%}-{point.pass_interval.high:.1%}); strangers {strangers_in}/"
          f"{len(strangers)} = {stranger_rate:.2%} (claimed <= {point.far_upper:.2%})")
    assert stranger_rate <= point.far_upper
    assert pass_rate in point.pass_interval


def test_cli_calibrates_the_gallery_writes_the_plot_and_applies(embedded, tmp_path: Path) -> None:
    from api.settings import load_settings
    from gatewatch.cli import main

    data = tmp_path / "data"
    tuning = {p: rows for p, rows in embedded["east_asian"].people.items() if p not in HELD_OUT}
    with Gallery.open(data, MODEL, DIM, accept_threshold=0.97, margin=0.01) as gallery:
        for person, rows in tuning.items():
            gallery.add_resident_with_faces(person, rows)
    (data / "gatewatch.yaml").write_text("# the east gate\nport: 8123\naccept_threshold: 0.5  # old\n",
                                         encoding="utf-8")
    plot = tmp_path / "calibration.png"
    assert main(["calibrate", "--data-dir", str(data), "--target-far", "0.1", "--plot", str(plot), "--apply"]) == 0

    expected = cal.choose_operating_point(cal.score_people(tuning), 0.1)
    assert expected.target_supported
    settings = load_settings(data_dir=data)
    assert settings.accept_threshold == expected.point.threshold and settings.margin == expected.point.margin
    assert settings.port == 8123
    assert "# the east gate" in (data / "gatewatch.yaml").read_text(encoding="utf-8")

    image = cv2.imread(str(plot))
    assert image is not None and 300 <= image.shape[0] <= 2000 and 600 <= image.shape[1] <= 3000
    for colour in (cal.GENUINE_COLOUR, cal.IMPOSTOR_COLOUR, cal.DET_COLOUR):
        bgr = np.array([int(colour[i:i + 2], 16) for i in (5, 3, 1)])
        near = np.abs(image.astype(int) - bgr).max(axis=2) <= 12
        assert near.sum() > 200, f"{colour} is not in the plot"


def test_apply_refuses_toml_and_creates_yaml(tmp_path: Path) -> None:
    from api.settings import load_settings
    from gatewatch.cli import _write_operating_point

    (tmp_path / "toml").mkdir()
    (tmp_path / "toml" / "gatewatch.toml").write_text("port = 8123\n", encoding="utf-8")
    with pytest.raises(ValueError, match="TOML"):
        _write_operating_point(tmp_path / "toml", 0.96, 0.02)
    path = _write_operating_point(tmp_path / "fresh", 0.96, 0.02)
    assert path.name == "gatewatch.yaml"
    settings = load_settings(data_dir=tmp_path / "fresh")
    assert (settings.accept_threshold, settings.margin) == (0.96, 0.02)
