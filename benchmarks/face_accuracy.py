"""Identification accuracy on real photos: closed-set rank-1, open-set accept/reject, crowding.

Run: `python -m benchmarks.face_accuracy [--faces DIR ...]`. Prints, per model and data set,
the figures README's accuracy table is made of. Tests import the same functions, so the numbers
in README and the thresholds asserted in tests come from one implementation.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.gallery import Gallery
from vision.faces.analyzer import FaceAnalyzer
from vision.images import ImageError, load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Sample:
    person: str
    path: Path
    embedding: np.ndarray | None  # None: no face found
    quality: float


def load_people(root: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(root.iterdir()) if d.is_dir()}


def embed_people(analyzer: FaceAnalyzer, people: dict[str, list[Path]]) -> list[Sample]:
    """The largest face of every photo (press photos show bystanders; the subject is largest)."""
    samples = []
    for person, paths in people.items():
        for path in paths:
            try:
                faces = analyzer.analyze(load_image(path), max_faces=1)
            except ImageError:
                faces = None
            if faces is None or len(faces) == 0:
                samples.append(Sample(person, path, None, 0.0))
            else:
                samples.append(Sample(person, path, faces.embeddings[0], faces.quality[0].score))
    return samples


def _matrix(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    found = [s for s in samples if s.embedding is not None]
    return np.stack([s.embedding for s in found]), np.array([s.person for s in found])


def leave_one_out_rank1(samples: Sequence[Sample]) -> tuple[float, int]:
    """Each photo of a person with 2+ photos against all other photos; a photo with no face is a miss."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.person] = counts.get(s.person, 0) + 1
    probes = [s for s in samples if counts[s.person] >= 2]
    emb, labels = _matrix(samples)
    hits = 0
    for probe in probes:
        if probe.embedding is None:
            continue
        sims = emb @ probe.embedding
        sims[np.all(emb == probe.embedding, axis=1)] = -np.inf
        hits += labels[int(np.argmax(sims))] == probe.person
    return hits / len(probes), len(probes)


def similarity_stats(samples: Sequence[Sample]) -> dict[str, float]:
    """Genuine and impostor cosine distributions: how crowded a population is for a model."""
    emb, labels = _matrix(samples)
    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    genuine, impostor = sims[same & upper], sims[~same & upper]
    return {"genuine_mean": float(genuine.mean()), "impostor_mean": float(impostor.mean()),
            "impostor_p99": float(np.percentile(impostor, 99)), "impostor_max": float(impostor.max())}


def verification_accuracy(samples: Sequence[Sample]) -> float:
    """Best balanced accuracy over all same/different-person photo pairs (a threshold sweep).

    Thousands of pairs instead of one score per photo: the measure to compare two pipelines
    running the same network, where open-set figures on a hundred photos move by whole photos.
    """
    emb, labels = _matrix(samples)
    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    genuine, impostor = np.sort(sims[same & upper]), np.sort(sims[~same & upper])
    thresholds = np.linspace(-1.0, 1.0, 4001)
    pass_rate = 1 - np.searchsorted(genuine, thresholds) / len(genuine)
    reject_rate = np.searchsorted(impostor, thresholds) / len(impostor)
    return float(np.max((pass_rate + reject_rate) / 2))


@dataclass(frozen=True)
class OpenSetResult:
    genuine_match_rate: float  # enrolled people's other photos matched to the right person
    genuine_wrong: int  # ... matched to somebody else (the dangerous error)
    impostor_accept_rate: float  # never-enrolled people's photos accepted as anyone
    genuine: int
    impostors: int


def split_people(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    people = sorted({s.person for s in samples})
    return people[0::2], people[1::2]


def _best_templates(samples: Sequence[Sample], enrolled: set[str]) -> dict[str, Sample]:
    """Each enrolled person's best-quality photo: what an operator would enrol them with."""
    templates: dict[str, Sample] = {}
    for s in samples:
        if s.person in enrolled and s.embedding is not None:
            best = templates.get(s.person)
            if best is None or s.quality > best.quality:
                templates[s.person] = s
    return templates


def _first_photos(samples: Sequence[Sample], enrolled: set[str], photos: int) -> dict[str, list[Sample]]:
    """Each enrolled person's first `photos` photos with a face, in file order: what a new user
    hands `gatewatch enroll` (a folder of photos, no choosing)."""
    chosen: dict[str, list[Sample]] = {}
    for s in samples:
        if s.person in enrolled and s.embedding is not None and len(chosen.get(s.person, [])) < photos:
            chosen.setdefault(s.person, []).append(s)
    return chosen


def open_set(samples: Sequence[Sample], enrolled: Sequence[str], model_id: str, accept: float,
             margin: float, photos: int | None = None) -> OpenSetResult:
    """Enrol each enrolled person in a real gallery, from their best photo (photos=None) or their
    first `photos` photos, fused; everyone's other photos are probes."""
    enrolled = set(enrolled)
    templates = ({person: [s] for person, s in _best_templates(samples, enrolled).items()} if photos is None
                 else _first_photos(samples, enrolled, photos))
    used = {id(s) for chosen in templates.values() for s in chosen}
    genuine = [s for s in samples if s.person in templates and id(s) not in used]
    impostors = [s for s in samples if s.person not in enrolled]
    with tempfile.TemporaryDirectory() as tmp:
        dim = len(next(iter(templates.values()))[0].embedding)
        with Gallery.open(Path(tmp), model_id, dim, accept_threshold=accept, margin=margin) as gallery:
            for person, chosen in templates.items():
                gallery.add_resident_with_faces(person, np.stack([s.embedding for s in chosen]),
                                                [s.quality for s in chosen], [str(s.path) for s in chosen])
            g_right, g_wrong = _score(gallery, genuine)
            i_right, i_wrong = _score(gallery, impostors)
    return OpenSetResult(g_right / max(len(genuine), 1), g_wrong, (i_right + i_wrong) / max(len(impostors), 1),
                         len(genuine), len(impostors))


# People never used to choose a method or a threshold (every third of each set by name); README
# reports them beside the others. East Asian: faces_east_asian/ and cai_xukun of faces/.
HELD_OUT = ("a_bao", "an_zhijie", "chen_weiting", "faker_lee_sanghyeok", "takahashi_minami",
            "angelina_jolie", "elon_musk", "john_savage", "katy_perry", "marissa_mayer", "rob_lowe")
EAST_ASIAN_IN_FACES = ("cai_xukun",)


def population(sample: Sample) -> str:
    return "east_asian" if sample.path.parent.parent.name == "faces_east_asian" \
        or sample.person in EAST_ASIAN_IN_FACES else "other"


@dataclass(frozen=True)
class PopulationResult:
    """One population's residents let in and strangers let in, as counts."""

    population: str
    matched: int
    genuine: int
    wrong: int
    strangers_accepted: int
    strangers: int


def held_out_by_population(samples: Sequence[Sample], model_id: str, accept: float, margin: float,
                           photos: int, enrolled: Sequence[str] = HELD_OUT) -> list[PopulationResult]:
    """The check a new user makes: `enrolled` people enrolled from their first `photos` photos,
    their other photos as residents at the gate, every photo of everyone else as a stranger;
    counted per population."""
    enrolled_set = set(enrolled)
    templates = _first_photos(samples, enrolled_set, photos)
    used = {id(s) for chosen in templates.values() for s in chosen}
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        dim = len(next(iter(templates.values()))[0].embedding)
        with Gallery.open(Path(tmp), model_id, dim, accept_threshold=accept, margin=margin) as gallery:
            for person, chosen in templates.items():
                gallery.add_resident_with_faces(person, np.stack([s.embedding for s in chosen]))
            for pop in ("east_asian", "other"):
                genuine = [s for s in samples if population(s) == pop and s.person in templates and id(s) not in used]
                strangers = [s for s in samples if population(s) == pop and s.person not in enrolled_set]
                right, wrong = _score(gallery, genuine)
                s_right, s_wrong = _score(gallery, strangers)
                out.append(PopulationResult(pop, right, len(genuine), wrong, s_right + s_wrong, len(strangers)))
    return out


def _score(gallery: Gallery, probes: Sequence[Sample]) -> tuple[int, int]:
    """(matched to the right person, matched to somebody else); no face counts as unknown."""
    with_face = [s for s in probes if s.embedding is not None]
    if not with_face:
        return 0, 0
    matches = gallery.identify(np.stack([s.embedding for s in with_face]))
    right = sum(m is not None and m.name == s.person for s, m in zip(with_face, matches, strict=True))
    wrong = sum(m is not None and m.name != s.person for s, m in zip(with_face, matches, strict=True))
    return right, wrong


def two_fold_open_set(samples: Sequence[Sample], model_id: str, accept: float, margin: float) -> OpenSetResult:
    """Both halves take a turn as the enrolled residents; counts are pooled."""
    a, b = split_people(samples)
    r1 = open_set(samples, a, model_id, accept, margin)
    r2 = open_set(samples, b, model_id, accept, margin)
    g, i = r1.genuine + r2.genuine, r1.impostors + r2.impostors
    return OpenSetResult(
        (r1.genuine_match_rate * r1.genuine + r2.genuine_match_rate * r2.genuine) / g,
        r1.genuine_wrong + r2.genuine_wrong,
        (r1.impostor_accept_rate * r1.impostors + r2.impostor_accept_rate * r2.impostors) / i, g, i)


def open_set_scores(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the two-fold protocol without a gallery, for threshold sweeps.

    genuine rows: (best similarity, margin over the next resident, 1 if the best is the right
    person); impostor rows: (best similarity, margin). Photos without a face are genuine misses.
    """
    genuine, impostors = [], []
    for enrolled in split_people(samples):
        templates = _best_templates(samples, set(enrolled))
        names = list(templates)
        matrix = np.stack([templates[n].embedding for n in names])
        for s in samples:
            is_genuine = s.person in templates and s is not templates[s.person]
            if s.embedding is None:
                if is_genuine:
                    genuine.append((-1.0, 0.0, 0.0))
                continue
            sims = matrix @ s.embedding
            order = np.argsort(-sims)
            best, margin = sims[order[0]], sims[order[0]] - (sims[order[1]] if len(order) > 1 else -1.0)
            if is_genuine:
                genuine.append((best, margin, float(names[order[0]] == s.person)))
            elif s.person not in enrolled:
                impostors.append((best, margin))
    return np.array(genuine, np.float64).reshape(-1, 3), np.array(impostors, np.float64).reshape(-1, 2)


def calibrate(samples: Sequence[Sample], max_far: float = 0.01) -> tuple[float, float, float]:
    """(threshold, margin, match rate): the best genuine match rate with impostor accepts <= max_far."""
    genuine, impostors = open_set_scores(samples)
    best = (1.0, 0.0, -1.0)
    for margin in (0.0, 0.01, 0.02, 0.05):
        for accept in np.arange(0.0, 1.0, 0.005):
            far = np.mean((impostors[:, 0] >= accept) & (impostors[:, 1] >= margin))
            rate = np.mean((genuine[:, 0] >= accept) & (genuine[:, 1] >= margin) & (genuine[:, 2] == 1))
            if far <= max_far and rate > best[2] + 1e-9:
                best = (round(float(accept), 3), margin, float(rate))
    return best


def main(argv: list[str] | None = None) -> int:
    from models import registry
    from vision.faces.analyzer import build_analyzer

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+",
                        default=[repo.parent / "shared/data/faces", repo.parent / "shared/data/faces_east_asian"])
    parser.add_argument("--pack", default="open")
    parser.add_argument("--embedder", type=Path, help="an ArcFace-format ONNX file instead of the pack's")
    parser.add_argument("--calibrate", action="store_true", help="search threshold/margin for FAR <= 1 %%")
    parser.add_argument("--threshold", type=float, help="accept threshold instead of the model's")
    args = parser.parse_args(argv)
    analyzer = build_analyzer(args.pack, embedder_path=args.embedder)
    if args.embedder is None:
        entry = registry.get_entry(registry.get_pack(args.pack).embedder)
        accept, margin = entry.accept_threshold, entry.margin
    else:
        from gatewatch.cli import USER_MODEL_MARGIN, USER_MODEL_THRESHOLD
        accept, margin = USER_MODEL_THRESHOLD, USER_MODEL_MARGIN
    accept = args.threshold if args.threshold is not None else accept
    print(f"model {analyzer.model_id}  (accept {accept}, margin {margin})")
    everyone: list[Sample] = []
    for root in args.data:
        start = time.perf_counter()
        samples = embed_people(analyzer, load_people(root))
        seconds = time.perf_counter() - start
        no_face = sum(s.embedding is None for s in samples)
        rank1, probes = leave_one_out_rank1(samples)
        stats = similarity_stats(samples)
        print(f"\n{root.name}: {len({s.person for s in samples})} people, {len(samples)} photos, "
              f"{no_face} without a face; {1000 * seconds / len(samples):.0f} ms/photo end to end")
        print(f"  leave-one-out rank-1: {rank1:.3f} ({probes} probes)")
        print("  cosine: genuine mean {genuine_mean:.3f}, impostor mean {impostor_mean:.3f}, "
              "impostor p99 {impostor_p99:.3f}, impostor max {impostor_max:.3f}".format(**stats))
        if args.calibrate:
            accept, margin, rate = calibrate(samples)
            print(f"  calibrated here (impostor accepts <= 1 %): accept {accept}, margin {margin} "
                  f"-> match rate {rate:.3f}")
        result = two_fold_open_set(samples, analyzer.model_id, accept, margin)
        print(f"  open set (accept {accept}, margin {margin}): enrolled matched {result.genuine_match_rate:.3f} "
              f"of {result.genuine} ({result.genuine_wrong} to a wrong person); never-enrolled accepted "
              f"{result.impostor_accept_rate:.3f} of {result.impostors}")
        everyone += samples
    tuning = sorted({s.person for s in everyone} - set(HELD_OUT))
    for label, people in (("held-out people", HELD_OUT), ("tuning people", tuning)):
        print(f"\n{label} enrolled from their first photos (fused), everyone else a stranger:")
        for photos in (1, 2, 3):
            for r in held_out_by_population(everyone, analyzer.model_id, accept, margin, photos, people):
                print(f"  {photos} photo(s), {r.population:10s}: residents let in {r.matched}/{r.genuine} "
                      f"({r.matched / max(r.genuine, 1):.2f}, {r.wrong} as someone else); strangers let in "
                      f"{r.strangers_accepted}/{r.strangers}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
