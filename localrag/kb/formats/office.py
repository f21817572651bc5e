"""Word, slides and OpenDocument text: .docx/.docm (python-docx), .pptx/.pptm (python-pptx),
.odt and .odp (zip + lxml).

Provenance: a .docx has its headings from paragraph styles (or Word's outline level) and its
tables as ``cell | cell`` rows; a slide's number is its ``page``, its title the heading; speaker
notes follow the slide's text. An .odt has headings (``text:h`` and their outline level) like a
.docx; an .odp has pages like a .pptx.

Macros: .pptm/.docm/.xlsm are read as the documents they are; the VBA part is never loaded, let
alone run (python-pptx and python-docx never execute anything; a .docm is handed to python-docx
with its main part relabelled, see ``macro_free``).

OpenDocument is zip + XML: its content.xml is read with lxml's iterparse (already a dependency),
which keeps memory flat on big files; odfpy would build the whole DOM for no gain here.

Password-protected OOXML files are not zips but OLE2 containers holding an ``EncryptionInfo``
stream: ``ole_reason`` says so, or that the file is a legacy binary one renamed.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from localrag.kb.document import ParsedDocument, ParseError, Section

_OLE_MAGIC = b"\xd0\xcf\x11\xe0"
_APP = {"docx": "Word", "pptx": "PowerPoint", "xlsx": "Excel"}
_MACRO_TYPES = {
    b"application/vnd.ms-word.document.macroEnabled.main+xml": b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
}


def ole_reason(path: Path, filetype: str) -> str | None:
    """Why an OLE2 file under an OOXML/ODF name cannot be read; None when it is not OLE2."""
    with open(path, "rb") as fh:
        if fh.read(4) != _OLE_MAGIC:
            return None
        data = fh.read(64 * 1024 * 1024)
    app = _APP.get(filetype, "the application")
    if "EncryptionInfo".encode("utf-16-le") in data or "EncryptedPackage".encode("utf-16-le") in data:
        return f"password-protected {filetype.upper()} (remove the password in {app} and save it again to index it)"
    return f"old binary {app} format under a .{path.suffix.lstrip('.').lower()} name (save it as .{filetype} to index it)"


def open_zip(path: Path, filetype: str) -> zipfile.ZipFile:
    reason = ole_reason(path, filetype)
    if reason:
        raise ParseError(reason)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ParseError(f"damaged {filetype.upper()} (not a readable zip: {exc})") from None


def macro_free(path: Path, filetype: str):
    """``path``, or for a macro-enabled .docm an in-memory copy whose main part is labelled as a
    plain document, which python-docx opens (it refuses the macro-enabled label). The VBA part
    stays in the package, unread."""
    open_zip(path, filetype).close()  # password / legacy / damaged: a clear reason first
    with zipfile.ZipFile(path) as zin:
        types = zin.read("[Content_Types].xml")
        if not any(m in types for m in _MACRO_TYPES):
            return path
        for macro, plain in _MACRO_TYPES.items():
            types = types.replace(macro, plain)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zout:
            for info in zin.infolist():
                zout.writestr(info, types if info.filename == "[Content_Types].xml" else zin.read(info))
    buf.seek(0)
    return buf


# ---------------------------------------------------------------- pptx


def _shape_lines(shape, out: list[str], skip) -> None:
    if skip is not None and shape.shape_id == skip.shape_id:  # the title, already the first line
        return
    if hasattr(shape, "shapes"):  # a group
        for s in getattr(shape, "shapes", ()):
            _shape_lines(s, out, skip)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        for row in shape.table.rows:
            cells = [re.sub(r"\s+", " ", c.text).strip() for c in row.cells]
            if any(cells):
                out.append(" | ".join(cells))
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = shape.text_frame.text.replace("\x0b", "\n").strip()
        if text:
            out.append(text)


def read_pptx(path: Path, filetype: str):
    open_zip(path, "pptx").close()
    import pptx
    from pptx.exc import PackageNotFoundError

    try:
        prs = pptx.Presentation(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"damaged PPTX ({type(exc).__name__}: {str(exc)[:100]})") from None
    sections = []
    for number, slide in enumerate(prs.slides, start=1):
        title_shape = slide.shapes.title
        title = re.sub(r"\s+", " ", title_shape.text).strip() if title_shape is not None and title_shape.has_text_frame else ""
        lines = [title] if title else []
        for shape in slide.shapes:
            _shape_lines(shape, lines, title_shape)
        if slide.has_notes_slide:
            frame = slide.notes_slide.notes_text_frame
            notes = frame.text.strip() if frame is not None else ""
            if notes:
                lines.append("Speaker notes: " + notes)
        text = "\n\n".join(lines).strip()
        if text:
            sections.append(Section(text, number, (title,) if title else ()))
    if not sections:
        raise ParseError("no text on any slide")
    return ParsedDocument(path, "pptx", sections, None)


# ---------------------------------------------------------------- OpenDocument text and slides

NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
}


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def odf_text(el) -> str:
    """An ODF element's text: ``text:s`` (spaces), ``text:tab``, ``text:line-break`` honoured;
    notes and annotations left out."""
    parts: list[str] = []

    def walk(node):
        if node.text:
            parts.append(node.text)
        for child in node:
            tag = child.tag
            if tag == _q("text", "s"):
                parts.append(" " * int(child.get(_q("text", "c"), "1") or 1))
            elif tag == _q("text", "tab"):
                parts.append("\t")
            elif tag == _q("text", "line-break"):
                parts.append("\n")
            elif tag in (_q("text", "note"), _q("office", "annotation")):
                pass
            else:
                walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    return "".join(parts)


def _odf_content(path: Path, filetype: str):
    from lxml import etree

    zf = open_zip(path, filetype)
    try:
        with zf.open("content.xml") as fh:
            return etree.parse(fh, etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)).getroot()
    except KeyError:
        raise ParseError(f"damaged {filetype.upper()} (no content.xml)") from None
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"damaged {filetype.upper()} (content.xml: {str(exc)[:100]})") from None
    finally:
        zf.close()


def _odt_sections(root) -> list:
    body = root.find(f"{_q('office', 'body')}/{_q('office', 'text')}")
    sections: list = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush():
        text = "\n\n".join(b for b in buf if b.strip()).strip()
        if text:
            sections.append(Section(text, None, tuple(n for _, n in stack)))
        buf.clear()

    def walk(node):
        for el in node:
            if el.tag == _q("text", "h"):
                title = re.sub(r"\s+", " ", odf_text(el)).strip()
                if not title:
                    continue
                flush()
                level = int(el.get(_q("text", "outline-level"), "1") or 1)
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, title))
                buf.append(title)
            elif el.tag == _q("text", "p"):
                buf.append(odf_text(el).strip())
            elif el.tag == _q("table", "table"):
                buf.append("\n".join(_table_rows(el)))
            elif el.tag in (_q("text", "list"), _q("text", "list-item"), _q("text", "section"), _q("text", "list-header")):
                walk(el)

    if body is not None:
        walk(body)
    flush()
    return sections


def _table_rows(table) -> list[str]:
    rows = []
    for tr in table.iter(_q("table", "table-row")):
        cells = [re.sub(r"\s+", " ", odf_text(c)).strip() for c in tr if c.tag == _q("table", "table-cell")]
        while cells and not cells[-1]:
            cells.pop()
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def _odp_sections(root) -> list:
    sections = []
    pages = root.iter(_q("draw", "page"))
    for number, page in enumerate(pages, start=1):
        title, lines, notes = "", [], ""
        for frame in page:
            if frame.tag == _q("presentation", "notes"):
                notes = "\n".join(odf_text(p).strip() for p in frame.iter(_q("text", "p")) if odf_text(p).strip())
                continue
            cls = frame.get(_q("presentation", "class"), "")
            if frame.find(f".//{_q('table', 'table')}") is not None:
                lines.append("\n".join(_table_rows(frame.find(f".//{_q('table', 'table')}"))))
                continue
            text = "\n".join(odf_text(p).strip() for p in frame.iter(_q("text", "p"), _q("text", "h")) if odf_text(p).strip())
            if cls == "title" and not title:
                title = re.sub(r"\s+", " ", text).strip()
            elif text:
                lines.append(text)
        if notes:
            lines.append("Speaker notes: " + notes)
        body = "\n\n".join(([title] if title else []) + lines).strip()
        if body:
            sections.append(Section(body, number, (title,) if title else ()))
    return sections


def read_odf_text(path: Path, filetype: str):
    """An .odt (headings as in a .docx) or an .odp (pages as slides)."""
    root = _odf_content(path, filetype)
    sections = _odp_sections(root) if filetype == "odp" else _odt_sections(root)
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, filetype, sections, None)


# ---------------------------------------------------------------- docx (Word)

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


def docx_sections(path) -> list[Section]:
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




def read_docx(path: Path, filetype: str) -> ParsedDocument:
    return ParsedDocument(path, "docx", docx_sections(macro_free(path, "docx")), None)
