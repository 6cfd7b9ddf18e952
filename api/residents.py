"""Residents, visitors and blocked faces, their access rules, and their enrolment photos."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Path, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.auth import AdminKey
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import (
    API_PREFIX,
    MAX_ID,
    FaceCreated,
    FaceOut,
    LearnedRemoved,
    Quality,
    ResidentCreate,
    ResidentOut,
    ResidentPatch,
    TemplateStrengthOut,
    Window,
)
from api.services import Services, ServicesDep
from api.uploads import read_image
from gates.enrollment import MAX_PHOTOS, EnrolmentError, EnrolmentFace, enrolment_face, template_strength
from gates.gallery import FaceTemplate
from gates.rules import AccessRule, TimeWindow
from gates.service_store import Person, UnknownGateError
from gates.store import UnknownFaceError
from vision.images import ImageError, decode_image

router = APIRouter(prefix=f"{API_PREFIX}/residents", tags=["residents"], responses=responses(*AUTHENTICATED))
ResidentId = Annotated[int, Path(ge=1, le=MAX_ID)]
FaceId = Annotated[int, Path(ge=1, le=MAX_ID)]
_PASS_FIELDS = ("valid_from", "valid_until", "entries_left")


def _strength(faces: list[FaceTemplate]) -> TemplateStrengthOut:
    strength = template_strength(faces)
    return TemplateStrengthOut(enrolled=strength.enrolled, good=strength.good, learned=strength.learned,
                               weak=strength.weak, advice=strength.advice)


def resident_out(person: Person, faces: list[FaceTemplate]) -> ResidentOut:
    rule = person.rule
    return ResidentOut(
        id=person.id, name=person.name, unit=person.unit, kind=rule.kind,
        allowed_gates=None if rule.gates is None else sorted(rule.gates),
        schedule=[Window(days=sorted(w.days), start=w.start, end=w.end) for w in rule.schedule],
        valid_from=rule.valid_from and rule.valid_from.isoformat(),
        valid_until=rule.valid_until and rule.valid_until.isoformat(),
        entries_left=rule.entries_left, face_ids=list(person.face_ids), created_at=person.created_at,
        templates=_strength(faces))


def _out(services: Services, person: Person) -> ResidentOut:
    return resident_out(person, services.gallery.faces_of(person.id))


def _rule(fields: dict) -> AccessRule:
    """The rule from request fields; an inconsistent one (a resident with a pass end, a window
    ending before it starts) is the client's mistake, reported as 422."""
    try:
        windows = tuple(TimeWindow(frozenset(w["days"]), w["start"], w["end"]) for w in fields["schedule"])
        gates = fields["allowed_gates"]
        return AccessRule(fields["kind"], None if gates is None else frozenset(gates), windows,
                          fields["valid_from"], fields["valid_until"], fields["entries_left"])
    except ValueError as exc:
        raise ApiError(422, str(exc), reason="invalid_rule") from None


def _unknown_gate(exc: UnknownGateError) -> ApiError:
    return ApiError(422, f"allowed_gates: {exc.args[0]}", reason="unknown_gate")


@router.post("", status_code=201, response_model=ResidentOut,
             summary="Add a resident, visitor or blocked face")
async def create_resident(body: ResidentCreate, services: ServicesDep, _: AdminKey) -> ResidentOut:
    rule = _rule(body.model_dump(exclude={"name", "unit"}))
    try:
        person = await run_in_threadpool(services.store.create_person, body.name, body.unit, rule)
    except UnknownGateError as exc:
        raise _unknown_gate(exc) from None
    return await run_in_threadpool(_out, services, person)


@router.get("", response_model=list[ResidentOut], summary="List residents, visitors and blocked faces")
async def list_residents(services: ServicesDep, _: AdminKey,
                         weak: Annotated[bool | None, Query(description="only those whose templates are weak "
                                                                        "(true) or not (false)")] = None,
                         ) -> list[ResidentOut]:
    def listed() -> list[ResidentOut]:
        return [_out(services, p) for p in services.store.list_people()]

    out = await run_in_threadpool(listed)
    return out if weak is None else [r for r in out if r.templates.weak == weak]


@router.get("/{resident_id}", response_model=ResidentOut, responses=responses(404), summary="One resident")
async def get_resident(resident_id: ResidentId, services: ServicesDep, _: AdminKey) -> ResidentOut:
    return await run_in_threadpool(lambda: _out(services, services.store.get_person(resident_id)))


@router.patch("/{resident_id}", response_model=ResidentOut, responses=responses(404),
              summary="Change a resident's details or access rule")
async def patch_resident(resident_id: ResidentId, body: ResidentPatch, services: ServicesDep,
                         _: AdminKey) -> ResidentOut:
    sent = body.model_fields_set
    if "name" in sent and body.name is None:
        raise ApiError(422, "name cannot be removed", reason="invalid_request")
    if "kind" in sent and body.kind is None:
        raise ApiError(422, "kind cannot be removed; use resident, visitor or blocked",
                       reason="invalid_request")
    current = await run_in_threadpool(services.store.get_person, resident_id)
    fields = resident_out(current, []).model_dump(include={"kind", "allowed_gates", "schedule", *_PASS_FIELDS})
    fields.update(valid_from=current.rule.valid_from, valid_until=current.rule.valid_until)
    if body.kind not in (None, "visitor"):
        fields.update(dict.fromkeys(_PASS_FIELDS))  # a pass ends when its holder becomes a resident
    fields.update(body.model_dump(include=sent - {"name", "unit"}))
    fields["schedule"] = fields["schedule"] or []  # null, like [], means at any time
    rule = _rule(fields)
    try:
        person = await run_in_threadpool(lambda: services.store.update_person(
            resident_id, name=body.name, unit=body.unit, clear_unit="unit" in sent and body.unit is None,
            rule=rule))
    except UnknownGateError as exc:
        raise _unknown_gate(exc) from None
    return await run_in_threadpool(_out, services, person)


@router.delete("/{resident_id}", status_code=204, responses=responses(404),
               summary="Remove a resident with their faces, rule and retained face crops")
async def delete_resident(resident_id: ResidentId, services: ServicesDep, _: AdminKey) -> None:
    await run_in_threadpool(services.gallery.remove_resident, resident_id)


def _enrolment(services: Services, data: bytes, override_quality: bool) -> EnrolmentFace:
    settings = services.settings
    with services.metrics.stage("decode"):
        image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    with services.metrics.stage("enrol_analyze"):
        return enrolment_face(services.analyzer, image, override_quality=override_quality)


def _enrolled_count(services: Services, resident_id: int) -> int:
    services.store.get_person(resident_id)  # 404 before the costly part
    return template_strength(services.gallery.faces_of(resident_id)).enrolled


@router.post("/{resident_id}/faces", status_code=201, response_model=FaceCreated,
             responses=responses(404, 409, 413, 415),
             summary="Enrol one photo of the resident (2-5 photos make a strong template)")
async def add_face(resident_id: ResidentId, services: ServicesDep, _: AdminKey,
                   file: Annotated[UploadFile, File(description="a photo: JPEG, PNG, ...; several faces: the "
                                                                "one that clearly dominates is enrolled")],
                   override_quality: Annotated[bool, Query(description="enrol a face the quality check refuses "
                                                                       "(e.g. a gate camera's snapshot); the "
                                                                       "problems are kept with the template")] = False,
                   ) -> FaceCreated:
    if await run_in_threadpool(_enrolled_count, services, resident_id) >= MAX_PHOTOS:
        raise ApiError(409, f"the resident already has {MAX_PHOTOS} enrolled photos; remove one first",
                       reason="enough_photos")
    data = await read_image(file, services.settings.max_upload_bytes)
    try:
        face = await services.face_work(_enrolment, services, data, override_quality)
    except ImageError as exc:
        raise ApiError(422, str(exc), reason="bad_image") from None
    except EnrolmentError as exc:
        raise ApiError(422, str(exc), reason=exc.reason) from None
    source = f"api:{(file.filename or 'upload')[:200]}"
    face_ids = await run_in_threadpool(services.gallery.add_faces, resident_id, face.embedding[None],
                                       [face.quality.score], [source], [face.note])
    q = face.quality
    quality = Quality(score=q.score, face_px=q.face_px, sharpness=q.sharpness, yaw=q.yaw, roll_deg=q.roll_deg)
    faces = await run_in_threadpool(services.gallery.faces_of, resident_id)
    return FaceCreated(face_id=face_ids[0], quality=quality, note=face.note, templates=_strength(faces))


@router.get("/{resident_id}/faces", response_model=list[FaceOut], responses=responses(404),
            summary="The resident's templates: enrolled photos and what gate cameras learned")
async def list_faces(resident_id: ResidentId, services: ServicesDep, _: AdminKey) -> list[FaceOut]:
    faces = await run_in_threadpool(services.gallery.faces_of, resident_id)
    return [FaceOut(face_id=f.face_id, quality=f.quality, source=f.source, note=f.note,
                    learned_from_event=f.learned_from, created_at=f.created_at) for f in faces]


@router.delete("/{resident_id}/learned-faces", response_model=LearnedRemoved, responses=responses(404),
               summary="Undo learning at the gate for one resident: remove the templates gate cameras added")
async def forget_learned(resident_id: ResidentId, services: ServicesDep, _: AdminKey) -> LearnedRemoved:
    removed = await run_in_threadpool(services.gallery.forget_learned, resident_id)
    faces = await run_in_threadpool(services.gallery.faces_of, resident_id)
    return LearnedRemoved(removed_face_ids=removed, templates=_strength(faces))


@router.delete("/{resident_id}/faces/{face_id}", status_code=204, responses=responses(404),
               summary="Remove one enrolled face")
async def delete_face(resident_id: ResidentId, face_id: FaceId, services: ServicesDep, _: AdminKey) -> None:
    person = await run_in_threadpool(services.store.get_person, resident_id)
    if face_id not in person.face_ids:
        raise UnknownFaceError(face_id)
    await run_in_threadpool(services.gallery.remove_face, face_id)
