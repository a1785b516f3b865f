"""Reading request bodies with hard size limits before anything parses them.

Starlette would spool an arbitrarily large multipart upload to disk before the
route sees it; here the raw body is counted while it streams in and refused
(413) as soon as it passes the limit, and only then handed to the form parser.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from crossfeed.api.exceptions import BadRequestError, PayloadTooLargeError

# Room for the multipart framing and the small form fields next to the file.
FORM_OVERHEAD_BYTES = 64 * 1024
# Small non-file form fields (filters JSON, top_k).
MAX_FIELD_BYTES = 16 * 1024


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The whole body, or :class:`PayloadTooLargeError` once it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise BadRequestError("invalid Content-Length header") from exc
        if size > limit:
            raise PayloadTooLargeError(f"request body is {size} bytes, the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body exceeds the {limit}-byte limit")
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    body = await read_capped_body(request, limit)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from exc


async def read_upload_form(
    request: Request, *, max_file_bytes: int, allowed_fields: frozenset[str]
) -> tuple[bytes, dict[str, str]]:
    """``(file bytes, other fields)`` from a multipart body with exactly one ``file`` part."""
    body = await read_capped_body(request, max_file_bytes + FORM_OVERHEAD_BYTES)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive=replay)
    # Starlette answers 400 itself when these limits are broken or the body is malformed.
    form = await buffered.form(max_files=1, max_fields=8, max_part_size=MAX_FIELD_BYTES)
    try:
        unknown = sorted(set(form.keys()) - allowed_fields - {"file"})
        if unknown:
            raise BadRequestError(f"unknown form fields: {unknown}")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequestError("multipart search needs a 'file' part holding the image")
        data = await upload.read(max_file_bytes + 1)
        if len(data) > max_file_bytes:
            raise PayloadTooLargeError(f"image exceeds the {max_file_bytes}-byte limit")
        if not data:
            raise BadRequestError("the uploaded file is empty")
        fields: dict[str, str] = {}
        for name in allowed_fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise BadRequestError(f"form field {name!r} must be a plain value, not a file")
            if value is not None:
                fields[name] = value
        return data, fields
    finally:
        await form.close()
