"""Request and response bodies of the API: what the OpenAPI document promises."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from gates.access import DecisionKind, Reason
from gates.alerts import Severity, SourceType
from gates.alerts import Status as AlertStatus
from gates.rules import PersonKind
from gates.service_store import CameraEventType, GateKind, Role
from vision.cameras import CameraConfig

API_PREFIX = "/api/v1"
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
# No control characters: a NUL would end the text for SQLite's own checks, others garble logs.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200,
                                        pattern=r"^[^\x00-\x1f\x7f]+$")]
Day = Annotated[int, Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")]


def _plausible_instant(moment: datetime) -> datetime:
    """Years outside 1970-9998 are typos, and near the ends of the calendar a time zone shift
    overflows; refusing them here keeps them out of the database's sortable text form."""
    if not 1970 <= moment.year <= 9998:
        raise ValueError("must be between the years 1970 and 9998")
    return moment


Instant = Annotated[AwareDatetime, AfterValidator(_plausible_instant)]


class Strict(BaseModel):
    """Request bodies: an unknown field is a typo to report, not something to drop silently."""

    model_config = ConfigDict(extra="forbid")


# --- keys ---------------------------------------------------------------------------------------

class KeyCreate(Strict):
    role: Role
    gate_id: Id | None = Field(None, description="required for, and only for, role gate")
    label: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = Field(
        None, description="who holds the key; recorded with the alerts they acknowledge and resolve")

    @model_validator(mode="after")
    def _gate_for_gate_keys(self) -> KeyCreate:
        if (self.role == "gate") != (self.gate_id is not None):
            raise ValueError("gate_id is required for a gate key and not allowed for other roles")
        return self


class KeyOut(BaseModel):
    id: int
    role: Role
    gate_id: int | None
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: str
    label: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself; shown only in this response")


# --- gates --------------------------------------------------------------------------------------

class GateCreate(Strict):
    name: Name
    building: Name | None = None
    kind: GateKind


class GateOut(BaseModel):
    id: int
    name: str
    building: str | None
    kind: GateKind
    created_at: str


class GateCreated(GateOut):
    api_key: str = Field(description="the gate controller's key; shown only in this response")


# --- residents, visitors, blocked faces ---------------------------------------------------------

class Window(Strict):
    days: list[Day] = Field(min_length=1, max_length=7)
    start: time = Field(description="local time of the compound, HH:MM")
    end: time = Field(description="after start; split a window past midnight in two")

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("window times are the compound's local time, without an offset")
        return value


class ResidentCreate(Strict):
    name: Name
    unit: Name | None = None
    kind: PersonKind = Field("resident", description="visitor: a pass; blocked: never unlocks, alerts")
    allowed_gates: list[Id] | None = Field(None, max_length=1000, description="null: every gate")
    schedule: list[Window] = Field([], max_length=50, description="empty: at any time")
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    entries_left: int | None = Field(None, ge=0, le=1_000_000, description="visitor passes: entries left")


class ResidentPatch(Strict):
    """Fields sent replace the stored ones; fields left out are kept."""

    name: Name | None = None
    unit: Name | None = None
    kind: PersonKind | None = None
    allowed_gates: list[Id] | None = Field(None, max_length=1000)
    schedule: list[Window] | None = Field(None, max_length=50)
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    entries_left: int | None = Field(None, ge=0, le=1_000_000)


class FaceOut(BaseModel):
    face_id: int
    quality: float | None
    source: str | None
    note: str | None = Field(description="the photo's weaknesses, or the quality problems an operator overrode")
    learned_from_event: int | None = Field(description="the access event a gate camera learned it from; "
                                                       "null: enrolled by an operator")
    created_at: str


class TemplateStrengthOut(BaseModel):
    enrolled: int
    good: int = Field(description="enrolled photos without a weakness or override")
    learned: int
    weak: bool = Field(description="fewer than 2 good photos: likely to be turned away at the gate")
    advice: str | None


class ResidentOut(BaseModel):
    id: int
    name: str
    unit: str | None
    kind: PersonKind
    allowed_gates: list[int] | None
    schedule: list[Window]
    valid_from: str | None
    valid_until: str | None
    entries_left: int | None
    face_ids: list[int]
    created_at: str
    templates: TemplateStrengthOut


class Quality(BaseModel):
    score: float
    face_px: float
    sharpness: float
    yaw: float
    roll_deg: float


class FaceCreated(BaseModel):
    face_id: int
    quality: Quality
    note: str | None
    templates: TemplateStrengthOut


class LearnedRemoved(BaseModel):
    removed_face_ids: list[int]
    templates: TemplateStrengthOut


# --- the gate -----------------------------------------------------------------------------------

class ResidentRef(BaseModel):
    id: int
    name: str


class AccessDecision(BaseModel):
    decision: DecisionKind
    reason: Reason
    resident: ResidentRef | None
    similarity: float | None
    event_id: int | None = Field(description="null only if even the event could not be stored")


class MatchOut(BaseModel):
    resident_id: int
    name: str
    similarity: float


class FaceFound(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels")
    score: float
    landmarks: list[list[float]] = Field(description="five (x, y) points: eyes, nose, mouth corners")
    match: MatchOut | None


class Identified(BaseModel):
    faces: list[FaceFound]


# --- record and health --------------------------------------------------------------------------

class EventOut(BaseModel):
    id: int
    at: str
    gate_id: int
    decision: DecisionKind
    reason: Reason
    resident_id: int | None
    resident_name: str | None
    similarity: float | None
    latency_ms: float
    alert: bool
    crop_url: str | None = Field(description="the stored face crop, when crop retention is on")
    camera_id: str | None = Field(description="the camera whose video was decided on; null: a photo sent to "
                                              "the access endpoint")
    liveness: float | None = Field(description="probability that the face was a live person (null: not checked)")
    alert_id: int | None = Field(None, description="the alert this raised or updated (GET /alerts/{id})")


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = Field(description="pass as cursor for older events; null at the end")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    model_id: str
    models_loaded: bool
    gallery_templates: int
    db_ok: bool
    liveness: Literal["ok", "unavailable", "off"] = Field(
        description="unavailable: no liveness model could be loaded; with the setting liveness=required every "
                    "gate decision is then a deny (and status is degraded)")
    cameras: int = Field(description="gate and door cameras running")
    cameras_online: int


# --- cameras and the gate controller's command stream -------------------------------------------

class CameraStatus(BaseModel):
    """The runtime's `CameraStats` of a running camera (fields it has beyond these are not shown)."""

    running: bool = Field(description="false until the camera's reader runs")
    online: bool | None = Field(None, description="null until the first connection attempt has ended")
    fps: float = 0.0
    decode_ms: float = 0.0
    frames_decoded: int = 0
    frames_dropped: int = 0
    frames_stale: int = 0
    frames_processed: int = 0
    disconnects: int = 0
    decisions: int = Field(0, description="gate decisions made, or throws seen by a facade camera")
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


class CameraOut(CameraConfig):
    status: CameraStatus


class CameraEventOut(BaseModel):
    id: int
    at: str
    camera_id: str
    gate_id: int | None
    type: CameraEventType
    reason: str
    alert: bool = Field(description="true when a camera went offline")
    alert_id: int | None = Field(None, description="the alert this raised or updated (GET /alerts/{id})")


class CameraEventPage(BaseModel):
    events: list[CameraEventOut]
    next_cursor: str | None


class UnlockCommand(BaseModel):
    """What a gate controller receives for every unlock decided from its cameras' video; the event
    is committed before this is sent."""

    event_id: int
    gate_id: int
    at: str = Field(description="decision time, UTC; a controller should ignore an unlock a few seconds old")
    camera_id: str
    resident: ResidentRef
    similarity: float | None
    liveness: float | None


# --- throws seen by facade cameras -------------------------------------------------------------

class ThrowOut(BaseModel):
    """A throw from the facade: every one is an alert. `image_url`: the trajectory drawn over the
    facade, what a guard looks at first; `clip_url`: the video with pre- and post-roll."""

    id: int
    at: str = Field(description="when the throw was detected, UTC")
    released_at: str = Field(description="when the object left the facade, UTC (extrapolated)")
    camera_id: str
    floor: int = Field(description="floor of origin, 1 = the lowest floor above the ground line")
    column: int = Field(description="window column of origin, 1 = the facade's left edge")
    floor_sigma: float = Field(description="uncertainty of the floor, in floors")
    column_sigma: float
    confidence: float
    image_url: str | None
    clip_url: str | None
    alert_id: int | None = Field(None, description="the alert this raised or updated (GET /alerts/{id})")
    alert: bool = True


class ThrowPage(BaseModel):
    throws: list[ThrowOut]
    next_cursor: str | None


# --- alerts -------------------------------------------------------------------------------------

class AlertSourceIn(Strict):
    type: SourceType
    id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class AlertCreate(Strict):
    """An alarm of another system (a smoke detector, a water sensor, an operator's phone call)."""

    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,39}$")] = Field(
        description="e.g. smoke, water_leak, operator_report; the system's own kinds are not accepted here")
    severity: Severity | None = Field(None, description="default: medium")
    source: AlertSourceIn
    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    incident: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="repeats with the same incident update the open alert instead of raising another")
    image: str | None = Field(None, max_length=8_000_000, description="a JPEG snapshot, base64")


class AlertNote(Strict):
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None


class AlertResolve(Strict):
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] = Field(
        description="what was done")


class ActorOut(BaseModel):
    key_id: int
    label: str | None


class AlertEvidence(BaseModel):
    image_url: str | None = Field(description="the snapshot sent with the alert")
    crop_url: str | None = Field(description="the face of the access event")
    trajectory_url: str | None = Field(description="a throw's trajectory over the facade")
    clip_url: str | None = Field(description="a throw's clip")


class AlertOut(BaseModel):
    id: int
    kind: str
    severity: Severity
    status: AlertStatus
    source: AlertSourceIn
    message: str
    count: int = Field(description="sightings of this incident while it was open")
    first_at: str
    last_at: str
    access_event_id: int | None
    camera_event_id: int | None
    throw_id: int | None
    evidence: AlertEvidence
    acked_at: str | None
    acked_by: ActorOut | None
    ack_note: str | None
    resolved_at: str | None
    resolved_by: ActorOut | None
    resolve_note: str | None
    seconds_to_ack: float | None
    seconds_to_resolve: float | None
    overdue: bool = Field(description="not resolved within the service's alert_overdue_min")


class AlertPage(BaseModel):
    alerts: list[AlertOut]
    next_cursor: str | None


class AlertNotice(BaseModel):
    """One alert change as the alert webhook POSTs it; `seq` is the feed's id (resume point)."""

    type: Literal["created", "updated", "acknowledged", "resolved"]
    seq: int
    at: str
    alert: AlertOut
