"""Model packs as YAML files in the data dir: `<data_dir>/packs/<name>.yaml` (or `.yml`).

A compound that licenses a stronger ArcFace-format face model plugs it in with one file, no code:

```yaml
name: compound_arcface          # optional; if given it must be the file's name (without .yaml)
description: Licensed ArcFace r100 from Acme, contract 2024-17
detector: yunet_s               # a built-in detector id, or an inline detector (below)
landmarks: null                 # optional built-in landmarks id (only for alignment: dlib5)
extras: [minifasnet_v2]         # optional built-in ids fetched/verified with the pack
embedder:                       # a built-in embedder id, or an inline embedder:
  id: acme_arcface_r100         # names the weights: the gallery keeps templates per model id,
                                # so a new file needs a new id (and a re-enrolment)
  licence: Acme commercial licence, site 17
  description: ...              # optional
  file:
    name: acme_r100.onnx        # looked up in the mirror folder and the download cache by this name
    sha256: 0123...cdef         # always verified, whichever way the file is found
    path: acme_r100.onnx        # optional: relative to this YAML's folder (or absolute), tried first
    url: https://...            # optional: downloaded (verified) when downloads are allowed
    size: 261000000             # optional, informative
  input_size: 112               # the square input side; the ONNX input must be [N,3,S,S] (NCHW)
  alignment: arcface            # arcface (5-point 112 template, scaled) or dlib5
  preprocess: {channels: RGB, mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], layout: NCHW}
  dim: 128                      # the embedding size; the ONNX output must end in it
  accept_threshold: 0.5         # calibrated cosine threshold (required: no default is safe)
  margin: 0.05                  # least lead over the next resident (required)
```

An inline detector is a YuNet-format ONNX file (`format: yunet`, the only decoder gatewatch has for a
registry detector): `{id, licence, description?, format?: yunet, input_size?: 640, file: {...}}`.
`file.name` may be left out when `path` is given (it defaults to the path's file name).

Rules, checked when the folder is loaded (a bad file stops the CLI or the service at start with a
message naming the file and the field): unknown and missing fields are errors; sha256 is 64 hex
digits; a pack name or inline model id must not be a built-in pack or model id; references must be
built-in models of the right kind; an inline model id used by several files must be defined the
same way in each. When the weights are resolved (registry.resolve_onnx), the ONNX file is also
checked against `input_size` and `dim`.

`load_pack_dir(data_dir)` registers the folder's packs and their inline models in the registry's
PACKS and ENTRIES, beside the built-in ones (a name already registered from another file is
replaced: one process runs one data dir), and returns the packs it found, by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from models import registry
from models.preprocess import Preprocess

PACK_FOLDER = "packs"
PACK_SUFFIXES = (".yaml", ".yml")

ModelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class PackFileError(ValueError):
    """A pack file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSpec(_Strict):
    name: str | None = Field(None, pattern=r"^[^/\\]+$")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    path: str | None = Field(None, min_length=1)
    url: str | None = Field(None, pattern=r"^(https?|file)://")
    size: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _named(self) -> FileSpec:
        if self.name is None and self.path is None:
            raise ValueError("give the file's name (as in the mirror folder) or its path")
        return self


class PreprocessSpec(_Strict):
    channels: Literal["RGB", "BGR"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    @field_validator("std")
    @classmethod
    def _positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError("every std must be positive")
        return value


class DetectorSpec(_Strict):
    id: ModelId
    licence: str = Field(min_length=1)
    description: str = ""
    format: Literal["yunet"] = "yunet"
    input_size: int = Field(640, ge=32, le=4096)
    file: FileSpec


class EmbedderSpec(_Strict):
    id: ModelId
    licence: str = Field(min_length=1)
    description: str = ""
    file: FileSpec
    input_size: int = Field(ge=32, le=1024)
    alignment: Literal["arcface", "dlib5"] = "arcface"
    preprocess: PreprocessSpec
    dim: int = Field(ge=2, le=8192)
    accept_threshold: float = Field(ge=-1.0, le=1.0)
    margin: float = Field(ge=0.0, le=2.0)


def _inline_or_ref(value: Any) -> str:
    return "ref" if isinstance(value, str) else "inline"


class PackSpec(_Strict):
    name: ModelId | None = None
    description: str = ""
    detector: Annotated[Annotated[ModelId, Tag("ref")] | Annotated[DetectorSpec, Tag("inline")],
                        Discriminator(_inline_or_ref)]
    landmarks: ModelId | None = None
    embedder: Annotated[Annotated[ModelId, Tag("ref")] | Annotated[EmbedderSpec, Tag("inline")],
                        Discriminator(_inline_or_ref)]
    extras: tuple[ModelId, ...] = ()


def pack_dir(data_dir: Path) -> Path:
    return Path(data_dir) / PACK_FOLDER


# What this module put into the registry: name -> the pack file it came from.
_FILE_PACKS: dict[str, Path] = {}
_FILE_ENTRIES: dict[str, Path] = {}
_BUILTIN_PACKS = frozenset(registry.PACKS)
_BUILTIN_ENTRIES = frozenset(registry.ENTRIES)


def file_pack_source(name: str) -> Path | None:
    """The pack file a registered pack came from; None for a built-in pack."""
    return _FILE_PACKS.get(name)


def known_packs(from_files: Mapping[str, registry.Pack]) -> list[str]:
    """The built-in packs and those of one data dir's files (as load_pack_dir returned them)."""
    return sorted(_BUILTIN_PACKS | set(from_files))


def load_pack_dir(data_dir: Path) -> dict[str, registry.Pack]:
    """Parse `<data_dir>/packs/*.yaml`, register the packs and their inline models, return the packs."""
    folder = pack_dir(data_dir)
    if not folder.is_dir():
        return {}
    files = sorted(p for p in folder.iterdir() if p.suffix in PACK_SUFFIXES and p.is_file())
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            raise PackFileError(f"{stems[path.stem]} and {path} define the same pack {path.stem!r}; keep one")
        stems[path.stem] = path
    packs: dict[str, tuple[registry.Pack, Path]] = {}
    entries: dict[str, tuple[registry.ModelEntry, Path]] = {}
    for path in files:
        pack, inline = _load_file(path)
        packs[pack.name] = (pack, path)
        for entry in inline:
            if entry.id in entries and _comparable(entries[entry.id][0]) != _comparable(entry):
                raise PackFileError(f"{path}: model {entry.id!r} is defined differently in {entries[entry.id][1]}; "
                                    "give one of them another id")
            entries.setdefault(entry.id, (entry, path))
    for model_id, (entry, path) in entries.items():
        registry.ENTRIES[model_id] = entry
        _FILE_ENTRIES[model_id] = path
    for name, (pack, path) in packs.items():
        registry.PACKS[name] = pack
        _FILE_PACKS[name] = path
    return {name: pack for name, (pack, _) in packs.items()}


def _comparable(entry: registry.ModelEntry) -> registry.ModelEntry:
    """Two files may share an inline model when only where they declare it differs."""
    import dataclasses

    files = tuple(dataclasses.replace(f, origin=None) for f in entry.files)
    return dataclasses.replace(entry, files=files, extra={})


def _load_file(path: Path) -> tuple[registry.Pack, list[registry.ModelEntry]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PackFileError(f"{path}: cannot read it: {exc}") from None
    if not isinstance(data, Mapping):
        raise PackFileError(f"{path}: expected a mapping of pack fields (name, detector, embedder, ...)")
    try:
        spec = PackSpec.model_validate(data)
    except ValidationError as exc:
        raise PackFileError(f"{path}: invalid model pack:\n" + _describe(exc)) from None
    name = spec.name or path.stem
    if name != path.stem:
        raise PackFileError(f"{path}: name {name!r} must be the file's name ({path.stem}.yaml)")
    if name in _BUILTIN_PACKS or name in _BUILTIN_ENTRIES:
        what = "pack" if name in _BUILTIN_PACKS else "model id"
        raise PackFileError(f"{path}: name {name!r} clashes with the built-in {what} {name!r}; choose another")
    inline: list[registry.ModelEntry] = []
    detector = _reference(path, "detector", spec.detector, "detector", inline)
    embedder = _reference(path, "embedder", spec.embedder, "embedder", inline)
    landmarks = _reference(path, "landmarks", spec.landmarks, "landmarks", inline) if spec.landmarks else None
    extras = tuple(_reference(path, "extras", model_id, None, inline) for model_id in spec.extras)
    entry = inline[-1] if isinstance(spec.embedder, EmbedderSpec) else registry.ENTRIES[embedder]
    if entry.accept_threshold is None or entry.margin is None:
        raise PackFileError(f"{path}: embedder {embedder!r} has no calibrated accept_threshold/margin")
    description = spec.description or f"model pack from {path}"
    pack = registry.Pack(name, detector=detector, embedder=embedder, description=description,
                         landmarks=landmarks, extras=extras)
    return pack, inline


def _reference(path: Path, field: str, value: str | DetectorSpec | EmbedderSpec, kind: str | None,
               inline: list[registry.ModelEntry]) -> str:
    if isinstance(value, str):
        entry = registry.ENTRIES.get(value) if value in _BUILTIN_ENTRIES else None
        if entry is None:
            known = sorted(i for i in _BUILTIN_ENTRIES if kind is None or registry.ENTRIES[i].kind == kind)
            raise PackFileError(f"{path}: {field}: unknown built-in model {value!r}; known: {', '.join(known)}"
                                + (f", or an inline {field}" if field in ("detector", "embedder") else ""))
        if kind is not None and entry.kind != kind:
            raise PackFileError(f"{path}: {field}: {value!r} is of kind {entry.kind}, not {kind}")
        return value
    if value.id in _BUILTIN_ENTRIES or value.id in _BUILTIN_PACKS:
        raise PackFileError(f"{path}: {field}.id: {value.id!r} clashes with a built-in model or pack; "
                            "choose another")
    inline.append(_entry(path, field, value))
    return value.id


def _model_file(path: Path, field: str, spec: FileSpec) -> registry.ModelFile:
    local = None
    if spec.path is not None:
        local = Path(spec.path).expanduser()
        local = str(local if local.is_absolute() else (path.parent / local).resolve())
    return registry.ModelFile(spec.name or Path(spec.path or "").name, spec.sha256.lower(), spec.size,
                              url=spec.url, path=local, origin=f"{path}: {field}")


def _entry(path: Path, field: str, spec: DetectorSpec | EmbedderSpec) -> registry.ModelEntry:
    files = (_model_file(path, f"{field}.file", spec.file),)
    extra: dict[str, object] = {"pack_file": str(path)}
    description = spec.description or f"{field} of the model pack {path}"
    if isinstance(spec, DetectorSpec):
        return registry.ModelEntry(spec.id, "detector", files, spec.licence, description,
                                   preprocess=Preprocess("BGR"), input_size=spec.input_size, extra=extra)
    pre = spec.preprocess
    return registry.ModelEntry(spec.id, "embedder", files, spec.licence, description,
                               preprocess=Preprocess(pre.channels, pre.mean, pre.std, pre.layout),
                               input_size=spec.input_size, alignment=spec.alignment, dim=spec.dim,
                               accept_threshold=spec.accept_threshold, margin=spec.margin, extra=extra)


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = ".".join(str(part) for part in error["loc"] if part not in ("ref", "inline")) or "pack"
        shown = "" if error["type"] == "missing" else f"; got {error.get('input')!r}"
        lines.append(f"  {loc}: {error['msg']}{shown}")
    return "\n".join(lines)


_CHECKED: set[tuple[object, ...]] = set()


def check_onnx(entry: registry.ModelEntry, path: Path) -> None:
    """The ONNX file of a pack file's embedder takes the declared input and gives the declared dim."""
    key = (str(path), entry.files[0].sha256, entry.input_size, entry.dim, entry.preprocess)
    if entry.kind != "embedder" or key in _CHECKED:
        return
    import onnx

    where = f"{entry.extra.get('pack_file')}: embedder {entry.id!r} ({path})"
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # a protobuf that does not parse: not an ONNX file
        raise PackFileError(f"{where}: not a readable ONNX file: {exc}") from None
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise PackFileError(f"{where}: {len(inputs)} inputs and {len(graph.output)} outputs; "
                            "an embedder has one of each")
    shape = _dims(inputs[0])
    layout = entry.preprocess.layout if entry.preprocess else "NCHW"
    size = entry.input_size
    expected = [None, 3, size, size] if layout == "NCHW" else [None, size, size, 3]
    if len(shape) != 4 or any(e is not None and s is not None and s != e for s, e in zip(shape, expected,
                                                                                          strict=True)):
        raise PackFileError(f"{where}: input shape {shape} does not match input_size {size} ({layout}); "
                            f"expected {expected}")
    out = _dims(graph.output[0])
    if not out or (out[-1] is not None and out[-1] != entry.dim):
        raise PackFileError(f"{where}: output shape {out} does not end in dim {entry.dim}")
    _CHECKED.add(key)


def _dims(value: Any) -> list[int | None]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]
