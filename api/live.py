"""The service's live cameras: configuration, the gate runtime, and what a decision from video does.

Cameras are files, one per camera, in `DATA_DIR/cameras/<id>.yaml` (the format `gatewatch analyze
--camera` reads). They are validated at start (a bad file stops the service, naming the file) and
edited through the API, which rewrites the file and starts, restarts or stops the camera's reader;
so the folder is always what runs, and what runs after a restart.

A decision from video goes the way of a photo sent to the access endpoint: the resident's rules
(`gates.access.decide`), one committed record (a visitor's entry spent, a blocked face or a spoof
raised as an alert), and only then the unlock, to the gate's command streams and the webhook. Any
error on the way is a deny. A camera going offline or online is recorded for guards.

Facade cameras run their own thread each (vision/streams/facade_runtime.py): every throw they see is
recorded as an alert with its floor, column and evidence files (DATA_DIR/evidence/).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from api.delivery import CommandHub
from api.metrics import Metrics
from api.schemas import ResidentRef, UnlockCommand
from api.settings import Settings
from api.webhook import WebhookSender
from gates.access import ERROR, LIVENESS_UNAVAILABLE, Verdict, decide
from gates.alerts import AlertStore, NewAlert, Source, access_alert, camera_offline_alert
from gates.gallery import Gallery
from gates.learning import LearningPolicy, Pass, learn_from_pass
from gates.service_store import ServiceStore, UnknownGateError, utc_text
from vision.cameras import CAMERA_FOLDER, CameraConfig, camera_file, load_camera_folder, save_camera
from vision.faces.analyzer import FaceAnalyzer
from vision.faces.liveness import LivenessChecker
from vision.faces.tracks import GateDecision
from vision.images import face_crop_jpeg
from vision.streams.facade_runtime import FacadeWatch
from vision.streams.gate_runtime import GATE_ROLES, GateRuntime
from vision.streams.readers import CameraEvent, check_source
from vision.streams.stats import CameraStats
from vision.throws import ThrowEvent

log = logging.getLogger(__name__)

LivenessState = Literal["ok", "unavailable", "off"]


class CameraError(ValueError):
    """A camera the service cannot take; `reason` is the API's reason code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DuplicateCameraError(CameraError):
    def __init__(self, camera_id: str) -> None:
        super().__init__(f"a camera with id {camera_id!r} exists already", "duplicate")


class UnknownCameraError(KeyError):
    pass


class CameraInUseError(ValueError):
    """A gate that cameras still open cannot be deleted: their files would stop the next start."""


@dataclass(frozen=True)
class AccessNotice:
    """A gate decision once it is on record (from video or the photo endpoint), for listeners such as
    the MQTT bridge; never any face data."""

    gate_id: int
    camera_id: str | None
    decision: str
    reason: str
    resident_id: int | None
    resident_name: str | None
    similarity: float | None
    event_id: int
    at: str


AccessListener = Callable[[AccessNotice], None]
CameraStatusListener = Callable[[str, Literal["online", "offline"]], None]


class LiveGates:
    def __init__(self, settings: Settings, store: ServiceStore, gallery: Gallery, analyzer: FaceAnalyzer,
                 metrics: Metrics, liveness: LivenessChecker | None, liveness_state: LivenessState,
                 alerts: AlertStore) -> None:
        self.settings = settings
        self.alerts = alerts
        self.store = store
        self.gallery = gallery
        self.metrics = metrics
        self.learning = (None if not settings.learn_at_gate else LearningPolicy(
            settings.learn_threshold if settings.learn_threshold is not None else gallery.accept_threshold + 0.005,
            keep=settings.learn_keep))
        self.liveness_state = liveness_state
        self.folder = settings.data_dir / CAMERA_FOLDER
        self.commands = CommandHub()
        secret = settings.unlock_webhook_secret
        self.webhook = (None if settings.unlock_webhook_url is None or secret is None else
                        WebhookSender(str(settings.unlock_webhook_url), secret.get_secret_value().encode()))
        self._lock = threading.Lock()
        self._cameras = {c.id: c for c in load_camera_folder(self.folder)}
        for camera in self._cameras.values():
            try:
                self._check(camera)
            except CameraError as exc:
                raise CameraError(f"camera file {camera_file(self.folder, camera.id)}: {exc}", exc.reason) from None
        self.runtime = GateRuntime([c for c in self._cameras.values() if c.role in GATE_ROLES], analyzer,
                                   gallery.identify, on_decision=self._on_decision,
                                   on_camera_event=self._on_camera_event, liveness=liveness,
                                   workers=settings.gate_workers)
        self._facades = {c.id: self._facade(c) for c in self._cameras.values() if c.role == "facade"}
        self._started = False
        # Told of every recorded gate decision and every camera going offline or online (the MQTT
        # bridge); called on the deciding thread, their failures logged, never stopping a decision.
        self.on_access: list[AccessListener] = []
        self.on_camera_status: list[CameraStatusListener] = []
        metrics.watch_cameras(lambda: list(self.stats().values()))

    @property
    def refuses_all(self) -> bool:
        """Liveness is required and no model could be loaded: every gate decision is a deny."""
        return self.settings.liveness == "required" and self.liveness_state == "unavailable"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """`loop`: the server's event loop, where the command streams are served."""
        self.commands.bind(loop)
        if self.webhook is not None:
            self.webhook.start()
        self.runtime.start()
        with self._lock:
            self._started = True
            for watch in self._facades.values():
                watch.start()

    def stop(self) -> None:
        """Cameras first (no more decisions), then the deliveries; open streams are ended."""
        self.runtime.stop()
        with self._lock:
            watches, self._facades = list(self._facades.values()), {}
        for watch in watches:
            watch.stop()
        if self.webhook is not None:
            self.webhook.stop()
        self.commands.close()

    # --- configuration ---------------------------------------------------------------------------

    def cameras(self) -> list[CameraConfig]:
        with self._lock:
            return sorted(self._cameras.values(), key=lambda c: c.id)

    def camera(self, camera_id: str) -> CameraConfig:
        with self._lock:
            if camera_id not in self._cameras:
                raise UnknownCameraError(f"no camera with id {camera_id!r}")
            return self._cameras[camera_id]

    def stats(self) -> dict[str, CameraStats]:
        with self._lock:
            facades = [watch.stats() for watch in self._facades.values()]
        return {s.camera_id: s for s in [*self.runtime.stats(), *facades]}

    def create(self, camera: CameraConfig) -> None:
        with self._lock:
            if camera.id in self._cameras:
                raise DuplicateCameraError(camera.id)
            self._apply(camera)

    def replace(self, camera: CameraConfig) -> None:
        with self._lock:
            if camera.id not in self._cameras:
                raise UnknownCameraError(f"no camera with id {camera.id!r}")
            self._apply(camera)

    def delete(self, camera_id: str) -> None:
        with self._lock:
            if camera_id not in self._cameras:
                raise UnknownCameraError(f"no camera with id {camera_id!r}")
            camera_file(self.folder, camera_id).unlink(missing_ok=True)
            del self._cameras[camera_id]
            self.runtime.remove(camera_id)
            self._stop_facade(camera_id)

    def delete_gate(self, gate_id: int) -> None:
        """Under the cameras' lock, so no camera can be pointed at the gate while it goes."""
        with self._lock:
            using = sorted(c.id for c in self._cameras.values() if c.gate_id == gate_id)
            if using:
                raise CameraInUseError(f"gate {gate_id} is opened by camera(s) {', '.join(using)}; delete them "
                                       "or move them to another gate first")
            self.store.delete_gate(gate_id)

    def _apply(self, camera: CameraConfig) -> None:
        """Validated, then written, then run: a camera that cannot run is neither stored nor started."""
        self._check(camera)
        save_camera(self.folder, camera)
        self._cameras[camera.id] = camera
        self._stop_facade(camera.id)
        if camera.role in GATE_ROLES:
            self.runtime.put(camera)
            return
        self.runtime.remove(camera.id)
        watch = self._facades[camera.id] = self._facade(camera)
        if self._started:
            watch.start()

    def _facade(self, camera: CameraConfig) -> FacadeWatch:
        return FacadeWatch(camera, self.settings.data_dir / "evidence",
                           on_throw=lambda event, ago: self._on_throw(camera.id, event, ago),
                           on_camera_event=self._on_camera_event)

    def _stop_facade(self, camera_id: str) -> None:
        """Under the lock; the watch's last throws are still recorded (the store has its own lock)."""
        watch = self._facades.pop(camera_id, None)
        if watch is not None:
            watch.stop()

    def _check(self, camera: CameraConfig) -> None:
        try:
            check_source(camera.id, camera.source)
        except ValueError as exc:
            raise CameraError(str(exc), "bad_source") from None
        if camera.role not in GATE_ROLES:
            return
        if camera.gate_id is None:
            raise CameraError(f"a {camera.role} camera needs gate_id: the gate it opens", "unknown_gate")
        try:
            self.store.get_gate(camera.gate_id)
        except UnknownGateError:
            raise CameraError(f"gate_id {camera.gate_id}: no gate with that id", "unknown_gate") from None

    # --- decisions and camera events (runtime threads) ------------------------------------------

    def _verdict(self, decision: GateDecision, gate_id: int, now: datetime) -> Verdict:
        if self.refuses_all:
            return LIVENESS_UNAVAILABLE
        match = decision.match
        if decision.reason not in ("matched", "unknown", "spoof"):
            return ERROR
        rule = None if match is None else self.store.rule_for(match.resident_id)
        return decide(face_found=True, matched=match is not None, rule=rule, gate_id=gate_id, now=now,
                      spoof=decision.reason == "spoof")

    def _on_decision(self, decision: GateDecision, latency_ms: float) -> None:
        with self._lock:
            camera = self._cameras.get(decision.camera_id)
        if camera is None or camera.gate_id is None:
            log.warning("decision from camera %s, which was removed meanwhile; dropped", decision.camera_id)
            return
        gate_id, match = camera.gate_id, decision.match
        now = datetime.now(self.settings.zone).astimezone(self.settings.zone)
        try:
            verdict = self._verdict(decision, gate_id, now)
        except Exception:
            log.exception("rules for camera %s's decision failed; denying", camera.id)
            verdict = ERROR
        try:
            crop = (face_crop_jpeg(decision.chip) if self.settings.retain_crops and decision.chip is not None
                    else None)
            event_id, verdict = self.store.record_access(
                at=now, gate_id=gate_id, verdict=verdict, resident_id=match and match.resident_id,
                resident_name=match and match.name, similarity=decision.similarity, latency_ms=latency_ms,
                crop_jpeg=crop, camera_id=camera.id, liveness=decision.liveness)
        except Exception:
            log.exception("recording camera %s's decision at gate %d failed; not unlocking", camera.id, gate_id)
            self.metrics.decisions.labels(str(gate_id), "deny", "error").inc()
            return
        self.metrics.decisions.labels(str(gate_id), verdict.decision, verdict.reason).inc()
        self.metrics.camera_latency.labels(camera.id).observe(latency_ms / 1000)
        self.raise_quietly(access_alert(event_id=event_id, reason=verdict.reason, gate_id=gate_id,
                                        camera_id=camera.id, resident_name=match and match.name))
        self.tell_access(AccessNotice(
            gate_id=gate_id, camera_id=camera.id, decision=verdict.decision, reason=verdict.reason,
            resident_id=match and match.resident_id, resident_name=match and match.name,
            similarity=None if decision.similarity is None else round(decision.similarity, 4), event_id=event_id,
            at=utc_text(now)))
        if verdict.unlocks and match is not None:
            self._learn(decision, match.resident_id, event_id, camera.id)
            command = UnlockCommand(event_id=event_id, gate_id=gate_id, at=utc_text(now), camera_id=camera.id,
                                    resident=ResidentRef(id=match.resident_id, name=match.name),
                                    similarity=decision.similarity, liveness=decision.liveness)
            self.commands.publish(command)
            if self.webhook is not None:
                self.webhook.send(command)

    def _learn(self, decision: GateDecision, resident_id: int, event_id: int, camera_id: str) -> None:
        """After the unlock is on record; a failure here costs the lesson, never the unlock."""
        if self.learning is None or decision.embedding is None or decision.similarity is None:
            return
        try:
            lesson = learn_from_pass(self.gallery, self.learning, Pass(
                resident_id, decision.embedding, decision.similarity, decision.votes, decision.liveness,
                event_id, camera_id))
        except Exception:
            log.exception("learning from access event %d failed", event_id)
            return
        self.metrics.learned.labels("learned" if lesson.learned else "not_certain").inc()
        if lesson.learned:
            log.info("learned face %d for resident %d from access event %d", lesson.face_id, resident_id, event_id)

    def _on_camera_event(self, event: CameraEvent) -> None:
        with self._lock:
            camera = self._cameras.get(event.camera_id)
        gate_id = None if camera is None else camera.gate_id
        self.metrics.camera_events.labels(event.camera_id, event.type).inc()
        at = datetime.fromtimestamp(event.time, UTC)
        try:
            record = self.store.record_camera_event(at=at, camera_id=event.camera_id, gate_id=gate_id,
                                                    type=event.type, reason=event.reason)
        except Exception:
            # The store already waited out its busy timeout; the log is the last record left.
            log.exception("could not record %s of camera %s (%s) at %s", event.type, event.camera_id,
                          event.reason, at.isoformat())
            return
        status = "offline" if event.type == "camera_offline" else "online"
        for listener in list(self.on_camera_status):
            try:
                listener(event.camera_id, status)
            except Exception:
                log.exception("a camera status listener failed on camera %s going %s", event.camera_id, status)
        if event.type == "camera_offline":
            self.raise_quietly(camera_offline_alert(event.camera_id, event.reason, record.id), at)
        else:
            try:
                self.alerts.note(f"camera_offline:{event.camera_id}",
                                 f"camera {event.camera_id} is back online (was dark: see count)", at)
            except Exception:
                log.exception("could not note camera %s back online on its alert", event.camera_id)

    def tell_access(self, notice: AccessNotice) -> None:
        """Tells the `on_access` listeners of a recorded decision; a failure is logged, never raised."""
        for listener in list(self.on_access):
            try:
                listener(notice)
            except Exception:
                log.exception("an access listener failed on access event %d", notice.event_id)

    def raise_quietly(self, new: NewAlert | None, at: datetime | None = None) -> None:
        """Raises `new` (None: nothing to raise); a failure is logged, never lost silently, and never
        stops the decision that raised it."""
        if new is None:
            return
        try:
            self.alerts.raise_alert(new, at)
        except Exception:
            log.exception("could not raise a %s alert from %s %s: %s", new.kind, new.source.type, new.source.id,
                          new.message)

    def _on_throw(self, camera_id: str, event: ThrowEvent, released_s_ago: float) -> None:
        now = datetime.now(UTC)
        self.metrics.camera_events.labels(camera_id, "throw").inc()
        try:
            record = self.store.record_throw(
                at=now, released_at=now - timedelta(seconds=released_s_ago), camera_id=camera_id, floor=event.floor,
                column=event.column, confidence=event.confidence, image_path=event.image_path,
                clip_path=event.clip_path, detail=event.alert())
        except Exception:
            log.exception("could not record a throw alert of camera %s: %s", camera_id, event.alert())
            return
        self.raise_quietly(NewAlert("throw", Source("camera", camera_id),
                                    f"object thrown from floor {event.floor}, column {event.column}",
                                    throw_id=record.id), now)
