"""Exact vs approximate gallery index: build time, query latency and recall@1, side by side.

The gallery switches from exact search to IVF above `exact_limit` templates; this measures what
that costs in recall and buys in latency, on synthetic face-like data: people drawn around a few
"group" centres (the way real embeddings cluster by age, ethnicity, capture conditions), four
templates per person, probes that are fresh samples of enrolled people.

    python -m benchmarks.bench_index                   # 10k, 100k, 300k; a few minutes on 2 cores
    python -m benchmarks.bench_index --hnsw            # also HNSW, the alternative IVF was chosen over
    python -m benchmarks.bench_index --sizes 10000 --nprobe 4 128
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import faiss
import numpy as np

from gates.gallery import DEFAULT_NPROBE
from gates.index import FaceIndex, ivf_lists

DIM = 128
TEMPLATES_PER_PERSON = 4
GROUPS = 64
PERSON_SPREAD = 1.5  # cos(person, group) ~ 0.55
TEMPLATE_SPREAD = 0.9  # cos(template, person) ~ 0.74, so genuine probe-template cosine ~ 0.55
SEARCH_K = 32  # templates fetched per probe, as the gallery does


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _around(centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    return _unit(centres + spread * _unit(rng.standard_normal(centres.shape, dtype=np.float32)))


def synthetic(n: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(gallery (n, DIM), probes (queries, DIM)), all L2-normalised."""
    rng = np.random.default_rng(seed)
    groups = _unit(rng.standard_normal((GROUPS, DIM), dtype=np.float32))
    people = _around(groups[rng.integers(GROUPS, size=n // TEMPLATES_PER_PERSON)], PERSON_SPREAD, rng)
    gallery = _around(np.repeat(people, TEMPLATES_PER_PERSON, axis=0), TEMPLATE_SPREAD, rng)
    probes = _around(people[rng.integers(len(people), size=queries)], TEMPLATE_SPREAD, rng)
    return gallery, probes


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _latency_ms(search: Callable[[np.ndarray], object], probes: np.ndarray) -> float:
    """One probe per call, as at a gate: a face arrives, the door waits for the answer."""
    start = time.perf_counter()
    for probe in probes:
        search(probe[None])
    return 1000 * (time.perf_counter() - start) / len(probes)


def _row(n: int, label: str, build_s: float | None, ms: float, recall: float) -> None:
    build = "" if build_s is None else f"{build_s:.2f}"
    print(f"{n:>8} {label:<22} {build:>8} {ms:>9.3f} {recall:>9.4f}")


def measure(n: int, nprobes: list[int], hnsw: bool, queries: int, latency_queries: int) -> None:
    gallery, probes = synthetic(n, queries)
    ids = np.arange(n, dtype=np.int64)
    few = probes[:latency_queries]

    exact, build_s = _timed(lambda: FaceIndex.build("flat", DIM, ids, gallery, nprobe=1))
    _, truth = exact.search(probes, 1)
    _row(n, "exact (Flat)", build_s, _latency_ms(lambda q: exact.search(q, SEARCH_K), few), 1.0)

    ivf, build_s = _timed(lambda: FaceIndex.build("ivf", DIM, ids, gallery, nprobe=DEFAULT_NPROBE))
    for i, nprobe in enumerate(nprobes):
        ivf.nprobe = nprobe
        _, found = ivf.search(probes, 1)
        label = f"IVF{ivf_lists(n)} nprobe={nprobe}{'*' if nprobe == DEFAULT_NPROBE else ''}"
        _row(n, label, None if i else build_s,  # built once, probed several ways
             _latency_ms(lambda q: ivf.search(q, SEARCH_K), few), float(np.mean(found[:, 0] == truth[:, 0])))

    if hnsw:
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        _, build_s = _timed(lambda: index.add(gallery))
        index.hnsw.efSearch = 64
        _, found = index.search(probes, 1)
        _row(n, "HNSW32 efSearch=64", build_s, _latency_ms(lambda q: index.search(q, SEARCH_K), few),
             float(np.mean(found[:, 0] == truth[:, 0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--nprobe", type=int, nargs="+", default=sorted({8, 16, DEFAULT_NPROBE, 64}),
                        help=f"IVF lists probed per query; gallery default ({DEFAULT_NPROBE}) is starred")
    parser.add_argument("--hnsw", action="store_true", help="also measure HNSW (slow to build)")
    parser.add_argument("--threads", type=int, help="faiss (OpenMP) threads; default: all cores")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--latency-queries", type=int, default=300)
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(f"{DIM}-d, {TEMPLATES_PER_PERSON} templates/person; recall@1 = top template equals the exact one, "
          f"over {args.queries} probes; query ms = one probe per search (top-{SEARCH_K}), mean of "
          f"{args.latency_queries}; {faiss.omp_get_max_threads()} threads")
    print(f"{'N':>8} {'index':<22} {'build s':>8} {'query ms':>9} {'recall@1':>9}")
    for n in args.sizes:
        measure(n, args.nprobe, args.hnsw, args.queries, args.latency_queries)


if __name__ == "__main__":
    main()
