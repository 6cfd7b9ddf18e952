"""The `gatewatch` command: enrol residents, identify photos, manage models, analyse video."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from api.settings import DEFAULT_DATA_DIR

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Open-set thresholds for user-supplied ArcFace-format models, whose calibration we cannot know.
USER_MODEL_THRESHOLD, USER_MODEL_MARGIN = 0.35, 0.05


def _face_options(parser: argparse.ArgumentParser) -> None:
    from models.registry import DEFAULT_PACK, PACKS

    parser.add_argument("--pack", choices=sorted(PACKS), default=DEFAULT_PACK, help="model pack")
    parser.add_argument("--detector", type=Path, help="an SCRFD (insightface-format) ONNX file")
    parser.add_argument("--embedder", type=Path, help="an ArcFace-format ONNX file to embed with")
    parser.add_argument("--min-face", type=int, default=40, help="smallest face to detect, pixels")
    parser.add_argument("--threshold", type=float, help="override the model's accept threshold (cosine)")
    parser.add_argument("--margin", type=float, help="override the model's margin over the next resident")


def _open(args: argparse.Namespace, *, autosave: bool = True):
    from gates.gallery import Gallery
    from models import registry
    from vision.faces.analyzer import build_analyzer

    analyzer = build_analyzer(args.pack, min_face_size=args.min_face, detector_path=args.detector,
                              embedder_path=args.embedder)
    if args.embedder is not None:
        threshold, margin = USER_MODEL_THRESHOLD, USER_MODEL_MARGIN
    else:
        entry = registry.get_entry(registry.get_pack(args.pack).embedder)
        threshold, margin = entry.accept_threshold, entry.margin
    gallery = Gallery.open(args.data_dir, analyzer.model_id, analyzer.embedder.dim,
                           accept_threshold=args.threshold if args.threshold is not None else threshold,
                           margin=args.margin if args.margin is not None else margin, autosave=autosave)
    return analyzer, gallery


def _cmd_enroll(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from gates.enrollment import enroll_person

    root: Path = args.folder
    if not root.is_dir():
        print(f"error: {root} is not a folder (expected one sub-folder per person)", file=sys.stderr)
        return 2
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        print(f"error: {root} has no sub-folders; put each person's photos in a folder named after them",
              file=sys.stderr)
        return 2
    # The index file is written once at the end; a crash before that only costs a rebuild from SQLite.
    analyzer, gallery = _open(args, autosave=False)
    enrolled = failed = 0
    with gallery:
        for person in tqdm(people, desc="enrolling", unit="person", disable=args.quiet):
            photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            result = enroll_person(gallery, analyzer, person.name, photos)
            for problem in result.problems:
                tqdm.write(f"{problem.source}: {problem.reason}: {problem.message}", file=sys.stderr)
            if result.resident is None:
                failed += 1
                tqdm.write(f"{person.name}: not enrolled (no usable photo)", file=sys.stderr)
            else:
                enrolled += 1
        total = gallery.count_templates()
    print(f"enrolled {enrolled} people ({failed} without a usable photo); gallery holds {total} templates "
          f"of model {analyzer.model_id}")
    return 0 if enrolled or not people else 1


def _cmd_identify(args: argparse.Namespace) -> int:
    from vision.images import ImageError, load_image

    analyzer, gallery = _open(args)
    status = 0
    with gallery:
        for path in args.images:
            try:
                faces = analyzer.analyze(load_image(path))
            except ImageError as exc:
                status = 1
                record = {"image": str(path), "error": str(exc)}
                print(json.dumps(record) if args.json else f"{path}: error: {exc}", flush=True)
                continue
            matches = gallery.identify(faces.embeddings)
            out = []
            for i, match in enumerate(matches):
                out.append({
                    "box": [round(float(v), 1) for v in faces.detections.boxes[i]],
                    "score": round(float(faces.detections.scores[i]), 4),
                    "match": None if match is None else {
                        "resident_id": match.resident_id, "name": match.name,
                        "similarity": round(float(match.similarity), 4)},
                })
            if args.json:
                print(json.dumps({"image": str(path), "faces": out}), flush=True)
            else:
                names = [f["match"]["name"] if f["match"] else "unknown" for f in out] or ["no face"]
                print(f"{path}: {', '.join(names)}", flush=True)
    return status


def _cmd_models(args: argparse.Namespace) -> int:
    from models import registry

    for model_id in args.model_ids:
        registry.get_entry(model_id)  # an unknown id is an error naming the known ones
    ids = (tuple(args.model_ids) or (registry.get_pack(args.pack).model_ids if args.pack else tuple(registry.ENTRIES)))
    if args.action == "list":
        for pack in registry.PACKS.values():
            print(f"pack {pack.name}: {pack.description}\n  models: {', '.join(pack.model_ids)}")
        for model_id in ids:
            entry = registry.get_entry(model_id)
            for st in registry.status(model_id, verify=False):
                where = st.path if st.path else "missing"
                print(f"{model_id:24} {entry.kind:16} {entry.licence:11} {st.file.name}: {where}")
        return 0
    bad = 0
    for model_id in ids:
        entry = registry.get_entry(model_id)
        try:
            if args.action == "fetch":
                path = registry.resolve_onnx(entry, allow_download=True) if entry.converter else None
                for spec in entry.files:
                    registry.resolve_file(spec, allow_download=True)
                print(f"{model_id}: ready" + (f" (converted: {path})" if path else ""))
            else:
                for spec in entry.files:
                    print(f"{model_id}: {spec.name} ok ({registry.resolve_file(spec, allow_download=False)})")
        except (registry.ModelNotFoundError, registry.ModelChecksumError, OSError) as exc:
            bad += 1
            print(f"{model_id}: {exc}", file=sys.stderr)
    return 1 if bad else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.settings import SettingsError, load_settings

    try:
        settings = load_settings(data_dir=args.data_dir, host=args.host, port=args.port)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # A gate controller's open command stream must not hold a shutdown (Ctrl-C, systemd stop) forever.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    enroll = sub.add_parser("enroll", help="enrol residents from a folder with one sub-folder per person")
    enroll.add_argument("folder", type=Path)
    enroll.add_argument("--quiet", action="store_true", help="no progress bar")
    identify = sub.add_parser("identify", help="identify the faces in photos")
    identify.add_argument("images", type=Path, nargs="+")
    identify.add_argument("--json", action="store_true", help="one JSON line per image")
    for p in (enroll, identify):
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
        _face_options(p)
    enroll.set_defaults(func=_cmd_enroll)
    identify.set_defaults(func=_cmd_identify)

    models = sub.add_parser("models", help="list, fetch (download when online) or verify model files")
    models.add_argument("action", choices=["list", "fetch", "verify"])
    models.add_argument("model_ids", nargs="*", metavar="MODEL", help="only these models (ids as in list)")
    models.add_argument("--pack", help="only this pack's models")
    models.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    models.set_defaults(func=_cmd_models)

    serve = sub.add_parser("serve", help="run the gate service (HTTP API); settings also from GATEWATCH_* "
                                         "variables and gatewatch.yaml/.toml in the data dir")
    serve.add_argument("--data-dir", type=Path,
                       help=f"where the database and index live (default {DEFAULT_DATA_DIR})")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_cmd_serve)

    from gatewatch.analyze import add_analyze_arguments, run_analyze

    analyze = sub.add_parser("analyze", help="run a camera's role over a video file (facade: throw detection)")
    add_analyze_arguments(analyze)
    analyze.set_defaults(func=run_analyze)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import faiss

    # Gallery search is tiny next to the neural nets; FAISS's own thread pool only fights them.
    faiss.omp_set_num_threads(1)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
