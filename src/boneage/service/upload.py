"""Reading a multipart/form-data request body into memory, within a size limit.

Starlette's own form parser spools uploads over 1 MB to a temporary file on disk; an
uploaded radiograph must never touch the disk, so the service parses the stream itself with
python-multipart's push parser, keeping every part in memory and counting bytes as they
arrive: a body over the limit is refused (413) as soon as it crosses it, not after it has
been read whole. A body that stops arriving is refused after ``chunk_timeout`` seconds (408).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header


class ServiceError(Exception):
    """An HTTP error with one message for the client: ``{"detail": message}``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


@dataclass
class Form:
    """The parts of a multipart body: text fields by name and the one file, all in memory."""

    fields: dict[str, str] = field(default_factory=dict)
    file: bytes | None = None
    filename: str | None = None
    file_field_seen: bool = False


#: Form fields longer than this are refused: every field of the API is a short word or date.
MAX_FIELD_BYTES = 1024


def _too_large(limit: int) -> ServiceError:
    # Connection: close, because the client may still be sending the rest of the body.
    return ServiceError(413, f"request body exceeds the limit of {limit} bytes ({limit / 2**20:.1f} MiB)",
                        {"Connection": "close"})


def check_content_length(headers, limit: int) -> None:
    """413 at once when the declared Content-Length is over ``limit`` (nothing read yet)."""
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        n = int(declared)
    except ValueError:
        raise ServiceError(400, f"Content-Length must be a whole number, got {declared!r}") from None
    if n > limit:
        raise _too_large(limit)


async def read_form(request, *, limit: int, file_field: str = "file",
                    chunk_timeout: float = 30.0) -> Form:
    """Parse ``request``'s multipart body into a :class:`Form`, nothing written to disk.

    Raises:
        ServiceError: 415 for a body that is not multipart/form-data, 413 over ``limit``
            bytes (Content-Length checked first, then the bytes as they arrive), 408 when no
            data arrives for ``chunk_timeout`` seconds, 422 for a malformed body, a field over
            :data:`MAX_FIELD_BYTES` or two files.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data":
        shown = content_type.decode("latin-1") or "none"
        raise ServiceError(415, f"send the image as multipart/form-data (field {file_field!r}); "
                                f"got Content-Type {shown}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise ServiceError(422, "multipart/form-data without a boundary")
    check_content_length(request.headers, limit)

    form = Form()
    part: dict = {}

    def on_part_begin():
        part.clear()
        part.update(headers={}, name=None, filename=None, data=bytearray(), header_field=b"", header_value=b"")

    def on_header_field(data, start, end):
        part["header_field"] += data[start:end]

    def on_header_value(data, start, end):
        part["header_value"] += data[start:end]

    def on_header_end():
        part["headers"][part["header_field"].lower()] = part["header_value"]
        part["header_field"], part["header_value"] = b"", b""

    def on_headers_finished():
        _, disp = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if b"name" not in disp:
            raise ServiceError(422, "a multipart part has no name in its Content-Disposition")
        part["name"] = disp[b"name"].decode("utf-8", "replace")
        if b"filename" in disp or part["name"] == file_field:
            part["filename"] = disp.get(b"filename", b"").decode("utf-8", "replace")

    def on_part_data(data, start, end):
        buf = part["data"]
        buf += data[start:end]
        if part["filename"] is None and len(buf) > MAX_FIELD_BYTES:
            raise ServiceError(422, f"form field {part['name']!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end():
        name = part["name"]
        if part["filename"] is not None:
            if name != file_field:
                raise ServiceError(422, f"unexpected file field {name!r}; send the image as {file_field!r}")
            if form.file_field_seen:
                raise ServiceError(422, f"send one image per request; got several {file_field!r} fields")
            form.file_field_seen = True
            form.file = bytes(part["data"])
            form.filename = part["filename"]
        else:
            form.fields[name] = part["data"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
    })
    received = 0
    stream = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(chunk_timeout):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise ServiceError(408, f"the request body stopped arriving (nothing for {chunk_timeout:g} s)",
                               {"Connection": "close"}) from None
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        if chunk:
            try:
                parser.write(chunk)
            except ServiceError:
                raise
            except Exception as exc:  # python-multipart's parse errors: one line, no traceback
                raise ServiceError(422, f"malformed multipart body: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    try:
        parser.finalize()
    except Exception as exc:
        raise ServiceError(422, f"malformed multipart body: {exc}") from None
    return form
