"""The gate's endpoint: a captured face in, unlock or deny out, and the decision on record first.

Fails secure: whatever goes wrong after the upload is accepted (models, gallery, rules, the
record itself) answers deny with reason "error", never an unlock and never a 5xx the controller
might misread. An unlock is only sent once its event is committed. Liveness required without its
model is a deny with its own reason, "liveness_unavailable". Where the liveness model is
loaded, the face is checked on this one frame (the reference rule: "real" is the likeliest class)
and a photo or screen held up is a deny with reason "spoof" and an alert.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Path, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import require
from api.errors import AUTHENTICATED, ApiError, responses
from api.live import AccessNotice
from api.schemas import API_PREFIX, MAX_ID, AccessDecision, ResidentRef
from api.services import Services, ServicesDep
from api.uploads import read_image
from gates.access import ERROR, LIVENESS_UNAVAILABLE, NO_FACE, Verdict, decide
from gates.alerts import access_alert
from gates.gallery import Match
from gates.service_store import ApiKey, utc_text
from vision.images import ImageError, decode_image, face_crop_jpeg

log = logging.getLogger(__name__)
router = APIRouter(prefix=API_PREFIX, tags=["access"], responses=responses(*AUTHENTICATED))
GateId = Annotated[int, Path(ge=1, le=MAX_ID)]


@dataclass(frozen=True)
class Look:
    """What the camera showed and what the rules make of it, before it is recorded."""

    verdict: Verdict
    match: Match | None = None
    crop_jpeg: bytes | None = None
    liveness: float | None = None


def _look(services: Services, data: bytes, gate_id: int, now: datetime) -> Look:
    """Runs in the face pool. ImageError (the client's upload) propagates; so does anything else,
    which the caller turns into a deny."""
    settings, metrics = services.settings, services.metrics
    with metrics.stage("decode"):
        image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    if services.live.refuses_all:
        return Look(LIVENESS_UNAVAILABLE)
    with metrics.stage("analyze"):
        faces = services.analyzer.analyze(image, max_faces=1)  # the largest face: the one at the gate
    if len(faces) == 0:
        return Look(NO_FACE)
    liveness = None
    if services.liveness is not None:
        with metrics.stage("liveness"):
            liveness = services.liveness.check(image, faces.detections.boxes[:1])
    with metrics.stage("identify"):
        # Identified even when a spoof: the record should say whose photo was held up.
        match = services.gallery.identify(faces.embeddings[:1])[0]
        rule = None if match is None else services.store.rule_for(match.resident_id)
    verdict = decide(face_found=True, matched=match is not None, rule=rule, gate_id=gate_id, now=now,
                     spoof=liveness is not None and not bool(liveness.is_real[0]))
    crop = face_crop_jpeg(faces.chips[0]) if settings.retain_crops else None
    return Look(verdict, match, crop, None if liveness is None else round(float(liveness.real[0]), 4))


@router.post("/gates/{gate_id}/access", response_model=AccessDecision, responses=responses(404, 413, 415),
             summary="Unlock or deny for the face in a gate camera's photo")
async def access(gate_id: GateId, services: ServicesDep, key: Annotated[ApiKey, Depends(require("gate"))],
                 file: Annotated[UploadFile, File(description="the gate camera's photo")]) -> AccessDecision:
    started = time.perf_counter()
    if key.role == "gate" and key.gate_id != gate_id:
        raise ApiError(403, f"this key belongs to gate {key.gate_id}, not gate {gate_id}",
                       reason="wrong_gate")
    await run_in_threadpool(services.store.get_gate, gate_id)
    data = await read_image(file, services.settings.max_upload_bytes)
    now = datetime.now(services.settings.zone).astimezone(services.settings.zone)
    try:
        look = await services.face_work(_look, services, data, gate_id, now)
    except ImageError as exc:
        raise ApiError(422, str(exc), reason="bad_image") from None
    except Exception:
        log.exception("access decision at gate %d failed; denying", gate_id)
        look = Look(ERROR)
    match = look.match
    try:
        with services.metrics.stage("record"):
            event_id, verdict = await run_in_threadpool(
                lambda: services.store.record_access(
                    at=now, gate_id=gate_id, verdict=look.verdict, resident_id=match and match.resident_id,
                    resident_name=match and match.name, similarity=match and match.similarity,
                    latency_ms=(time.perf_counter() - started) * 1000, crop_jpeg=look.crop_jpeg,
                    liveness=look.liveness))
    except Exception:
        log.exception("recording the access decision at gate %d failed; denying", gate_id)
        event_id, verdict = None, ERROR
    services.metrics.decisions.labels(str(gate_id), verdict.decision, verdict.reason).inc()
    if event_id is not None:
        await run_in_threadpool(services.live.raise_quietly, access_alert(
            event_id=event_id, reason=verdict.reason, gate_id=gate_id, camera_id=None,
            resident_name=match and match.name))
        shown = None if verdict.reason == "error" else match
        notice = AccessNotice(gate_id=gate_id, camera_id=None, decision=verdict.decision, reason=verdict.reason,
                              resident_id=shown and shown.resident_id, resident_name=shown and shown.name,
                              similarity=None if match is None else round(match.similarity, 4), event_id=event_id,
                              at=utc_text(now))
        await run_in_threadpool(services.live.tell_access, notice)
    return AccessDecision(
        decision=verdict.decision, reason=verdict.reason, event_id=event_id,
        resident=None if match is None or verdict.reason == "error" else ResidentRef(id=match.resident_id,
                                                                                     name=match.name),
        similarity=None if match is None else round(match.similarity, 4))
