"""PDF, with pypdfium2 (PDFium; BSD/Apache).

On the Debian reference PDFs PDFium keeps word spaces (16 run-together words of >=20 letters in
595k chars, against 4761 with pypdf), keeps the Chinese text whole, and reads the 261-page
English PDF in 0.5 s (pypdf 6.1 s, pdfminer.six 25.6 s with the same quality as PDFium).
PyMuPDF is AGPL, so not considered. The PDF outline (bookmarks) gives each page its heading path.

Scanned pages (no text layer, an image): OCR when ``localrag[ocr]`` is installed (``ocr.py``);
otherwise they are counted in ``unread_pages`` for the ingest summary. PDFium is not
thread-safe: read PDFs from one thread at a time.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from localrag.kb.document import OCR_HINT, NeedsOCR, ParsedDocument, ParseError, Section, clean_text
from localrag.lang import CJK_TEXT

_PAGE_NUMBERS = re.compile(r"\b(?:[0-9]+|[ivxlcdm]+)\b|[/\s]+", re.I)
_CJK_LINEBREAK = re.compile(
    f"(?<={CJK_TEXT.pattern})\n(?={CJK_TEXT.pattern})"
)
# PDFium reports a hyphen at a line break as \x02; inside a word it is TeX's hyphenation
# ("distri-bution"), in a path or URL a real hyphen ("debian-security")
_SOFT_HYPHEN = re.compile(r"(\S*)\x02")


# table-of-contents dot leaders ". . . . . ." cost one token per dot and carry nothing
_DOT_LEADER = re.compile(r"(?:[ \t]*\.){5,}[ \t]*")


def _dehyphenate(match: re.Match) -> str:
    before = match.group(1)
    if re.search(r"[/.:_]", before) or not before[-1:].islower():
        return before + "-"
    return before


def _edge_key(line: str) -> str:
    """A page's first/last line with page numbers ("xii", "13 / 233") and spacing blurred."""
    return _PAGE_NUMBERS.sub(" ", line).strip()


def _running_lines(pages: list[list[str]]) -> set[str]:
    """Header/footer lines repeated on many pages (page numbers blurred), to strip."""
    if len(pages) < 4:
        return set()
    counts: Counter[str] = Counter()
    for lines in pages:
        edges = {_edge_key(ln) for ln in lines[:1] + lines[-1:] if ln.strip()}
        counts.update(edges)
    return {key for key, n in counts.items() if n >= max(3, len(pages) * 0.3)}


def _pdf_headings(doc, n_pages: int) -> list[tuple[str, ...]]:
    """The outline entry in force at each page: the first one starting on it, else the last before."""
    try:
        toc = list(doc.get_toc(max_depth=8))
    except Exception:  # a broken outline must not cost the text
        return [()] * n_pages
    starts: dict[int, tuple[str, ...]] = {}
    path: list[str] = []
    events = []
    for item in toc:
        path[item.level :] = []
        title = re.sub(r"\s+", " ", item.get_title() or "").strip()
        path.append(title)
        dest = item.get_dest()
        index = dest.get_index() if dest is not None else None
        if index is not None and 0 <= index < n_pages:
            events.append((index, tuple(p for p in path if p)))
    for page, p in events:
        starts.setdefault(page, p)
    result, current = [], ()
    last_on_page: dict[int, tuple[str, ...]] = {}
    for page, p in events:
        last_on_page[page] = p
    for i in range(n_pages):
        result.append(starts.get(i, current))
        if i in last_on_page:
            current = last_on_page[i]
    return result


def read_pdf(path: Path, filetype: str) -> ParsedDocument:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 2048))
        tail = fh.read()  # a truncated PDF lacks its closing %%EOF: say so rather than "damaged"
    return _read_pdf(path, tail)


def _read_pdf(path: Path, data_tail: bytes) -> ParsedDocument:
    import pypdfium2 as pdfium

    from localrag.kb.formats import ocr

    try:
        doc = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        msg = str(exc).lower()
        if "password" in msg:
            raise ParseError("encrypted PDF (password required)") from None
        if b"%%EOF" not in data_tail:
            raise ParseError("truncated PDF (cannot be opened)") from None
        raise ParseError(f"damaged PDF ({str(exc).strip().rstrip('.')})") from None
    try:
        n = len(doc)
        raw_pages: list[str] = []
        scanned: list[int] = []  # pages with (almost) no text layer but an image: scans
        for i in range(n):
            page = doc[i]
            try:
                textpage = page.get_textpage()
                try:
                    raw_pages.append(textpage.get_text_bounded())
                finally:
                    textpage.close()
                if ocr.is_scanned(page, raw_pages[-1]):
                    scanned.append(i)
            finally:
                page.close()
        headings = _pdf_headings(doc, n)
        ocr_pages: set[int] = set()
        if scanned and ocr.available():
            for i in scanned:
                page = doc[i]
                try:
                    raw_pages[i] = ocr.page_text(page)
                finally:
                    page.close()
                ocr_pages.add(i + 1)
    except pdfium.PdfiumError as exc:
        raise ParseError(f"damaged PDF ({str(exc).strip().rstrip('.')})") from None
    finally:
        doc.close()

    pages = [clean_text(p).replace("\xa0", " ").split("\n") for p in raw_pages]
    running = _running_lines(pages)
    sections = []
    for i, lines in enumerate(pages):
        while lines and (not lines[0].strip() or _edge_key(lines[0]) in running):
            lines = lines[1:]
        while lines and (not lines[-1].strip() or _edge_key(lines[-1]) in running):
            lines = lines[:-1]
        text = "\n".join(ln.rstrip() for ln in lines)
        text = _DOT_LEADER.sub(" … ", text)
        text = _SOFT_HYPHEN.sub(_dehyphenate, text)
        text = _CJK_LINEBREAK.sub("", text).strip()
        if text:
            sections.append(Section(text, i + 1, headings[i]))
    unread = 0 if ocr_pages else len(scanned)
    if not sections:
        if unread:
            raise NeedsOCR(f"{unread} page(s) with no text layer (a scan); {OCR_HINT}", unread)
        if b"%%EOF" not in data_tail:
            raise ParseError("truncated PDF (no readable pages)")
        raise ParseError("no extractable text (no text layer, no scanned pages)")
    return ParsedDocument(path, "pdf", sections, None, ocr_pages={p for p in ocr_pages if any(s.page == p for s in sections)}, unread_pages=unread)
