"""Files -> ParsedDocument: the text of a document in sections, each with its page and heading path.

Parsers (chosen for what they do to retrieval, measured on /work/shared corpora):

* Markdown: markdown-it-py finds the headings (ATX and setext, not ``#`` lines inside code
  fences); a section keeps its raw Markdown lines, heading line included, so code blocks,
  tables and links stay verbatim and quotable.
* HTML: BeautifulSoup over lxml (tolerant of broken markup), walking the main content
  (``<main>``/``<article>`` when present) and dropping scripts, styles, navigation, forms.
  trafilatura was not used: its boilerplate removal is tuned for news pages and throws away
  parts of documentation pages, and it brings half a dozen more dependencies.
* PDF: pypdfium2 (PDFium; BSD/Apache). On the Debian reference PDFs it keeps word spaces
  (16 run-together words of >=20 letters in 595k chars, against 4761 with pypdf), keeps the
  Chinese text whole, and reads the 261-page English PDF in 0.5 s (pypdf 6.1 s,
  pdfminer.six 25.6 s with the same quality as PDFium). PyMuPDF is AGPL, so not considered.
  The PDF outline (bookmarks) gives each page its heading path.
* DOCX: python-docx, headings from paragraph styles, tables as ``cell | cell`` rows.
* Scanned PDF pages (no text layer, an image): OCR when ``localrag[ocr]`` is installed
  (``formats/ocr.py``); otherwise they are counted in ``unread_pages`` for the ingest summary.
* Slides, sheets, mail, EPUB, OpenDocument, JSON, reST/Org, source code, images: the readers in
  ``localrag/kb/formats/`` (``_READERS`` below says which), one module per family.
* Plain text: decoded as described in ``decode_text``.

``parse_file`` raises ``ParseError`` (a one-line reason) for anything it cannot read; no other
exception escapes it. PDFium is not thread-safe: parse PDFs from one thread at a time.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from localrag.kb.files import DEFAULT_MAX_BYTES, filetype_of
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


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    # NULs and other C0 controls break tokenizers and Milvus strings; tabs and newlines stay
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


def _strip_blank_edges(text: str) -> str:
    """Drop leading/trailing blank lines and trailing spaces, keep a first line's indentation;
    runs of blank lines become one."""
    text = re.sub(r"\n(?:[ \t]*\n){2,}", "\n\n", text)
    return re.sub(r"^(?:[ \t]*\n)+", "", text).rstrip()


# ---------------------------------------------------------------- markdown

_FRONT_MATTER = re.compile(r"\A(?:---|\+\+\+)[ \t]*\n(.*?\n)?(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FM_TITLE = re.compile(r"^title\s*[:=]\s*['\"]?(.*?)['\"]?\s*$", re.M)


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"<[^>]+>|[`*]|(?<!\w)_+|_+(?!\w)|\\(?=[^\w\s])")


def _heading_text(raw: str) -> str:
    """A heading's plain text: links to their words, emphasis/code marks and tags dropped."""
    text = _MD_MARKS.sub("", _MD_LINK.sub(r"\1", raw))
    return re.sub(r"\s+", " ", text).strip() or raw.strip()


def _parse_markdown(text: str) -> list[Section]:
    from markdown_it import MarkdownIt

    title = None
    fm = _FRONT_MATTER.match(text)
    if fm:
        m = _FM_TITLE.search(fm.group(1) or "")
        title = m.group(1).strip() if m else None
        text = text[fm.end() :]
    lines = text.split("\n")
    # block structure is all that is needed (headings vs fenced code); skipping the inline pass
    # makes the parse 2.4x faster
    tokens = MarkdownIt("commonmark", {"html": True}).disable("inline").parse(text)
    headings = []  # (first line, end line, level, text)
    for i, tok in enumerate(tokens):
        if tok.type == "html_block" and tok.map and re.fullmatch(r"\s*<!--.*-->\s*", tok.content, re.S):
            lines[tok.map[0] : tok.map[1]] = [""] * (tok.map[1] - tok.map[0])  # <!-- TOC --> and such
        if tok.type == "heading_open" and tok.level == 0 and tok.map:
            headings.append((tok.map[0], tok.map[1], int(tok.tag[1]), _heading_text(tokens[i + 1].content)))
    has_h1 = any(level == 1 for _, _, level, _ in headings)
    root: tuple[str, ...] = (title,) if title and not has_h1 else ()
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    starts = [h[0] for h in headings] + [len(lines)]
    preamble = _strip_blank_edges("\n".join(lines[: starts[0]]))
    if preamble:
        sections.append(Section(preamble, None, root))
    for (first, _end, level, name), nxt in zip(headings, starts[1:]):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        body = _strip_blank_edges("\n".join(lines[first:nxt]))
        if body:
            sections.append(Section(body, None, root + tuple(n for _, n in stack if n)))
    return sections


# ---------------------------------------------------------------- html

_HTML_DROP = {
    "script", "style", "noscript", "template", "nav", "aside", "form", "button", "select", "svg",
    "canvas", "iframe", "object", "embed", "head", "footer", "input", "textarea", "dialog",
}
_HTML_BLOCK = {
    "p", "div", "section", "article", "main", "header", "li", "ul", "ol", "dl", "dt", "dd",
    "blockquote", "figure", "figcaption", "hr", "address", "details", "summary", "caption", "body",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_\-]+)""", re.I)


def _decode_html(data: bytes) -> tuple[str, str, list[str]]:
    declared = _META_CHARSET.search(data[:4096])
    if declared and not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name = declared.group(1).decode("ascii", "ignore").lower()
        try:
            return data.decode(name), name, []
        except (UnicodeDecodeError, LookupError):
            pass
    return decode_text(data)


def _parse_html(text: str) -> list[Section]:
    from bs4 import BeautifulSoup, Comment, Doctype, NavigableString, ProcessingInstruction

    soup = BeautifulSoup(text, "lxml")
    title_tag = soup.find("title")
    title = title_tag.get_text(" ", strip=True) if title_tag else ""
    for tag in soup.find_all(list(_HTML_DROP)):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": ["navigation", "banner", "contentinfo", "search"]}):
        tag.decompose()
    mains = soup.find_all("main") or soup.find_all("article")
    roots = mains if mains else [soup.body or soup]

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    has_h1 = any(r.find("h1") for r in roots)
    base: tuple[str, ...] = (title,) if title and not has_h1 else ()

    def flush():
        body = "".join(buf)
        body = re.sub(r"[ \t]*\n[ \t]*", "\n", body)
        body = re.sub(r"\n{3,}", "\n\n", body).strip()
        if body:
            sections.append(Section(body, None, base + tuple(n for _, n in stack)))
        buf.clear()

    def walk(node):
        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                buf.append(re.sub(r"\s+", " ", str(child)))
                continue
            name = child.name
            if name in _HEADINGS:
                flush()
                heading = child.get_text(" ", strip=True)
                level = _HEADINGS[name]
                while stack and stack[-1][0] >= level:
                    stack.pop()
                if heading:
                    stack.append((level, heading))
                    buf.append(heading + "\n\n")
            elif name == "pre":
                buf.append("\n\n" + child.get_text() + "\n\n")
            elif name == "table":
                rows = []
                for tr in child.find_all("tr"):
                    cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
                    if any(cells):
                        rows.append(" | ".join(cells))
                buf.append("\n\n" + "\n".join(rows) + "\n\n")
            elif name == "br":
                buf.append("\n")
            elif name in _HTML_BLOCK:
                buf.append("\n\n" if name not in ("li", "dt", "dd") else "\n")
                walk(child)
                buf.append("\n\n" if name not in ("li", "dt", "dd") else "\n")
            else:
                walk(child)

    for r in roots:
        walk(r)
        flush()
    return sections


# ---------------------------------------------------------------- pdf

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


def _parse_pdf(path: Path, data_tail: bytes) -> ParsedDocument:
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

    pages = [_clean(p).replace("\xa0", " ").split("\n") for p in raw_pages]
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


# ---------------------------------------------------------------- docx


_DOCX_HEADING_STYLE = re.compile(r"(?i)^(?:heading|标题|標題|titre|überschrift|título|titolo|заголовок)\s*(\d)$")


def _docx_heading_level(paragraph) -> int | None:
    """0 for the title, 1-9 for headings: by style name (English or localized), else by the
    outline level Word stores on the paragraph or its style."""
    style = paragraph.style
    name = ((style.name if style is not None else "") or "").strip()
    if name.lower() == "title":
        return 0
    m = _DOCX_HEADING_STYLE.match(name)
    if m:
        return int(m.group(1))
    for element in (paragraph._p, style.element if style is not None else None):
        if element is None:
            continue
        values = element.xpath("./w:pPr/w:outlineLvl/@w:val")
        if values and values[0].isdigit() and int(values[0]) < 9:
            return int(values[0]) + 1
    return None


def _parse_docx(path) -> list[Section]:
    """``path``: a file, or a stream (a macro-enabled .docm relabelled by ``office.macro_free``)."""
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(str(path) if isinstance(path, Path) else path)
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError) as exc:
        raise ParseError("damaged DOCX (not a readable Word package)") from None

    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush():
        body = "\n\n".join(b for b in buf if b.strip()).strip()
        if body:
            sections.append(Section(body, None, tuple(n for _, n in stack)))
        buf.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    t = re.sub(r"\s+", " ", cell.text).strip()
                    if not cells or cells[-1] != t:  # merged cells repeat their text
                        cells.append(t)
                if any(cells):
                    rows.append(" | ".join(cells))
            buf.append("\n".join(rows))
            continue
        text = block.text.strip()
        level = _docx_heading_level(block)
        if level is not None and text:
            flush()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, re.sub(r"\s+", " ", text)))
        if text:
            buf.append(block.text.strip("\n"))
    flush()
    return sections


# ---------------------------------------------------------------- entry point

# filetype -> (module, function(path, filetype) -> ParsedDocument); imported on first use, so
# the libraries behind them load only when such a file is met
_READERS = {
    "pptx": ("localrag.kb.formats.office", "read_pptx"),
    "odt": ("localrag.kb.formats.office", "read_odf_text"),
    "odp": ("localrag.kb.formats.office", "read_odf_text"),
    "xlsx": ("localrag.kb.formats.sheets", "read_xlsx"),
    "ods": ("localrag.kb.formats.sheets", "read_ods"),
    "csv": ("localrag.kb.formats.sheets", "read_csv"),
    "eml": ("localrag.kb.formats.mail", "read_eml"),
    "mbox": ("localrag.kb.formats.mail", "read_mbox"),
    "epub": ("localrag.kb.formats.epub", "read_epub"),
    "json": ("localrag.kb.formats.structured", "read_json"),
    "jsonl": ("localrag.kb.formats.structured", "read_json"),
    "rst": ("localrag.kb.formats.structured", "read_rst"),
    "org": ("localrag.kb.formats.structured", "read_org"),
    "code": ("localrag.kb.formats.structured", "read_code"),
    "image": ("localrag.kb.formats.ocr", "read_image"),
}


def read_text_file(path: Path, filetype: str) -> tuple[str, str, list[str]]:
    """A text-based format's content, decoded (see ``decode_text``) and cleaned of control characters."""
    data = path.read_bytes()
    if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ParseError(f"binary content in a {filetype} file")
    text, encoding, warnings = decode_text(data)
    return _clean(text), encoding, warnings


def html_sections(text: str) -> list[Section]:
    """Sections of an HTML/XHTML page (EPUB chapters reuse the HTML reader)."""
    return _parse_html(text)


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
        if filetype == "pdf":
            with open(path, "rb") as fh:
                fh.seek(max(0, size - 2048))
                tail = fh.read()
            return _parse_pdf(path, tail)
        if filetype == "docx":
            from localrag.kb.formats.office import macro_free

            return ParsedDocument(path, "docx", _parse_docx(macro_free(path, "docx")), None)
        if filetype in _READERS:
            import importlib

            module, func = _READERS[filetype]
            return getattr(importlib.import_module(module), func)(path, filetype)
        data = path.read_bytes()
        if filetype == "html":
            text, encoding, warnings = _decode_html(data)
        else:
            if b"\x00" in data[:8192] and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                raise ParseError(f"binary content in a {filetype} file")
            text, encoding, warnings = decode_text(data)
        text = _clean(text)
        if filetype == "markdown":
            sections = _parse_markdown(text)
        elif filetype == "html":
            sections = _parse_html(text)
        else:
            body = _strip_blank_edges(text)
            sections = [Section(body, None, ())] if body else []
        if not sections:
            raise ParseError("no text")
        return ParsedDocument(path, filetype, sections, encoding, warnings)
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
