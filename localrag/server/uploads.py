"""Receiving uploaded files: a streaming multipart reader that writes each part straight into the
job's staging folder under the data dir, checking names and sizes as the bytes arrive.

Nothing is written outside that folder: a part's name is a relative path ("folder/sub/a.pdf"
keeps its folders) and one that is absolute, climbs with ``..``, hides itself, is not UTF-8 or is
not a document type localrag reads is refused with a 4xx before a byte of it lands. Archives are
not unpacked (a zip is an unsupported type), so there is no zip bomb to defuse. Sizes are
counted while streaming: an upload over the limit stops there (413), and the partial staging
folder is removed by the caller.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path, PurePosixPath

from localrag.server.http import ApiError

MAX_FILES = 1000
MAX_NAME_BYTES = 255
MAX_PATH_CHARS = 1024
MAX_DEPTH = 16
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_relpath(raw: bytes) -> str:
    """A part's file name as a safe relative POSIX path, or ``ApiError(400/415)`` saying why."""
    from localrag.kb.files import FILETYPES

    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "a file name is not valid UTF-8; rename the file and upload it again", "bad_filename") from None
    name = unicodedata.normalize("NFC", name.replace("\\", "/")).strip()
    shown = repr(name[:80])
    if not name:
        raise ApiError(400, "a file part has no file name", "bad_filename")
    if _CONTROL.search(name) or len(name) > MAX_PATH_CHARS:
        raise ApiError(400, f"file name {shown} has control characters or is too long", "bad_filename")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ApiError(400, f"file name {shown} is an absolute path; send a path relative to the upload", "bad_filename")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ApiError(400, f"file name {shown} climbs out of its folder ('..')", "bad_filename")
    if not parts or len(parts) > MAX_DEPTH:
        raise ApiError(400, f"file name {shown} is empty or nested too deep", "bad_filename")
    if any(p.startswith(".") for p in parts):
        raise ApiError(400, f"file name {shown} is hidden (starts with '.'); hidden files are not indexed", "bad_filename")
    if any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise ApiError(400, f"file name {shown} has a part longer than {MAX_NAME_BYTES} bytes", "bad_filename")
    suffix = PurePosixPath(parts[-1]).suffix.lower()
    if suffix and suffix not in FILETYPES:
        known = " ".join(sorted(FILETYPES))
        raise ApiError(415, f"{shown}: unsupported file type {suffix} (localrag reads {known}; archives are not unpacked)",
                       "unsupported_file_type")
    return "/".join(parts)


class StagingWriter:
    """python-multipart callbacks that write the ``files`` parts under ``dest``."""

    def __init__(self, dest: Path, *, max_total: int, max_file: int, field: str = "files"):
        self.dest = dest
        self.max_total = max_total
        self.max_file = max_file
        self.field = field
        self.files: list[str] = []
        self.total = 0
        self._headers: dict[bytes, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._fh = None
        self._size = 0
        self._skip = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin, "on_header_field": self._hfield, "on_header_value": self._hval,
            "on_header_end": self._hend, "on_headers_finished": self._headers_done, "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._hname, self._hvalue, self._size, self._skip = {}, b"", b"", 0, False

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        self._headers[self._hname.strip().lower()] = self._hvalue.strip()
        self._hname, self._hvalue = b"", b""

    def _headers_done(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        name = options.get(b"name", b"").decode("latin-1")
        if name != self.field or b"filename" not in options:
            self._skip = True  # other form fields are not ours to keep
            return
        if len(self.files) >= MAX_FILES:
            raise ApiError(413, f"too many files in one upload (at most {MAX_FILES})", "too_many_files")
        rel = safe_relpath(options[b"filename"])
        if rel in self.files:
            raise ApiError(400, f"{rel!r} appears twice in the upload", "bad_filename")
        target = self.dest.joinpath(*rel.split("/"))
        if not target.resolve().is_relative_to(self.dest.resolve()):
            raise ApiError(400, f"file name {rel!r} leaves the upload folder", "bad_filename")  # belt and braces
        target.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(target, "wb")
        self.files.append(rel)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._skip or self._fh is None:
            return
        n = end - start
        self._size += n
        self.total += n
        if self._size > self.max_file:
            raise ApiError(413, f"{self.files[-1]!r} is over the {self.max_file // 2**20} MiB limit per file", "file_too_large")
        if self.total > self.max_total:
            raise ApiError(413, f"the upload is over the {self.max_total // 2**20} MiB limit", "upload_too_large")
        self._fh.write(data[start:end])

    def _end(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())  # a staged file survives a crash right after the 202
            self._fh.close()
            self._fh = None
            if self._size == 0:
                raise ApiError(400, f"{self.files[-1]!r} is empty", "empty_file")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


async def receive(request, dest: Path, *, max_total: int, max_file: int) -> list[str]:
    """Stream a multipart/form-data body into ``dest``; the relative names written."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "send the files as multipart/form-data (field name 'files')", "bad_content_type")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_total + 1024 * 1024:
        raise ApiError(413, f"the upload is over the {max_total // 2**20} MiB limit", "upload_too_large")
    writer = StagingWriter(dest, max_total=max_total, max_file=max_file)
    parser = MultipartParser(params[b"boundary"], writer.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except (ApiError, OSError):
        raise  # an OSError is the disk's, not the body's: the caller says so
    except Exception as exc:  # python-multipart's own parse errors
        raise ApiError(400, f"malformed multipart body: {exc}", "bad_multipart") from None
    finally:
        writer.close()
    if not writer.files:
        raise ApiError(400, "no files in the upload (send them in the multipart field 'files')", "no_files")
    return writer.files
