"""Latency of the gate's access endpoint for a 640x480 JPEG, as a controller sees it.

Run: `python -m benchmarks.bench_access [--requests 200] [--concurrency 1] [--liveness off]`. The service runs
in-process (TestClient: the whole ASGI app, its threadpools and SQLite with fsync, without a
network), with one resident enrolled; the probe is a real photo of that resident letterboxed to
640x480. Prints p50/p90/p99 of the end-to-end time and the per-stage times from /metrics. With
liveness on (the service's default) the probe, a press photo, may be called a spoof: the
unlocked count then says so; the timing is what matters here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.settings import Settings
from benchmarks.shared import SHARED, use_model_mirror

ADMIN = "bench-admin-key-0123456789"
FACES = SHARED / "data" / "faces"
use_model_mirror()  # the liveness pair


def letterbox_jpeg(path: Path, width: int = 640, height: int = 480) -> bytes:
    image = cv2.imread(str(path))
    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=FACES, help="folder with one sub-folder per person")
    parser.add_argument("--person", default="angelina_jolie")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--liveness", choices=("required", "off"), default="required")
    args = parser.parse_args()
    photos = sorted((args.faces / args.person).glob("*.jpg"))
    probe = letterbox_jpeg(photos[1])
    with tempfile.TemporaryDirectory() as data_dir, \
            TestClient(create_app(Settings(data_dir=Path(data_dir), admin_key=ADMIN,
                                           rate_limit_per_minute=100_000, liveness=args.liveness))) as client:
        admin = {"X-API-Key": ADMIN}
        gate = client.post("/api/v1/gates", json={"name": "bench", "kind": "main"}, headers=admin).json()
        rid = client.post("/api/v1/residents", json={"name": args.person}, headers=admin).json()["id"]
        r = client.post(f"/api/v1/residents/{rid}/faces", files={"file": ("e.jpg", photos[0].read_bytes(),
                                                                          "image/jpeg")}, headers=admin)
        r.raise_for_status()
        url, headers = f"/api/v1/gates/{gate['id']}/access", {"X-API-Key": gate["api_key"]}

        def knock(_: int) -> tuple[float, str]:
            started = time.perf_counter()
            r = client.post(url, files={"file": ("p.jpg", probe, "image/jpeg")}, headers=headers)
            r.raise_for_status()
            return (time.perf_counter() - started) * 1000, r.json()["decision"]

        for i in range(5):
            knock(i)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(knock, range(args.requests)))
        wall = time.perf_counter() - started
        metrics = client.get("/metrics").text
    times = [t for t, _ in results]
    unlocked = sum(d == "unlock" for _, d in results)
    print(f"access endpoint, 640x480 JPEG ({len(probe)} bytes), {args.requests} requests, "
          f"concurrency {args.concurrency}, liveness {args.liveness}: p50 {percentile(times, 50):.1f} ms, "
          f"p90 {percentile(times, 90):.1f} ms, p99 {percentile(times, 99):.1f} ms, "
          f"mean {statistics.fmean(times):.1f} ms, {args.requests / wall:.1f} req/s, "
          f"{unlocked}/{len(results)} unlocked")
    for family in text_string_to_metric_families(metrics):
        if family.name == "gatewatch_stage_duration_seconds":
            sums = {s.labels["stage"]: s.value for s in family.samples if s.name.endswith("_sum")}
            counts = {s.labels["stage"]: s.value for s in family.samples if s.name.endswith("_count")}
            for stage, total in sums.items():
                mean_ms = 1000 * total / counts[stage]
                print(f"  {stage:14} mean {mean_ms:7.1f} ms over {int(counts[stage])} calls")

if __name__ == "__main__":
    main()
