"""E-mail: .eml (one message) and .mbox (a mailbox), with the standard library's email/mailbox.

Each message is a section: its body (the text/plain part, else the HTML part's text) under the
heading ``(subject, "From: …; To: …; Date: …")``, so every chunk of a mail carries who wrote it,
to whom and when in its context. Attachments of a supported type are parsed as documents of
their own and returned as ``ParsedDocument.parts``, which ingest cites as ``mail.eml › file.pdf``;
the others are listed in the document's warnings; the readers parse them with the dispatcher
they are given as ``parse``. A mailbox is read one message at a time (``mailbox.mbox`` keeps only
an index of offsets), so 10,000 mails cost the memory of their text.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from localrag.kb.document import OCR_HINT, NeedsOCR, ParsedDocument, ParseError, Section, clean_text
from localrag.kb.formats.text import html_sections

MAX_DEPTH = 3  # a mail attached to a mail attached to a mail: deeper ones are not opened
_MAX_RECIPIENTS = 4
_depth = threading.local()

# the dispatcher, ``parse.parse_file``: an attachment may be of any type, a mail included. It is
# passed in, not imported, so that the readers stay below the dispatcher that picks them.
Parse = Callable[..., ParsedDocument]


def _header(msg, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header must not cost the body
        value = msg.get_all(name, failobj=[""])[0] if hasattr(msg, "get_all") else ""
    return re.sub(r"\s+", " ", str(value or "")).strip()


def _addresses(msg, name: str) -> str:
    raw = _header(msg, name)
    if not raw:
        return ""
    try:
        pairs = getaddresses([raw])
    except Exception:
        return raw[:200]
    shown = [f"{n} <{a}>" if n and a else (a or n) for n, a in pairs if n or a]
    if len(shown) > _MAX_RECIPIENTS:
        shown = shown[:_MAX_RECIPIENTS] + [f"and {len(shown) - _MAX_RECIPIENTS} more"]
    return ", ".join(shown)


def _date(msg) -> str:
    raw = _header(msg, "Date")
    try:
        return parsedate_to_datetime(raw).strftime("%Y-%m-%d %H:%M %z").strip()
    except (TypeError, ValueError, IndexError):
        return raw


def mail_heading(msg) -> tuple[str, str]:
    subject = _header(msg, "Subject") or "(no subject)"
    meta = [f"From: {_addresses(msg, 'From')}", f"To: {_addresses(msg, 'To')}"]
    if _addresses(msg, "Cc"):
        meta.append(f"Cc: {_addresses(msg, 'Cc')}")
    meta.append(f"Date: {_date(msg)}")
    return subject, "; ".join(m for m in meta if not m.endswith(": "))


def _part_text(part) -> str:
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError, KeyError):
        payload = part.get_payload(decode=True) or b""
        text = payload.decode(part.get_content_charset() or "utf-8", errors="replace") if isinstance(payload, bytes) else str(payload)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text


def _body(msg: EmailMessage) -> str:
    try:
        part = msg.get_body(preferencelist=("plain", "html"))
    except Exception:
        part = None
    if part is None:
        return ""
    text = clean_text(_part_text(part))
    if part.get_content_subtype() == "html":
        text = "\n\n".join(s.text for s in html_sections(text))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _safe_name(name: str, used: set[str]) -> str:
    name = re.sub(r"[\x00-\x1f/\\]+", "_", name).strip() or "attachment"
    base, n = name, 2
    while name in used:
        stem, dot, ext = base.rpartition(".")
        name = f"{stem} ({n}).{ext}" if dot else f"{base} ({n})"
        n += 1
    used.add(name)
    return name


def _attachments(msg: EmailMessage, tmp: Path, used: set[str], parts: list, warnings: list[str], unread: list[int], parse: Parse) -> None:
    """Parse the attachments of a supported type into ``parts`` (their own parts flattened);
    ``unread[0]`` counts their scanned pages left unread for want of OCR."""
    from localrag.kb.files import filetype_of

    try:
        attachments = list(msg.iter_attachments())
    except Exception:
        return
    for att in attachments:
        filename = att.get_filename()
        if not filename and att.get_content_type() == "message/rfc822":
            filename = "forwarded.eml"
        if not filename:
            continue
        name = _safe_name(filename, used)
        filetype = filetype_of(Path(name))
        if filetype is None:
            warnings.append(f"attachment {name}: unsupported file type")
            continue
        if att.get_content_type() == "message/rfc822":
            inner = att.get_payload()
            data = inner[0].as_bytes() if isinstance(inner, list) and inner else b""
        else:
            data = att.get_payload(decode=True) or b""
        if not data:
            warnings.append(f"attachment {name}: empty")
            continue
        target = tmp / f"{len(used)}{Path(name).suffix.lower()}"
        target.write_bytes(data)
        try:
            doc = parse(target, filetype=filetype)
        except ParseError as exc:
            warnings.append(f"attachment {name}: {exc}")
            unread[0] += getattr(exc, "pages", 0)
            continue
        finally:
            target.unlink(missing_ok=True)
        unread[0] += doc.unread_pages
        nested, doc.parts = doc.parts, []
        if doc.sections:
            parts.append((name, doc))
        parts += [(f"{name} › {sub}", d) for sub, d in nested]


def _read_messages(path: Path, filetype: str, messages, parse: Parse) -> ParsedDocument:
    depth = getattr(_depth, "n", 0)
    sections, parts, warnings, used, unread = [], [], [], set(), [0]
    _depth.n = depth + 1
    try:
        with tempfile.TemporaryDirectory(prefix="localrag-mail-") as tmp:
            for msg in messages:
                subject, meta = mail_heading(msg)
                body = _body(msg)
                if depth + 1 < MAX_DEPTH:
                    _attachments(msg, Path(tmp), used, parts, warnings, unread, parse)
                if body:
                    sections.append(Section(body, None, (subject, meta)))
    finally:
        _depth.n = depth
    if not sections and not parts:
        if unread[0]:
            raise NeedsOCR(f"only scanned attachments; {OCR_HINT}", unread[0])
        raise ParseError("no message with text or readable attachments")
    return ParsedDocument(path, filetype, sections, None, warnings, parts=parts, unread_pages=unread[0])


def read_eml(path: Path, filetype: str, *, parse: Parse) -> ParsedDocument:
    with open(path, "rb") as fh:
        msg = BytesParser(policy=policy.default).parse(fh)
    if not msg.keys():
        raise ParseError("not an e-mail message (no headers)")
    return _read_messages(path, "eml", [msg], parse)


def read_mbox(path: Path, filetype: str, *, parse: Parse) -> ParsedDocument:
    import mailbox

    parser = BytesParser(policy=policy.default)
    box = mailbox.mbox(str(path), create=False)

    def messages():
        try:
            for key in box.iterkeys():
                yield parser.parsebytes(box.get_bytes(key))
        finally:
            box.close()

    return _read_messages(path, "mbox", messages(), parse)
