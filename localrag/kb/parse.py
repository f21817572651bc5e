"""Files -> ParsedDocument: the dispatcher that picks a file's reader and keeps its failures to one line.

The layout, imports pointing one way:

* ``document.py``: the model (``ParsedDocument``, ``Section``, ``ParseError``) and the text
  helpers the readers share (``decode_text``); it imports neither of the others.
* ``formats/``: the readers, one module per family (``_FAMILIES`` below says which reads what):
  ``text`` (Markdown, HTML, plain text), ``pdf``, ``office`` (DOCX, PPTX, OpenDocument text),
  ``sheets``, ``mail``, ``epub``, ``structured`` (JSON, reST, Org, source code), ``ocr``
  (images, scanned PDF pages). Each module says which library it uses and why.
* this module: ``parse_file``, on top. A reader of containers (mail attachments) is handed
  ``parse_file`` as its ``parse`` argument rather than importing it.

``parse_file`` raises ``ParseError`` (a one-line reason) for anything it cannot read; no other
exception escapes it. PDFium is not thread-safe: parse PDFs from one thread at a time.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from localrag.kb.document import (
    OCR_HINT,
    SECTION_SEPARATOR,
    NeedsOCR,
    ParsedDocument,
    ParseError,
    Section,
    decode_text,
    read_text_file,
)
from localrag.kb.files import DEFAULT_MAX_BYTES, filetype_of

# what callers imported from here before the readers moved out; they keep working
__all__ = [
    "OCR_HINT", "SECTION_SEPARATOR", "NeedsOCR", "ParsedDocument", "ParseError", "Section",
    "decode_text", "parse_file", "read_text_file", "reader_version",
]

# A reader that now reads a type differently names a new version here: files a KB holds from an
# older reading are read again by the next ingest or sync even though they did not change.
# markdown 1: HTML blocks become the text they show (tables as rows, notes, <pre>, <h3>).
_READER_VERSIONS = {"markdown": 1}
# Containers hand their attachments to the other readers: a mail read before any of those
# changed holds the older reading of its attachments.
_CONTAINERS = frozenset({"eml", "mbox"})


def reader_version(filetype: str) -> int:
    """The version of the reading a file of this type gets now (versions only ever go up, so a
    container's, their sum, goes up whenever one of the readers it delegates to does)."""
    own = _READER_VERSIONS.get(filetype, 0)
    if filetype in _CONTAINERS:
        own += sum(v for t, v in _READER_VERSIONS.items() if t not in _CONTAINERS)
    return own

# filetype -> (reader module in formats/, its function(path, filetype) -> ParsedDocument); any
# other type reads as plain text. A module is imported when a file of its type is first met, so
# the libraries behind it load only then and `localrag --help` stays instant.
_FAMILIES = {
    "markdown": ("text", "read_text"),
    "html": ("text", "read_text"),
    "pdf": ("pdf", "read_pdf"),
    "docx": ("office", "read_docx"),
    "pptx": ("office", "read_pptx"),
    "odt": ("office", "read_odf_text"),
    "odp": ("office", "read_odf_text"),
    "xlsx": ("sheets", "read_xlsx"),
    "ods": ("sheets", "read_ods"),
    "csv": ("sheets", "read_csv"),
    "eml": ("mail", "read_eml"),
    "mbox": ("mail", "read_mbox"),
    "epub": ("epub", "read_epub"),
    "json": ("structured", "read_json"),
    "jsonl": ("structured", "read_json"),
    "rst": ("structured", "read_rst"),
    "org": ("structured", "read_org"),
    "code": ("structured", "read_code"),
    "image": ("ocr", "read_image"),
}


def _reader(filetype: str):
    """The function that reads ``filetype``, its module imported here (on first use)."""
    family, name = _FAMILIES.get(filetype, ("text", "read_text"))
    if family == "text":
        from localrag.kb.formats import text as module
    elif family == "pdf":
        from localrag.kb.formats import pdf as module
    elif family == "office":
        from localrag.kb.formats import office as module
    elif family == "sheets":
        from localrag.kb.formats import sheets as module
    elif family == "mail":
        from localrag.kb.formats import mail as module

        return partial(getattr(module, name), parse=parse_file)  # its attachments may be of any type
    elif family == "epub":
        from localrag.kb.formats import epub as module
    elif family == "structured":
        from localrag.kb.formats import structured as module
    else:
        from localrag.kb.formats import ocr as module
    return getattr(module, name)


def parse_file(path: Path, *, filetype: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedDocument:
    """Read one document. Raises ParseError (one-line reason) for anything unreadable."""
    path = Path(path)
    filetype = filetype or filetype_of(path) or "text"
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ParseError(f"too large ({size / 2**20:.1f} MB > {max_bytes / 2**20:.0f} MB limit)")
        if size == 0:
            raise ParseError("empty file")
        return _reader(filetype)(path, filetype)
    except ParseError:
        raise
    except MemoryError:
        raise ParseError("out of memory while parsing") from None
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or type(exc).__name__)
        raise ParseError(reason) from None
    except Exception as exc:  # a library's bug on a hostile file must cost one file, not the ingest
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise ParseError(f"cannot parse {filetype}: {type(exc).__name__}{': ' + detail if detail else ''}") from None
