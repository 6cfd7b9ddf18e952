"""Choosing a compound's operating point (accept threshold + margin) from its own residents' photos.

The pack's threshold was calibrated on other people; how much a model crowds faces together depends
on the population (benchmarks/face_accuracy: dlib's embedder puts East Asian faces closer than the
faces/ set), so a compound can measure its own. The scores here mirror how the Gallery decides
(gates/gallery.py): a resident is scored by their fused template (the normalised mean of their
unit-length enrolment embeddings), and a probe is let in when the best resident's similarity reaches
the threshold AND leads the runner-up by the margin (the floor -1 stands in for a runner-up when the
gallery holds one resident).

- genuine comparisons: each person with 2+ usable photos is enrolled from `enrol_photos` of them
  (fewer, leaving at least one probe, if they have no more), in several rotations of disjoint photo
  blocks when they have enough; their other photos are scored against that template and everyone
  else's. A probe passes only if the best resident is the right one.
- impostor comparisons: each person's photos against a gallery of everyone else (leave one person
  out), so every photo is a stranger exactly once. One comparison per photo, against the gallery of
  every other person's first photos (what `gatewatch enroll` would build): scoring the same photo
  against several rotations of the gallery would multiply the count without adding independent
  evidence, and the confidence bound below would then claim more than the photos can show.

The operating point maximises the genuine pass rate subject to the one-sided 95 % Clopper-Pearson
upper bound of the false-accept rate being at most the target: the observed rate on a few hundred
strangers is too noisy to promise anything by itself. The bound at zero observed accepts, about 3/N
for N impostor comparisons, is the smallest false-accept rate the data can support at all. When the
target is below it, no threshold can show the target; `choose_operating_point` then picks the
strictest point the data supports (zero observed accepts, the best pass rate among those) and marks
the result `target_supported=False`, so that the caller can refuse to apply it (the CLI does).

The rates are per stranger attempt against a gallery of this size: a compound with many more
residents gives each stranger more residents to resemble, so a FAR measured on a small group is
optimistic for a large one. Photos in which no face is found are left out of the scores (they do not
depend on the threshold) and counted separately.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import beta

from vision.faces.analyzer import FaceAnalyzer
from vision.images import ImageError, load_image

__all__ = [
    "CONFIDENCE",
    "DEFAULT_MARGINS",
    "DET_COLOUR",
    "GENUINE_COLOUR",
    "IMAGE_SUFFIXES",
    "IMPOSTOR_COLOUR",
    "Calibration",
    "CalibrationError",
    "DetCurve",
    "FolderEmbeddings",
    "Interval",
    "OperatingPoint",
    "Scores",
    "choose_operating_point",
    "clopper_pearson_interval",
    "clopper_pearson_upper",
    "det_curve",
    "embed_folder",
    "far_floor",
    "impostors_needed",
    "plot_calibration",
    "score_people",
    "summary_lines",
]

CONFIDENCE = 0.95
DEFAULT_MARGINS = (0.0, 0.01, 0.02, 0.03, 0.05)
DEFAULT_ENROL_PHOTOS = 2
# Rotations of a person's enrolment photos: more use their photos better, each one re-scores the
# same probes, so a few are enough.
DEFAULT_MAX_ROTATIONS = 5
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
# Fixed plot colours (Okabe-Ito, distinguishable with colour blindness), so tests can find each series.
GENUINE_COLOUR = "#0072B2"  # blue
IMPOSTOR_COLOUR = "#D55E00"  # vermillion
DET_COLOUR = "#009E73"  # bluish green
POINT_COLOUR = "#CC79A7"  # reddish purple


class CalibrationError(ValueError):
    """The photos cannot calibrate anything (too few people or photos); the message says what is missing."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval of a rate, both ends in [0, 1]."""

    low: float
    high: float

    def __contains__(self, rate: float) -> bool:
        return self.low <= rate <= self.high


@dataclass(frozen=True, eq=False)
class Scores:
    """Every comparison, as the gallery would see it. genuine_*: one row per (rotation, probe photo);
    genuine_right: the best resident is the probe's own. impostor_*: one row per stranger photo."""

    genuine_best: np.ndarray
    genuine_margin: np.ndarray
    genuine_right: np.ndarray
    impostor_best: np.ndarray
    impostor_margin: np.ndarray
    people: int  # people with at least one usable photo
    enrolled_people: int  # people with 2+ usable photos: enrolled, and the source of genuine probes
    enrol_photos: int

    @property
    def genuine(self) -> int:
        return len(self.genuine_best)

    @property
    def impostors(self) -> int:
        return len(self.impostor_best)


@dataclass(frozen=True)
class OperatingPoint:
    """A (threshold, margin) and what it did on the calibration comparisons, with 95 % intervals.

    pass_rate: genuine comparisons accepted as the right person; wrong: genuine comparisons accepted
    as somebody else (reported, not part of the FAR: the FAR is about strangers). far_upper: the
    one-sided upper bound the target is checked against; far_interval: the two-sided interval."""

    threshold: float
    margin: float
    genuine: int
    passed: int
    wrong: int
    impostors: int
    accepted: int
    pass_rate: float
    pass_interval: Interval
    far: float
    far_interval: Interval
    far_upper: float


@dataclass(frozen=True)
class Calibration:
    """The chosen point and what the data can say. far_floor: the least FAR the impostor comparisons
    can support (the upper bound at zero accepts); impostors_needed: how many it would take to
    support the target at zero accepts; target_supported: False when the target is below the floor,
    in which case `point` is the strictest point the data supports."""

    point: OperatingPoint
    target_far: float
    far_floor: float
    impostors_needed: int
    target_supported: bool
    margins: tuple[float, ...]


@dataclass(frozen=True, eq=False)
class DetCurve:
    """False match rate (strangers accepted) and false non-match rate (residents not let in as
    themselves) at each threshold, for one margin, thresholds ascending."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray
    margin: float


@dataclass(frozen=True, eq=False)
class FolderEmbeddings:
    """A folder of people, embedded: person -> (n, dim) embeddings of their photos with a face."""

    people: dict[str, np.ndarray]
    photos: int
    without_face: tuple[Path, ...]


# --- statistics ----------------------------------------------------------------------------------


def clopper_pearson_upper(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper confidence bound of a rate seen k times in n trials (exact, binomial)."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    return 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))


def clopper_pearson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Two-sided exact interval of a rate seen k times in n trials."""
    if n <= 0:
        return Interval(0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(low, high)


def far_floor(impostors: int, confidence: float = CONFIDENCE) -> float:
    """The smallest FAR `impostors` comparisons can support: the upper bound with none accepted,
    1 - (1 - confidence)^(1/N), about 3/N at 95 %."""
    return clopper_pearson_upper(0, impostors, confidence)


def impostors_needed(target_far: float, confidence: float = CONFIDENCE) -> int:
    """Impostor comparisons needed, with none accepted, for the upper bound to reach target_far."""
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target FAR {target_far} must be in (0, 1)")
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-target_far))


# --- scores --------------------------------------------------------------------------------------


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 1e-6).all()):
        raise CalibrationError("embeddings must be finite and non-zero")
    return rows / norms


def _fuse(rows: np.ndarray) -> np.ndarray:
    mean = rows.mean(axis=0)
    return mean / np.linalg.norm(mean)


def _best_and_margin(sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe row: best similarity, its lead over the runner-up (-1 when there is none), and
    the winning column."""
    order = np.argsort(-sims, axis=1)
    rows = np.arange(len(sims))
    best = sims[rows, order[:, 0]]
    runner_up = sims[rows, order[:, 1]] if sims.shape[1] > 1 else np.full(len(sims), -1.0)
    return best, best - runner_up, order[:, 0]


def score_people(embeddings: Mapping[str, np.ndarray], enrol_photos: int = DEFAULT_ENROL_PHOTOS,
                 max_rotations: int = DEFAULT_MAX_ROTATIONS) -> Scores:
    """Genuine and impostor comparisons of a group of people, as the gallery would score them.

    embeddings: person -> (n, dim) embeddings of their photos (any length; normalised here, as the
    gallery stores them). Photos are used in the order given: the first `enrol_photos` make the
    template a new enrolment would make, later blocks the other rotations.
    """
    if enrol_photos < 1 or max_rotations < 1:
        raise ValueError("enrol_photos and max_rotations must be at least 1")
    people = {name: _unit(rows) for name, rows in embeddings.items() if len(rows) > 0}
    dims = {rows.shape[1] for rows in people.values()}
    if len(dims) > 1:
        raise CalibrationError(f"embeddings of different sizes: {sorted(dims)}")
    enrolled = [name for name, rows in people.items() if len(rows) >= 2]
    if len(enrolled) < 2:
        raise CalibrationError(f"{len(enrolled)} people have 2+ usable photos; calibration needs at least 2 "
                               "(one to enrol and probe, others to be strangers to)")
    blocks = {name: min(enrol_photos, len(people[name]) - 1) for name in enrolled}
    first = np.stack([_fuse(people[name][:blocks[name]]) for name in enrolled])
    column = {name: i for i, name in enumerate(enrolled)}

    g_best, g_margin, g_right = [], [], []
    for name in enrolled:
        rows, k = people[name], blocks[name]
        for r in range(min(max_rotations, len(rows) // k)):
            template = slice(r * k, (r + 1) * k)
            probes = np.delete(rows, np.arange(len(rows))[template], axis=0)
            gallery = first.copy()
            gallery[column[name]] = _fuse(rows[template])
            best, margin, winner = _best_and_margin(probes @ gallery.T)
            g_best.append(best)
            g_margin.append(margin)
            g_right.append(winner == column[name])

    i_best, i_margin = [], []
    for name, rows in people.items():
        others = [i for n, i in column.items() if n != name]
        best, margin, _ = _best_and_margin(rows @ first[others].T)
        i_best.append(best)
        i_margin.append(margin)

    return Scores(np.concatenate(g_best), np.concatenate(g_margin), np.concatenate(g_right),
                  np.concatenate(i_best), np.concatenate(i_margin), len(people), len(enrolled), enrol_photos)


# --- choosing the point --------------------------------------------------------------------------


def _point(scores: Scores, threshold: float, margin: float) -> OperatingPoint:
    accepted_g = (scores.genuine_best >= threshold) & (scores.genuine_margin >= margin)
    passed = int(np.sum(accepted_g & scores.genuine_right))
    wrong = int(np.sum(accepted_g & ~scores.genuine_right))
    accepted = int(np.sum((scores.impostor_best >= threshold) & (scores.impostor_margin >= margin)))
    g, n = scores.genuine, scores.impostors
    return OperatingPoint(threshold, margin, g, passed, wrong, n, accepted, passed / g if g else 0.0,
                          clopper_pearson_interval(passed, g), accepted / n if n else 0.0,
                          clopper_pearson_interval(accepted, n), clopper_pearson_upper(accepted, n))


def _between(low: float, high: float) -> float:
    """A threshold in (low, high]: the midpoint, rounded to the fewest decimals that stay inside
    (a readable number in the config file, and not on top of either score)."""
    mid = (low + high) / 2
    for decimals in range(2, 9):
        rounded = round(mid, decimals)
        if low < rounded <= high:
            return rounded
    return mid


def _threshold_for(scores: Scores, margin: float, max_far_upper: float) -> float:
    """The threshold with the best pass rate at this margin whose FAR upper bound is within
    max_far_upper, placed midway between the lowest genuine score it keeps and the highest score
    below it (so neither sits on the boundary)."""
    n = scores.impostors
    strangers = np.sort(scores.impostor_best[scores.impostor_margin >= margin])
    keep = np.unique(scores.genuine_best[scores.genuine_right & (scores.genuine_margin >= margin)])
    everything = np.concatenate([scores.genuine_best, scores.impostor_best])
    # Strangers at or above each candidate threshold, for every kept genuine score ascending.
    above = len(strangers) - np.searchsorted(strangers, keep, side="left")
    feasible = [i for i, k in enumerate(above) if clopper_pearson_upper(int(k), n) <= max_far_upper]
    if not feasible:  # no genuine score can be kept: reject every stranger seen
        top = float(everything.max())
        return _between(top, min(1.0, top + 0.02)) if top < 1.0 else 1.0
    g = float(keep[feasible[0]])
    below = everything[everything < g]
    return _between(float(below.max()) if len(below) else g - 0.01, g)


def choose_operating_point(scores: Scores, target_far: float,
                           margins: Sequence[float] = DEFAULT_MARGINS) -> Calibration:
    """The (threshold, margin) with the best genuine pass rate whose one-sided 95 % FAR bound is at
    most target_far; among equal pass rates, fewer strangers accepted, then fewer wrong-person
    accepts, then the higher threshold (the stricter against strangers, which is what is promised).

    A target below what the data can support (far_floor) is not an error: the strictest point the
    data supports (no stranger accepted) is chosen and target_supported is False.
    """
    if not 0.0 < target_far < 1.0:
        raise ValueError(f"target FAR {target_far} must be in (0, 1)")
    if scores.genuine == 0 or scores.impostors == 0:
        raise CalibrationError("no genuine or no impostor comparisons to calibrate on")
    floor = far_floor(scores.impostors)
    supported = floor <= target_far
    limit = target_far if supported else floor * (1 + 1e-9)
    best: OperatingPoint | None = None
    for margin in margins:
        point = _point(scores, _threshold_for(scores, margin, limit), float(margin))
        key = (point.passed, -point.accepted, -point.wrong, point.threshold)
        if best is None or key > (best.passed, -best.accepted, -best.wrong, best.threshold):
            best = point
    assert best is not None, "margins must not be empty"
    return Calibration(best, target_far, floor, impostors_needed(target_far), supported, tuple(margins))


def det_curve(scores: Scores, margin: float) -> DetCurve:
    """FMR and FNMR at every threshold where either changes, for one margin."""
    thresholds = np.unique(np.concatenate([scores.genuine_best, scores.impostor_best, [1.0 + 1e-9]]))
    strangers = np.sort(scores.impostor_best[scores.impostor_margin >= margin])
    kept = np.sort(scores.genuine_best[scores.genuine_right & (scores.genuine_margin >= margin)])
    fmr = (len(strangers) - np.searchsorted(strangers, thresholds, side="left")) / scores.impostors
    passed = (len(kept) - np.searchsorted(kept, thresholds, side="left")) / scores.genuine
    return DetCurve(thresholds, fmr, 1.0 - passed, margin)


# --- embedding a folder --------------------------------------------------------------------------


def embed_folder(analyzer: FaceAnalyzer, root: Path) -> FolderEmbeddings:
    """One sub-folder per person (as `gatewatch enroll` takes); the largest face of each photo.

    Not enrolment's one-face-and-good-quality rule: the comparisons stand for faces at the gate,
    strangers included, which the gate scores whatever their quality; press photos show bystanders,
    and the subject is the largest face. Unreadable photos count as without a face.
    """
    root = Path(root)
    if not root.is_dir():
        raise CalibrationError(f"{root} is not a folder (expected one sub-folder per person)")
    people: dict[str, np.ndarray] = {}
    photos, missing = 0, []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        rows = []
        for path in sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            photos += 1
            try:
                faces = analyzer.analyze(load_image(path), max_faces=1)
            except ImageError:
                faces = None
            if faces is None or len(faces) == 0:
                missing.append(path)
            else:
                rows.append(faces.embeddings[0])
        if rows:
            people[person.name] = np.stack(rows)
    return FolderEmbeddings(people, photos, tuple(missing))


# --- the picture ---------------------------------------------------------------------------------


def plot_calibration(scores: Scores, calibration: Calibration, path: Path, *,
                     title: str | None = None) -> Path:
    """PNG: left, the genuine and impostor score distributions with the chosen threshold; right,
    the DET curve at the chosen margin (log axes) with the chosen point. Rates of zero cannot sit
    on a log axis: they are drawn at half of one comparison's share, and the axis says so."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    point = calibration.point
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)

    low = float(min(scores.genuine_best.min(), scores.impostor_best.min()))
    high = float(max(scores.genuine_best.max(), scores.impostor_best.max()))
    bins = np.linspace(low, high, 41) if high > low else 10
    left.hist(scores.genuine_best, bins=bins, density=True, histtype="step", linewidth=2.5,
              color=GENUINE_COLOUR, label=f"genuine ({scores.genuine})")
    left.hist(scores.impostor_best, bins=bins, density=True, histtype="step", linewidth=2.5,
              color=IMPOSTOR_COLOUR, label=f"impostor ({scores.impostors})")
    left.axvline(point.threshold, color="black", linestyle="--", linewidth=1.5,
                 label=f"threshold {point.threshold:g}")
    left.set_xlabel("best similarity (fused template, cosine)")
    left.set_ylabel("density")
    left.set_title("score distributions")
    left.legend(loc="upper left", fontsize=8)

    curve = det_curve(scores, point.margin)
    fmr_floor, fnmr_floor = 0.5 / scores.impostors, 0.5 / scores.genuine
    right.plot(np.maximum(curve.fmr, fmr_floor), np.maximum(curve.fnmr, fnmr_floor), color=DET_COLOUR,
               linewidth=2.5, drawstyle="steps-post", label=f"DET, margin {point.margin:g}")
    right.plot([max(point.far, fmr_floor)], [max(1 - point.pass_rate, fnmr_floor)],
               marker="o", markersize=9, color=POINT_COLOUR, linestyle="none",
               label=f"chosen: FMR {point.far:.3g} (≤{point.far_upper:.3g}), FNMR {1 - point.pass_rate:.3g}")
    right.axvline(calibration.target_far, color="grey", linestyle=":", linewidth=1.2,
                  label=f"target FAR {calibration.target_far:g}")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(f"false match rate (zero drawn at {fmr_floor:.2g})")
    right.set_ylabel(f"false non-match rate (zero drawn at {fnmr_floor:.2g})")
    right.set_title("DET")
    right.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def summary_lines(calibration: Calibration, scores: Scores) -> Iterable[str]:
    """The human-readable report the CLI prints."""
    p = calibration.point
    yield (f"{scores.people} people ({scores.enrolled_people} with 2+ photos, enrolled from "
           f"{scores.enrol_photos}): {p.genuine} genuine and {p.impostors} impostor comparisons")
    yield (f"operating point: accept_threshold {p.threshold:g}, margin {p.margin:g}")
    yield (f"  residents let in: {p.pass_rate:.1%} ({p.passed}/{p.genuine}; 95 % interval "
           f"{p.pass_interval.low:.1%}-{p.pass_interval.high:.1%}); let in as someone else: {p.wrong}")
    yield (f"  strangers let in: {p.far:.2%} ({p.accepted}/{p.impostors}; 95 % interval "
           f"{p.far_interval.low:.2%}-{p.far_interval.high:.2%}; one-sided upper bound {p.far_upper:.2%})")
    yield (f"  the smallest false-accept rate these {p.impostors} impostor comparisons can support: "
           f"{calibration.far_floor:.2%}")
    if not calibration.target_supported:
        yield (f"target FAR {calibration.target_far:g} is below that: it needs at least "
               f"{calibration.impostors_needed} impostor comparisons (photos of people not in the gallery) "
               "with none accepted. The point above is the strictest these photos support (no stranger "
               "accepted), not the target.")
