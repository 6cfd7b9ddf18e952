"""Camera configuration, validated when it is loaded rather than when a frame first needs it.

A camera file describes one physical camera: where its frames come from and what job it does
(``role``). Role-specific settings live in their own sub-models so a gate camera stays three lines
long while a facade camera carries its calibration. Validation happens here, at load, so a typo
in a homography is reported with the file name and field, not as a crash an hour into a night.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Role = Literal["gate", "door", "facade"]
ZoneKind = Literal["tree", "road", "sky", "other"]
Playback = Literal["realtime", "every_frame"]
# A camera id names its file in the service's cameras/ folder and labels its metrics: no paths, no spaces.
CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
CAMERA_FILE_SUFFIX = ".yaml"
CAMERA_FOLDER = "cameras"  # of the gate service's data dir: one <id>.yaml per camera


class CameraConfigError(ValueError):
    """A camera file that cannot be used; the message names the file and the offending field."""


class _Strict(BaseModel):
    # Unknown keys are errors: a misspelt `homograpy:` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaskZone(_Strict):
    """An image region whose motion is never a throw (swaying trees, the road, open sky).

    Points are image pixels of the camera's native resolution (``FacadeSettings.image_size``).
    """

    kind: ZoneKind = "other"
    name: str | None = None
    polygon: list[tuple[float, float]] = Field(min_length=3)


class FacadeSettings(_Strict):
    """Calibration of a camera watching a tower facade.

    ``homography`` maps facade coordinates (u = columns from the facade's left edge, v = floors
    from the ground line, both continuous) to image pixels. ``image_size`` is the resolution the
    homography was measured at; frames of another size are handled by scaling it.
    """

    homography: list[list[float]]
    floors: int = Field(gt=0, le=300)
    columns: int = Field(gt=0, le=500)
    image_size: tuple[int, int] | None = None
    mask_zones: list[MaskZone] = Field(default_factory=list)

    @field_validator("homography")
    @classmethod
    def _check_homography(cls, value: list[list[float]]) -> list[list[float]]:
        matrix = np.asarray(value, dtype=np.float64)
        if matrix.shape != (3, 3):
            raise ValueError(f"homography must be 3x3, got shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("homography has non-finite entries")
        # Conditioning, not just det != 0: a nearly singular H maps whole floors onto one pixel row.
        if np.linalg.cond(matrix) > 1e12 or abs(np.linalg.det(matrix)) < 1e-12:
            raise ValueError("homography is singular (not invertible)")
        return [[float(x) for x in row] for row in matrix]

    @field_validator("image_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] <= 0 or value[1] <= 0):
            raise ValueError(f"image_size must be positive [width, height], got {list(value)}")
        return value

    @property
    def homography_matrix(self) -> np.ndarray:
        return np.asarray(self.homography, dtype=np.float64)


class CameraConfig(_Strict):
    """One camera. ``source`` is a file path, a stream URL or a device index as text.

    ``gate_id`` is the gate service's id of the gate or door a gate/door camera opens (the service
    requires it; offline analysis does not). ``playback`` only concerns video-file sources:
    ``realtime`` plays the file at its frame rate like the camera it was recorded from (frames are
    skipped when processing is slower), ``every_frame`` hands every frame to the analysis (replays
    and tests, where a skipped frame would make the result depend on the machine's load).
    """

    id: str = Field(pattern=CAMERA_ID_PATTERN, description="letters, digits, '_', '.', '-'; at most 64")
    role: Role
    source: str = Field(min_length=1, max_length=2000)
    gate_id: int | None = Field(None, ge=1, le=2**63 - 1)
    playback: Playback = "realtime"
    facade: FacadeSettings | None = None

    @field_validator("source", mode="before")
    @classmethod
    def _source_as_text(cls, value: object) -> object:
        # YAML reads `source: 0` as an int; a device index is still a source.
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _role_settings(self) -> CameraConfig:
        if self.role == "facade" and self.facade is None:
            raise ValueError("role 'facade' needs a 'facade:' section (homography, floors, columns)")
        if self.role != "facade" and self.facade is not None:
            raise ValueError(f"a 'facade:' section only makes sense for role 'facade', not {self.role!r}")
        if self.role == "facade" and self.gate_id is not None:
            raise ValueError("gate_id is for gate/door cameras, not role 'facade'")
        return self


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def load_camera(path: str | Path) -> CameraConfig:
    """Read and validate a camera YAML file; raise CameraConfigError with a readable message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CameraConfigError(f"camera file {path}: cannot read ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CameraConfigError(f"camera file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CameraConfigError(
            f"camera file {path}: expected a mapping of settings, got {type(data).__name__}"
        )
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as exc:
        raise CameraConfigError(f"camera file {path} is invalid:\n{_format_errors(exc)}") from exc


def dump_camera(config: CameraConfig) -> str:
    """YAML text for a camera; the generator, the service and tests write camera files with it."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                          sort_keys=False)


def camera_file(folder: Path, camera_id: str) -> Path:
    return folder / f"{camera_id}{CAMERA_FILE_SUFFIX}"


def load_camera_folder(folder: str | Path) -> list[CameraConfig]:
    """Every camera file of a folder (``<id>.yaml``), sorted by id. The file name must be the
    camera's id, so two files can never claim one camera and the service knows which file to
    rewrite when the camera is edited. Raises CameraConfigError naming the first bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cameras = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix != CAMERA_FILE_SUFFIX:
            continue  # editor backups, the service's temporary files
        camera = load_camera(path)
        if camera.id != path.stem:
            raise CameraConfigError(f"camera file {path}: its id is {camera.id!r}; name the file "
                                    f"{camera.id}{CAMERA_FILE_SUFFIX} (one file per camera, named by id)")
        cameras.append(camera)
    return cameras


def save_camera(folder: str | Path, config: CameraConfig) -> Path:
    """Writes ``<id>.yaml`` atomically (temporary file, then rename): a crash mid-write leaves the
    old file or the new one, never half a camera that would stop the next start."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = camera_file(folder, config.id)
    temporary = folder / f".{config.id}.tmp"
    temporary.write_text(dump_camera(config), encoding="utf-8")
    temporary.replace(path)
    return path
