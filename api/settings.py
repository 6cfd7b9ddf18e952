"""The service's settings: defaults that run on a fresh machine, overridden by a config file in the
data dir (gatewatch.yaml or gatewatch.toml), then by GATEWATCH_* environment variables, then by
command-line options. Validated once at start, so a typo stops the service with a message naming
the setting instead of surfacing as a wrong decision at the gate.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, HttpUrl, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from vision.cameras import CAMERA_FOLDER, CameraConfigError, load_camera_folder
from vision.images import MAX_PIXELS

# Relative to where the service (or the CLI, which takes its defaults from here) is started.
DEFAULT_DATA_DIR = Path("gatewatch-data")
CONFIG_NAMES = ("gatewatch.yaml", "gatewatch.yml", "gatewatch.toml")
MiB = 1024 * 1024
LivenessMode = Literal["required", "if_available", "off"]


class SettingsError(ValueError):
    """Settings that cannot start the service; the message lists every problem and its source."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWATCH_", extra="forbid", frozen=True)

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Validated even when not given: a bad pack file in the data dir stops the service at start.
    pack: str = Field("open", validate_default=True, description="a built-in model pack or a pack "
                      "file of the data dir (packs/<name>.yaml, models.pack_files)")
    min_face_size: int = Field(60, ge=12, le=1000, description="smallest face to detect, pixels; a face at a gate "
                               "camera is larger, and enrolment refuses faces under 60 px anyway")
    accept_threshold: float | None = Field(None, ge=-1.0, le=1.0,
                                           description="override of the pack's calibrated threshold")
    margin: float | None = Field(None, ge=0.0, le=2.0, description="override of the pack's calibrated margin")
    learn_at_gate: bool = Field(True, description="certain gate-camera passes add the camera's face to the "
                                "resident's templates (bounded, recorded, undoable; gates/learning.py)")
    learn_threshold: float | None = Field(None, ge=-1.0, le=1.0, description="least similarity of a pass, to "
                                          "the fused and to the enrolled templates, to learn from; default "
                                          "0.005 above the accept threshold")
    learn_keep: int = Field(3, ge=1, le=20, description="learned templates kept per resident, the oldest replaced")
    alert_overdue_min: float = Field(30.0, gt=0, le=7 * 24 * 60, description="an alert not resolved this many "
                                     "minutes after it was first seen is overdue")
    alert_retention_days: int = Field(90, ge=1, le=3650, description="resolved alerts are deleted this many days "
                                      "after they were last seen")
    alert_webhook_url: HttpUrl | None = Field(None, description="POSTed every alert change (signed as the unlock "
                                              "webhook, with alert_webhook_secret; retried for 10 min)")
    alert_webhook_secret: SecretStr | None = Field(None, min_length=16, validate_default=True,
                                                   description="HMAC-SHA256 key signing the alert webhook's body")
    admin_key: SecretStr | None = Field(None, description="bootstraps this admin key; else one is generated")
    max_upload_bytes: int = Field(8 * MiB, ge=1024, le=64 * MiB)
    max_pixels: int = Field(25_000_000, ge=4096, le=MAX_PIXELS)
    face_workers: int = Field(1, ge=1, le=64,
                              description="photos analysed at once; each already uses every core")
    gate_workers: int | None = Field(None, ge=1, le=64,
                                     description="threads deciding the gate cameras' frames; default one per core")
    rate_limit_per_minute: int = Field(600, ge=1, description="sustained requests per API key")
    rate_limit_burst: int = Field(100, ge=1, description="requests a key may send at once")
    retain_crops: bool = Field(False, description="store the face crop of every access event")
    timezone: str | None = Field(None, description="IANA zone of the time windows; default: the host's")
    liveness: LivenessMode = Field(
        "required", description="anti-spoofing (MiniFASNet pair) on every gate decision. required: without the "
        "model every gate decision is a deny (reason liveness_unavailable); if_available: used when the model is "
        "there, faces are accepted without it otherwise; off: never used")
    commands_keepalive_s: float = Field(15.0, ge=0.05, le=300.0,
                                        description="seconds between pings on an idle command or alert stream")
    unlock_webhook_url: HttpUrl | None = Field(None, description="POSTed every unlock decided from video")
    unlock_webhook_secret: SecretStr | None = Field(None, min_length=16, validate_default=True,
                                                    description="HMAC-SHA256 key signing the webhook's body")
    mqtt_url: str | None = Field(None, description="MQTT broker (mqtt://host:1883 or mqtts://host:8883) to publish "
                                 "alerts, gate decisions and camera status to; none: no MQTT (api/mqtt.py)")
    mqtt_username: str | None = Field(None, description="user name at the MQTT broker")
    mqtt_password: SecretStr | None = Field(None, description="password at the MQTT broker")
    mqtt_ca_file: Path | None = Field(None, description="CA certificate (PEM) the MQTT broker's TLS certificate is "
                                      "checked against; default: the system's CAs (with mqtts://)")
    mqtt_topic_prefix: str = Field("gatewatch", pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$",
                                   description="topics are <prefix>/available, /alerts, /access, "
                                   "/cameras/<id>/status")

    @field_validator("pack")
    @classmethod
    def _known_pack(cls, value: str, info: ValidationInfo) -> str:
        from models.pack_files import PackFileError, known_packs, load_pack_dir, pack_dir

        data_dir = info.data.get("data_dir")
        try:  # registers the data dir's pack files beside the built-in packs
            from_files = load_pack_dir(data_dir) if data_dir is not None else {}
        except PackFileError as exc:
            raise ValueError(f"bad model pack file: {exc}") from None
        known = known_packs(from_files)
        if value not in known:
            where = f" (pack files: {pack_dir(data_dir)}/<name>.yaml)" if data_dir is not None else ""
            raise ValueError(f"unknown model pack {value!r}; known: {', '.join(known)}{where}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r} (use an IANA name such as "
                                 "Asia/Shanghai)") from None
        return value

    @field_validator("unlock_webhook_secret")
    @classmethod
    def _webhook_is_signed(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("unlock_webhook_url") is not None:
            raise ValueError("unlock_webhook_url needs unlock_webhook_secret: an unsigned unlock could be forged")
        return value

    @field_validator("alert_webhook_secret")
    @classmethod
    def _alert_webhook_is_signed(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("alert_webhook_url") is not None:
            raise ValueError("alert_webhook_url needs alert_webhook_secret: an unsigned alert could be forged")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        try:
            url = urlsplit(value)
            url.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"not a broker URL: {exc}") from None
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ValueError("use mqtt://host[:port] or mqtts://host[:port]")
        return value

    @property
    def zone(self) -> ZoneInfo | None:
        """None: the host's local zone."""
        return ZoneInfo(self.timezone) if self.timezone else None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        data_dir = getattr(init_settings, "init_kwargs", {}).get("data_dir")
        return init_settings, env_settings, _ConfigFile(settings_cls, data_dir)


class _ConfigFile(PydanticBaseSettingsSource):
    """The config file of the data dir the other sources name (the file cannot name its own dir)."""

    def __init__(self, settings_cls: type[BaseSettings], data_dir: Path | str | None) -> None:
        super().__init__(settings_cls)
        self.data_dir = Path(data_dir or os.environ.get("GATEWATCH_DATA_DIR") or DEFAULT_DATA_DIR)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        found = [self.data_dir / name for name in CONFIG_NAMES if (self.data_dir / name).is_file()]
        if not found:
            return {}
        if len(found) > 1:
            raise SettingsError(f"several config files in {self.data_dir}: "
                                f"{', '.join(p.name for p in found)}; keep one")
        path = found[0]
        try:
            text = path.read_text(encoding="utf-8")
            values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise SettingsError(f"{path}: cannot read it: {exc}") from None
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise SettingsError(f"{path}: expected a mapping of setting names to values")
        if "data_dir" in values:
            raise SettingsError(f"{path}: data_dir cannot be set from the config file inside it")
        return values


def load_settings(**overrides: Any) -> Settings:
    """Settings from every source, or SettingsError with one line per problem; also reads the
    camera files of the data dir, so a bad one stops `gatewatch serve` here, with its name."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        load_camera_folder(settings.data_dir / CAMERA_FOLDER)
        return settings
    except CameraConfigError as exc:
        raise SettingsError(str(exc)) from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            shown = "" if "key" in name or "secret" in name else f"; got {error.get('input')!r}"
            lines.append(f"  {name}: {error['msg']} (GATEWATCH_{name.upper()} or {name} in the config file"
                         f"{shown})")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
