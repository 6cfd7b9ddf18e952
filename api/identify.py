"""Who is in a photo: every face, with its match if any. For operators; it opens nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from api.auth import AdminKey
from api.errors import AUTHENTICATED, ApiError, responses
from api.schemas import API_PREFIX, FaceFound, Identified, MatchOut
from api.services import Services, ServicesDep
from api.uploads import read_image
from vision.images import ImageError, decode_image


def _identify(services: Services, data: bytes) -> Identified:
    settings = services.settings
    image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    faces = services.analyzer.analyze(image)
    matches = services.gallery.identify(faces.embeddings)
    d = faces.detections
    return Identified(faces=[
        FaceFound(box=[round(float(v), 1) for v in d.boxes[i]], score=round(float(d.scores[i]), 4),
                  landmarks=[[round(float(x), 1), round(float(y), 1)] for x, y in d.landmarks[i]],
                  match=None if m is None else MatchOut(resident_id=m.resident_id, name=m.name,
                                                        similarity=round(m.similarity, 4)))
        for i, m in enumerate(matches)])


router = APIRouter(prefix=API_PREFIX, tags=["identify"], responses=responses(*AUTHENTICATED))


@router.post("/identify", response_model=Identified, responses=responses(413, 415),
             summary="Every face in a photo and who it is")
async def identify(services: ServicesDep, _: AdminKey,
                   file: Annotated[UploadFile, File(description="a photo")]) -> Identified:
    data = await read_image(file, services.settings.max_upload_bytes)
    try:
        return await services.face_work(_identify, services, data)
    except ImageError as exc:
        raise ApiError(422, str(exc), reason="bad_image") from None
