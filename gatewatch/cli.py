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

    # No argparse choices: a pack may also be a file of the data dir, checked once that is known (_open).
    parser.add_argument("--pack", default=DEFAULT_PACK, help=f"model pack: {', '.join(sorted(PACKS))}, or a "
                        "pack file of the data dir (<data-dir>/packs/NAME.yaml)")
    parser.add_argument("--detector", type=Path, help="an SCRFD (insightface-format) ONNX file")
    parser.add_argument("--embedder", type=Path, help="an ArcFace-format ONNX file to embed with")
    parser.add_argument("--min-face", type=int, default=40, help="smallest face to detect, pixels")
    parser.add_argument("--threshold", type=float, help="override the model's accept threshold (cosine)")
    parser.add_argument("--margin", type=float, help="override the model's margin over the next resident")


def _open(args: argparse.Namespace, *, autosave: bool = True):
    """Analyzer and gallery of args.pack (built-in or a pack file of args.data_dir). Thresholds:
    --threshold/--margin, else the data dir's service settings (gatewatch.yaml, GATEWATCH_*) when they
    are for this pack, else the pack's embedder's own."""
    from api.settings import load_settings
    from gates.gallery import Gallery
    from models import registry
    from models.pack_files import known_packs, load_pack_dir, pack_dir
    from vision.faces.analyzer import build_analyzer

    known = known_packs(load_pack_dir(args.data_dir))  # a bad pack file is an error naming it
    if args.pack not in known:
        raise ValueError(f"unknown model pack {args.pack!r}; known: {', '.join(known)} "
                         f"(pack files: {pack_dir(args.data_dir)}/<name>.yaml)")
    settings = load_settings(data_dir=args.data_dir)
    analyzer = build_analyzer(args.pack, min_face_size=args.min_face, detector_path=args.detector,
                              embedder_path=args.embedder)
    if args.embedder is not None:
        threshold, margin = USER_MODEL_THRESHOLD, USER_MODEL_MARGIN
    else:
        entry = registry.get_entry(registry.get_pack(args.pack).embedder)
        threshold, margin = entry.accept_threshold, entry.margin
        calibrated = settings.accept_threshold is not None or settings.margin is not None
        if settings.pack == args.pack:  # the settings' thresholds are calibrated for the settings' pack
            threshold = threshold if settings.accept_threshold is None else settings.accept_threshold
            margin = margin if settings.margin is None else settings.margin
        elif calibrated and (args.threshold is None or args.margin is None):
            print(f"note: the accept_threshold/margin of {args.data_dir}'s settings are for pack {settings.pack!r}, "
                  f"not {args.pack!r}; using {args.pack!r}'s own", file=sys.stderr)
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
    enrolled, failed, weak = 0, 0, []
    with gallery:
        for person in tqdm(people, desc="enrolling", unit="person", disable=args.quiet):
            photos = sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            result = enroll_person(gallery, analyzer, person.name, photos, override_quality=args.override_quality)
            for problem in result.problems:
                said = problem.message if problem.message.startswith(f"{problem.reason}:") else \
                    f"{problem.reason}: {problem.message}"
                tqdm.write(f"{problem.source}: {said}", file=sys.stderr)
            if result.resident is None:
                failed += 1
                tqdm.write(f"{person.name}: not enrolled (no usable photo)", file=sys.stderr)
                continue
            enrolled += 1
            if result.strength is not None and result.strength.weak:
                weak.append(f"{person.name} ({result.strength.advice})")
        total = gallery.count_templates()
    print(f"enrolled {enrolled} people ({failed} without a usable photo); gallery holds {total} templates "
          f"of model {analyzer.model_id}")
    if weak:
        print(f"weak templates, likely to be turned away at the gate: {len(weak)}\n  " + "\n  ".join(weak))
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
    from models.pack_files import file_pack_source, load_pack_dir

    load_pack_dir(args.data_dir)  # the data dir's pack files, beside the built-in packs
    for model_id in args.model_ids:
        registry.get_entry(model_id)  # an unknown id is an error naming the known ones
    ids = (tuple(args.model_ids) or (registry.get_pack(args.pack).model_ids if args.pack else tuple(registry.ENTRIES)))
    if args.action == "list":
        for pack in registry.PACKS.values():
            source = file_pack_source(pack.name)
            print(f"pack {pack.name}{f' (file {source})' if source else ''}: {pack.description}\n"
                  f"  models: {', '.join(pack.model_ids)}")
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from gates import calibration
    from gates.gallery import DB_NAME
    from gates.store import Store

    if not 0.0 < args.target_far < 1.0:
        print(f"error: --target-far {args.target_far} must be in (0, 1)", file=sys.stderr)
        return 2
    analyzer, gallery = _open(args)
    with gallery:
        current = (gallery.accept_threshold, gallery.margin)
        if args.folder is not None:
            folder = calibration.embed_folder(analyzer, args.folder)
            for path in folder.without_face:
                print(f"{path}: no face found; left out", file=sys.stderr)
            people, source = folder.people, f"{args.folder} ({folder.photos} photos)"
        else:
            # The residents' templates as stored (normalised; scoring normalises again, a no-op).
            residents = gallery.list_residents()
            store = Store(Path(args.data_dir) / DB_NAME)
            try:
                rows = store.embeddings_of([r.id for r in residents], analyzer.model_id)
            finally:
                store.close()
            people = {f"{r.name} (#{r.id})": rows[r.id] for r in residents if r.id in rows}
            source = f"the gallery in {args.data_dir} ({len(people)} residents with {analyzer.model_id} templates)"
    try:
        scores = calibration.score_people(people, enrol_photos=args.enrol_photos)
        result = calibration.choose_operating_point(scores, args.target_far)
    except calibration.CalibrationError as exc:
        print(f"error: {source}: {exc}", file=sys.stderr)
        return 1
    print(f"calibrating {analyzer.model_id} on {source}; target FAR {args.target_far:g}")
    for line in calibration.summary_lines(result, scores):
        print(line)
    print(f"currently in use: accept_threshold {current[0]:g}, margin {current[1]:g}")
    if result.point.threshold < current[0]:
        print("note: the chosen threshold is below the one in use: it lets in more residents, and strangers the "
              "calibration photos did not show may get in too")
    if args.plot is not None:
        calibration.plot_calibration(scores, result, args.plot,
                                     title=f"{analyzer.model_id}: target FAR {args.target_far:g}")
        print(f"plot written to {args.plot}")
    if not args.apply:
        return 0
    if not result.target_supported:
        print(f"error: not applied: these photos cannot show a FAR of {args.target_far:g} (they support "
              f"{result.far_floor:.2%} at best); add photos of more people, or ask for a target of at least "
              f"{result.far_floor:.3g}", file=sys.stderr)
        return 1
    from api.settings import SettingsError, load_settings

    try:
        pack = load_settings(data_dir=args.data_dir).pack
    except SettingsError as exc:
        print(f"error: not applied: {exc}", file=sys.stderr)
        return 2
    if args.embedder is not None or pack != args.pack:
        # The service applies accept_threshold/margin to its own pack's embedder only.
        print(f"error: not applied: the service in {args.data_dir} runs pack {pack!r}, these thresholds are for "
              f"{'the embedder ' + str(args.embedder) if args.embedder is not None else 'pack ' + repr(args.pack)}",
              file=sys.stderr)
        return 1
    try:
        path = _write_operating_point(Path(args.data_dir), result.point.threshold, result.point.margin)
    except ValueError as exc:
        print(f"error: not applied: {exc}", file=sys.stderr)
        return 2
    print(f"wrote accept_threshold: {result.point.threshold} and margin: {result.point.margin} to {path} "
          "(read by `gatewatch serve` at its next start)")
    return 0


def _write_operating_point(data_dir: Path, threshold: float, margin: float) -> Path:
    """Set accept_threshold and margin in the data dir's YAML config, keeping every other line
    (comments included) when the two keys can be replaced in place; atomically."""
    import os
    import re
    import tempfile

    import yaml

    from api.settings import CONFIG_NAMES

    found = [data_dir / name for name in CONFIG_NAMES if (data_dir / name).is_file()]
    if len(found) > 1:
        raise ValueError(f"several config files in {data_dir}: {', '.join(p.name for p in found)}; keep one")
    if found and found[0].suffix == ".toml":
        raise ValueError(f"{found[0]} is TOML, which calibrate does not rewrite; set accept_threshold = "
                         f"{threshold} and margin = {margin} in it yourself")
    path = found[0] if found else data_dir / "gatewatch.yaml"
    text = path.read_text(encoding="utf-8") if found else ""
    try:
        old = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: cannot read it: {exc}") from None
    if old is None:
        old = {}
    if not isinstance(old, dict):
        raise ValueError(f"{path}: expected a mapping of setting names to values")
    wanted = {**old, "accept_threshold": threshold, "margin": margin}
    new = text
    for key in ("accept_threshold", "margin"):
        line = f"{key}: {wanted[key]!r}"
        new, count = re.subn(rf"^{key}[ \t]*:.*$", line, new, count=1, flags=re.MULTILINE)
        if count == 0:
            new = (new if not new or new.endswith("\n") else new + "\n") + line + "\n"
    try:
        in_place = yaml.safe_load(new) == wanted
    except yaml.YAMLError:
        in_place = False
    if not in_place:  # e.g. a value spread over several lines: write the mapping itself
        new = yaml.safe_dump(wanted, sort_keys=False)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    enroll = sub.add_parser("enroll", help="enrol residents from a folder with one sub-folder per person")
    enroll.add_argument("folder", type=Path)
    enroll.add_argument("--quiet", action="store_true", help="no progress bar")
    enroll.add_argument("--override-quality", action="store_true",
                        help="enrol faces the quality check would refuse (e.g. a gate camera's snapshot); "
                             "the problems are kept with the template")
    identify = sub.add_parser("identify", help="identify the faces in photos")
    identify.add_argument("images", type=Path, nargs="+")
    identify.add_argument("--json", action="store_true", help="one JSON line per image")
    for p in (enroll, identify):
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
        _face_options(p)
    enroll.set_defaults(func=_cmd_enroll)
    identify.set_defaults(func=_cmd_identify)

    calibrate = sub.add_parser("calibrate", help="choose the accept threshold and margin for a target false-accept "
                                                 "rate from the residents' own photos")
    calibrate.add_argument("folder", type=Path, nargs="?",
                           help="one sub-folder per person; default: the residents' templates in the gallery")
    calibrate.add_argument("--target-far", type=float, default=0.001,
                           help="false-accept rate to keep within, 95 %% upper bound (default 0.001)")
    calibrate.add_argument("--enrol-photos", type=int, default=2, help="photos each resident is enrolled from")
    calibrate.add_argument("--plot", type=Path, help="write score distributions and the DET curve to this PNG")
    calibrate.add_argument("--apply", action="store_true",
                           help="write accept_threshold and margin into the data dir's gatewatch.yaml")
    calibrate.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    _face_options(calibrate)
    calibrate.set_defaults(func=_cmd_calibrate)

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
