"""The document model every reader returns, and the text helpers the readers share.

The bottom of parsing: ``formats/`` (the readers) and ``parse.py`` (the dispatcher) import this
module, and it imports neither. Text is decoded as described in ``decode_text``.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path

from localrag.lang import CJK_TEXT

SECTION_SEPARATOR = "\n\n"


@dataclass
class Section:
    text: str
    page: int | None
    heading: tuple[str, ...]


@dataclass
class ParsedDocument:
    path: Path
    filetype: str
    sections: list[Section]
    encoding: str | None
    warnings: list[str] = field(default_factory=list)  # e.g. invalid bytes replaced; for the ingest summary
    # documents inside this one (a mail's attachments), each cited as "<this file> › <name>"
    parts: list[tuple[str, "ParsedDocument"]] = field(default_factory=list)
    ocr_pages: set[int] = field(default_factory=set)  # pages whose text OCR found (scans, images)
    unread_pages: int = 0  # pages with no text layer left unread because OCR is not installed

    @property
    def text(self) -> str:
        """The document's extracted text: the sections' texts joined by SECTION_SEPARATOR.

        Chunk spans (``char_start``/``char_end``) index into this string.
        """
        return SECTION_SEPARATOR.join(s.text for s in self.sections)

    def section_starts(self) -> list[int]:
        starts, pos = [], 0
        for s in self.sections:
            starts.append(pos)
            pos += len(s.text) + len(SECTION_SEPARATOR)
        return starts


class ParseError(Exception):
    """The file cannot be read as a document; ``str(exc)`` is a one-line reason."""


class NeedsOCR(ParseError):
    """Nothing readable without OCR, which is not installed; ``pages`` were left unread."""

    def __init__(self, reason: str, pages: int):
        super().__init__(reason)
        self.pages = pages


OCR_HINT = "install localrag[ocr] to read them"


# ---------------------------------------------------------------- text decoding

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CJK = CJK_TEXT  # letters and their punctuation: "is this decoding mostly Chinese?"


def decode_text(data: bytes) -> tuple[str, str, list[str]]:
    """Bytes -> (text, encoding, warnings).

    Order: BOM; strict UTF-8; GB18030 when that decodes cleanly into mostly CJK (Chinese files
    are often GBK, and a statistical detector confuses short GBK text with other legacy
    codepages); mostly-valid UTF-8 with the few bad bytes replaced; charset-normalizer; and
    last UTF-8 with replacement, so a text file never fails on its encoding alone.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(name), name, []
            except UnicodeDecodeError:
                text = data.decode(name, errors="replace")
                return text, name, [f"invalid {name} bytes replaced"]
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
        chars = [c for c in text if ord(c) >= 0x80]
        if chars and sum(1 for c in chars if _CJK.match(c)) / len(chars) >= 0.9:
            return _east_asian(data, text)
    except UnicodeDecodeError:
        pass
    replaced = data.decode("utf-8", errors="replace")
    bad = replaced.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    valid = sum(1 for c in replaced if ord(c) >= 0x80) - bad
    # valid multi-byte sequences say "UTF-8 with damage"; none say "a legacy codepage" (café in cp1252)
    if valid > 0 and bad < valid:
        return replaced, "utf-8", [f"invalid UTF-8: {bad} byte sequence(s) replaced"]
    from charset_normalizer import from_bytes

    matches = from_bytes(data[: 4 * 1024 * 1024])
    best = matches.best()
    if best is not None and best.encoding:
        encoding = best.encoding
        # short Western text fits several codepages equally well ("très" is "trčs" in cp1250):
        # among equally good readings, take the most common one
        tied = [m for m in matches if m.chaos <= best.chaos and m.coherence >= best.coherence - 0.05]
        if any("cp1252" in m.could_be_from_charset for m in tied):
            encoding = "cp1252"
        try:
            return data.decode(encoding), encoding, []
        except (UnicodeDecodeError, LookupError):
            pass
    return replaced, "utf-8", [f"unknown encoding: {bad} invalid UTF-8 sequence(s) replaced"]


_EAST_ASIAN = ["gb18030", "big5", "cp932", "euc_jp", "cp949"]


def _east_asian(data: bytes, as_gb18030: str) -> tuple[str, str, list[str]]:
    """Bytes that read as Chinese in GB18030: keep that unless Japanese/Korean/Big5 reads better.

    Shift-JIS and EUC-KR also decode as (nonsense) hanzi in GB18030; the detector tells them
    apart, but on a short GBK text it ties several encodings, and then GB18030 wins.
    """
    from charset_normalizer import from_bytes

    matches = from_bytes(data[:65536], cp_isolation=_EAST_ASIAN)
    best = matches.best()
    if best is None or any(
        m.chaos <= best.chaos and "gb18030" in (m.encoding, *m.could_be_from_charset) for m in matches
    ):
        return as_gb18030, "gb18030", []
    try:
        return data.decode(best.encoding), best.encoding, []
    except (UnicodeDecodeError, LookupError):
        return as_gb18030, "gb18030", []


def clean_text(text: str) -> str:
    """Line ends made LF; BOMs and control characters other than tab/newline dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    # NULs and other C0 controls break tokenizers and Milvus strings; tabs and newlines stay
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


def strip_blank_edges(text: str) -> str:
    """Drop leading/trailing blank lines and trailing spaces, keep a first line's indentation;
    runs of blank lines become one."""
    text = re.sub(r"\n(?:[ \t]*\n){2,}", "\n\n", text)
    return re.sub(r"^(?:[ \t]*\n)+", "", text).rstrip()


def read_text_file(path: Path, filetype: str) -> tuple[str, str, list[str]]:
    """A text-based format's content, decoded (see ``decode_text``) and cleaned of control characters."""
    data = path.read_bytes()
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ParseError(f"binary content in a {filetype} file")
    text, encoding, warnings = decode_text(data)
    return clean_text(text), encoding, warnings
