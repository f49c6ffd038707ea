"""Request bodies read within bounds: JSON up to 64 KB, multipart uploads file by file.

Content-Length is checked first, and the bytes that actually arrive are counted too, so a body
sent without a length (chunked) or with a false one is cut off at the same bound.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ._errors import ApiError
from ._schemas import FileProblem

__all__ = ["MAX_JSON_BYTES", "read_images", "read_json", "read_video"]

MAX_JSON_BYTES = 64 * 1024
# A non-file field of a form (ignored) and the headers of one part are small or refused.
MAX_FIELD_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
# What multipart framing may add per file (boundary, headers) beyond the files' bytes.
PART_OVERHEAD_BYTES = 4 * 1024


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "Request too large", f"{what} is limited to {limit:,} bytes.")


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ApiError(400, "Bad request", "Content-Length is not a number.") from None
    if length < 0:
        raise ApiError(400, "Bad request", "Content-Length is negative.")
    return length


async def _chunks(request: Request, limit: int, what: str) -> AsyncIterator[bytes]:
    """The body's chunks; 413 once more than `limit` bytes arrive, whatever was declared."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _too_large(what, limit)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(what, limit)
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ApiError(400, "Bad request", "The client closed the connection mid-body.") from None


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body reads as `{}`."""
    body = bytearray()
    async for chunk in _chunks(request, MAX_JSON_BYTES, "A JSON body"):
        body += chunk
    if not body.strip():
        return {}
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        # Also what keeps a web page's plain form post from reaching the API.
        raise ApiError(415, "Unsupported media type", "Send the body as application/json.")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):
        raise ApiError(400, "Malformed JSON", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Malformed JSON", "The body must be a JSON object.")
    return data


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.header_bytes = 0
        self.field = b""
        self.value = b""
        self.filename: str | None = None
        self.name = ""
        self.data = bytearray()


class _UploadParser:
    """Collects the files of a multipart body, refusing past the bounds as bytes arrive."""

    def __init__(self, boundary: bytes, *, max_files: int, max_file_bytes: int) -> None:
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.files: list[tuple[str, bytes]] = []
        self.fields: dict[str, bytes] = {}
        self.ended = False
        self._part = _Part()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_end": self._finish,
            },
        )

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finalize(self) -> None:
        self._parser.finalize()

    def _begin(self) -> None:
        self._part = _Part()

    def _count_header(self, size: int) -> None:
        self._part.header_bytes += size
        if self._part.header_bytes > MAX_PART_HEADER_BYTES:
            raise _too_large("The headers of one part", MAX_PART_HEADER_BYTES)

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._part.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._part.value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[self._part.field.lower()] = self._part.value
        self._part.field = self._part.value = b""

    def _headers_finished(self) -> None:
        disposition = self._part.headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        filename = options.get(b"filename")
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if filename is not None:
            self._part.filename = filename.decode("utf-8", "replace")
            if len(self.files) >= self.max_files:
                raise ApiError(
                    400,
                    "Images rejected",
                    [
                        FileProblem(
                            file=self._part.filename,
                            reason=f"a run holds at most {self.max_files} images",
                        )
                    ],
                )

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.data += data[start:end]
        if part.filename is not None and len(part.data) > self.max_file_bytes:
            raise ApiError(
                413,
                "Request too large",
                [
                    FileProblem(
                        file=part.filename,
                        reason=f"larger than the {self.max_file_bytes:,} bytes allowed per image",
                    )
                ],
            )
        if part.filename is None and len(part.data) > MAX_FIELD_BYTES:
            raise _too_large("A form field", MAX_FIELD_BYTES)

    def _end(self) -> None:
        part = self._part
        if part.filename is not None and (part.filename or part.data):
            # An empty file input sends a part with no name and no bytes: there is no file.
            self.files.append((part.filename, bytes(part.data)))
        elif part.filename is None and part.name:
            self.fields[part.name] = bytes(part.data)
        self._part = _Part()

    def _finish(self) -> None:
        self.ended = True


async def read_images(
    request: Request, *, max_files: int, max_file_bytes: int
) -> list[tuple[str, bytes]]:
    """The files of a multipart/form-data body, under any field name, in the order sent."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "Unsupported media type",
            "Send the images as multipart/form-data (field name 'images' or 'files').",
        )
    limit = max_files * (max_file_bytes + PART_OVERHEAD_BYTES) + MAX_FIELD_BYTES
    parser = _UploadParser(boundary, max_files=max_files, max_file_bytes=max_file_bytes)
    try:
        async for chunk in _chunks(request, limit, "An upload"):
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ApiError(400, "Malformed multipart body", "The upload could not be read.") from None
    if not parser.ended:
        raise ApiError(400, "Malformed multipart body", "The upload ended before its last part.")
    if not parser.files:
        raise ApiError(
            400, "No images", "The upload holds no file (send them as multipart/form-data files)."
        )
    return parser.files


async def read_video(request: Request, *, max_bytes: int) -> tuple[str, bytes, dict[str, str]]:
    """The one video file of a multipart/form-data body, and its text fields by name."""
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415,
            "Unsupported media type",
            "Send the video as multipart/form-data (field name 'video').",
        )
    parser = _UploadParser(boundary, max_files=1, max_file_bytes=max_bytes)
    limit = max_bytes + PART_OVERHEAD_BYTES + 4 * MAX_FIELD_BYTES
    try:
        async for chunk in _chunks(request, limit, "An upload"):
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise ApiError(400, "Malformed multipart body", "The upload could not be read.") from None
    except ApiError as exc:
        if exc.status == 400 and exc.error == "Images rejected":
            raise ApiError(400, "Video rejected", "Send one video file.") from None
        raise
    if not parser.ended:
        raise ApiError(400, "Malformed multipart body", "The upload ended before its last part.")
    if not parser.files:
        raise ApiError(400, "No video", "The upload holds no file (send it as field 'video').")
    fields = {k: v.decode("utf-8", "replace") for k, v in parser.fields.items()}
    name, data = parser.files[0]
    return name, data, fields
