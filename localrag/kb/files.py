"""Walk the PATHs given to ``ingest``: which files are documents, and why the others are not.

``discover`` never raises for a problem with one file or folder: it yields ``Skipped(path, reason)``
with a one-line reason and goes on. What it skips:

* reported: nonexistent arguments, broken symlinks, symlink loops, unreadable files and folders,
  unsupported types, binary content behind a text extension, empty files, files over the size limit,
  hidden folders other than the well-known tool folders below, and names that are not UTF-8
  (POSIX allows any bytes; the path is stored and cited as text, which needs valid UTF-8).
* quiet (never documents, and listing them would drown the summary): hidden files (``.DS_Store``,
  ``.gitignore``...) and tool folders (``.git``, ``.venv``, ``node_modules``, ``__pycache__``...).
  A hidden file or folder named explicitly as an argument is taken.

Every file is visited once, however many symlinks or arguments lead to it (identity is the
(device, inode) pair). The order is deterministic: arguments in the order given, then depth-first
with entries sorted by name.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from localrag.units import format_size

DEFAULT_MAX_BYTES = 50 * 1024 * 1024

# extension -> the file type parse.py picks a reader by
FILETYPES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "rst",
    ".rest": "rst",
    ".org": "org",
    ".log": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".docm": "docx",  # macro-enabled: the text is read, the macros never run
    ".pptx": "pptx",
    ".pptm": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".odt": "odt",
    ".odp": "odp",
    ".ods": "ods",
    ".epub": "epub",
    ".eml": "eml",
    ".mbox": "mbox",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
    # source code: file + symbol as provenance (formats/structured.py)
    **{ext: "code" for ext in (
        ".py", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".go", ".rs", ".c", ".h", ".cc",
        ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".sql", ".lua", ".r",
    )},
}

# Formats read by no parser here, with the fix that makes them readable.
LEGACY: dict[str, str] = {
    ".doc": "old Word format (.doc): save it as .docx to index it",
    ".ppt": "old PowerPoint format (.ppt): save it as .pptx to index it",
    ".xls": "old Excel format (.xls): save it as .xlsx to index it",
    ".pps": "old PowerPoint show (.pps): save it as .pptx to index it",
    ".dot": "old Word template (.dot): save it as .docx to index it",
    ".xlt": "old Excel template (.xlt): save it as .xlsx to index it",
    ".rtf": "Rich Text Format (.rtf): save it as .docx or .odt to index it",
    ".msg": "Outlook message (.msg): save it as .eml to index it",
}

# zip containers (OOXML, OpenDocument, EPUB); an OLE2 header instead means encrypted or legacy
_ZIP_TYPES = {"docx", "pptx", "xlsx", "odt", "odp", "ods", "epub"}

# Folders that hold tools' state, never the user's documents: skipped without a word.
QUIET_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", ".bzr", ".venv", "venv", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
        ".ruff_cache", ".idea", ".vscode", ".cache", ".ipynb_checkpoints", "node_modules", "__pycache__",
        ".DS_Store", ".Trash", ".Trashes",
    }
)

_SNIFF_BYTES = 8192


@dataclass
class FileEntry:
    path: Path
    rel: str  # relative to root, posix separators, printable (see display_name)
    root: Path
    size: int
    filetype: str = ""  # a FILETYPES value


@dataclass
class Skipped:
    path: str
    reason: str
    # True when what the file holds is the reason (empty, too large, not what its name says), not
    # access to it: a KB that held an earlier version of it no longer should
    content: bool = False


def display_name(name: str) -> str:
    """A printable, UTF-8-encodable form of a file name.

    POSIX names are bytes; Python hands undecodable ones over as lone surrogates, which cannot
    be written to JSON, a terminal or Milvus. They become ``\\xNN`` escapes, which stay unique.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def filetype_of(path: Path) -> str | None:
    return FILETYPES.get(path.suffix.lower())


def _sniff(head: bytes, filetype: str) -> str | None:
    """Why the first bytes say this is not a ``filetype`` file, or None when they look right."""
    if filetype == "pdf":
        # the header may follow a little junk; readers accept it within the first 1 KB
        return None if b"%PDF-" in head[:1024] else "not a PDF (no %PDF header)"
    if filetype in _ZIP_TYPES:
        # an OLE2 container is either a password-protected OOXML file or a legacy file renamed:
        # the parser tells which (it reads the container's stream names)
        if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
            return None
        return f"not a {filetype.upper()} (not a zip container)"
    if filetype == "image":
        return None
    # text-like: UTF-16/32 legitimately hold NULs, so let a BOM through; otherwise NULs mean binary
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return None
    if b"\x00" in head:
        return f"binary content in a {filetype} file"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut by the sniff window


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ENOENT:
        return "no such file or directory"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return exc.strerror or type(exc).__name__


def _rel(path: Path, root: Path) -> str:
    return display_name(path.relative_to(root).as_posix())


def _utf8_name(path: Path | str) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_NOT_UTF8 = "name is not valid UTF-8 (rename it to index it)"


def _check_file(path: Path, root: Path, st: os.stat_result, max_bytes: int) -> FileEntry | Skipped:
    shown = display_name(str(path))
    if not _utf8_name(path):
        # the path is stored, searched and cited as text (Milvus, JSON, the terminal): a name
        # that is not UTF-8 cannot be kept without losing the way back to the file
        return Skipped(shown, f"file {_NOT_UTF8}")
    filetype = filetype_of(path)
    if filetype is None and path.suffix.lower() in LEGACY:
        return Skipped(shown, LEGACY[path.suffix.lower()])
    if filetype is None and path.suffix:
        return Skipped(shown, f"unsupported file type {display_name(path.suffix)}")
    if st.st_size == 0:
        return Skipped(shown, "empty file", content=True)
    if st.st_size > max_bytes:
        return Skipped(shown, f"too large ({format_size(st.st_size)} > {format_size(max_bytes)} limit)", content=True)
    try:
        # opening (not os.access) is the only honest test: root reads through chmod 000, ACLs exist
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        return Skipped(shown, _os_reason(exc))
    if filetype is None:
        # README, LICENSE, NOTES...: taken as plain text when the bytes say so
        if not _looks_like_text(head):
            return Skipped(shown, "unsupported file type (no extension, not text)", content=True)
        filetype = "text"
    problem = _sniff(head, filetype)
    if problem:
        return Skipped(shown, problem, content=True)
    return FileEntry(path=path, rel=_rel(path, root), root=root, size=st.st_size, filetype=filetype)


def _walk(
    directory: Path,
    root: Path,
    real_root: Path,
    seen: set[tuple[int, int]],
    ancestors: frozenset[tuple[int, int]],
    max_bytes: int,
) -> Iterator[FileEntry | Skipped]:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        yield Skipped(display_name(str(directory)), _os_reason(exc))
        return
    for entry in entries:
        path = directory / entry.name
        shown = display_name(str(path))
        is_link = False
        try:
            is_link = entry.is_symlink()
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            if exc.errno == errno.ENOENT and is_link:
                yield Skipped(shown, "broken symlink")
            else:
                yield Skipped(shown, _os_reason(exc))
            continue
        key = (st.st_dev, st.st_ino)
        is_dir = stat.S_ISDIR(st.st_mode)
        if is_dir and key in ancestors:
            yield Skipped(shown, "symlink loop")
            continue
        if is_link and _inside(path, real_root):
            # the target is walked under its own name: a second copy would only duplicate chunks
            continue
        if is_dir:
            if entry.name in QUIET_DIRS:
                continue
            if entry.name.startswith("."):
                yield Skipped(shown, "hidden folder (not searched)")
                continue
            if key in seen:
                continue  # reached before through another link: its files are already listed
            if not _utf8_name(entry.name):
                yield Skipped(shown, f"folder {_NOT_UTF8}")
                continue
            seen.add(key)
            yield from _walk(path, root, real_root, seen, ancestors | {key}, max_bytes)
        elif stat.S_ISREG(st.st_mode):
            if entry.name.startswith(".") or key in seen:
                continue
            seen.add(key)
            yield _check_file(path, root, st, max_bytes)
        else:
            yield Skipped(shown, "not a regular file (device, socket or pipe)")


def _inside(link: Path, real_root: Path) -> bool:
    try:
        return Path(os.path.realpath(link)).is_relative_to(real_root)
    except (OSError, ValueError):
        return False


def discover(paths: Iterable[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[FileEntry | Skipped]:
    """Yield every document under ``paths`` (files or folders) or the reason it was left out."""
    seen: set[tuple[int, int]] = set()
    for given in paths:
        path = Path(given).expanduser()
        shown = display_name(str(path))
        try:
            st = path.stat()
        except OSError as exc:
            if exc.errno == errno.ENOENT and path.is_symlink():
                yield Skipped(shown, "broken symlink")
            else:
                yield Skipped(shown, _os_reason(exc))
            continue
        path = path.absolute()
        key = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            if key in seen:
                continue
            if not _utf8_name(path):
                yield Skipped(shown, f"folder {_NOT_UTF8}")
                continue
            seen.add(key)
            yield from _walk(path, path, Path(os.path.realpath(path)), seen, frozenset({key}), max_bytes)
        elif stat.S_ISREG(st.st_mode):
            if key in seen:
                continue
            seen.add(key)
            yield _check_file(path, path.parent, st, max_bytes)
        else:
            yield Skipped(shown, "not a regular file (device, socket or pipe)")
