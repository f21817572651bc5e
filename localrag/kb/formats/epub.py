"""E-books: .epub, read as what it is (a zip of XHTML chapters) with the HTML reader (formats/text.py).

The reading order is the OPF spine; a chapter's title comes from the table of contents (EPUB 3
``nav`` document, else EPUB 2 ``toc.ncx``), else from the chapter's own heading, and heads the
heading path of every section in it. ebooklib would do the same but is AGPL; the zip and XML
handling here is the standard library's and lxml's.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from pathlib import Path
from urllib.parse import unquote

from localrag.kb.document import ParsedDocument, ParseError, Section, clean_text
from localrag.kb.formats.text import decode_html, html_sections

_NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "ncx": "http://www.daisy.org/z3986/2005/ncx/",
    "x": "http://www.w3.org/1999/xhtml",
    "epub": "http://www.idpf.org/2007/ops",
    "enc": "http://www.w3.org/2001/04/xmlenc#",
}
_HTML_TYPES = {"application/xhtml+xml", "text/html", "application/x-dtbook+xml"}
_MAX_CHAPTER_BYTES = 32 * 1024 * 1024


def _xml(zf: zipfile.ZipFile, name: str):
    from lxml import etree

    with zf.open(name) as fh:
        return etree.parse(fh, etree.XMLParser(resolve_entities=False, no_network=True, recover=True)).getroot()


def _join(base: str, href: str) -> str:
    return posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(href.split("#", 1)[0])))


def _toc_titles(zf: zipfile.ZipFile, opf_path: str, opf, manifest: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Chapter file -> its first title in the table of contents."""
    titles: dict[str, str] = {}
    nav = [href for href, props in ((h, p) for h, _t, p in manifest.values()) if "nav" in props.split()]
    try:
        if nav:
            root = _xml(zf, nav[0])
            for nav_el in root.iter("{%s}nav" % _NS["x"]):
                if nav_el.get("{%s}type" % _NS["epub"], "") != "toc":
                    continue
                for a in nav_el.iter("{%s}a" % _NS["x"]):
                    title = re.sub(r"\s+", " ", "".join(a.itertext())).strip()
                    if a.get("href") and title:
                        titles.setdefault(_join(nav[0], a.get("href")), title)
        spine = opf.find("opf:spine", _NS)
        ncx_id = spine.get("toc") if spine is not None else None
        if not titles and ncx_id and ncx_id in manifest:
            ncx_path = manifest[ncx_id][0]
            root = _xml(zf, ncx_path)
            for point in root.iter("{%s}navPoint" % _NS["ncx"]):
                label = point.find("ncx:navLabel/ncx:text", _NS)
                content = point.find("ncx:content", _NS)
                if label is not None and content is not None and label.text and content.get("src"):
                    titles.setdefault(_join(ncx_path, content.get("src")), re.sub(r"\s+", " ", label.text).strip())
    except (KeyError, ValueError):
        pass  # a broken table of contents costs the titles, not the text
    return titles


def read_epub(path: Path, filetype: str):
    from localrag.kb.formats.office import open_zip

    with open_zip(path, "epub") as zf:
        try:
            container = _xml(zf, "META-INF/container.xml")
            rootfile = container.find(".//c:rootfile", _NS)
            opf_path = rootfile.get("full-path")
            opf = _xml(zf, opf_path)
        except (KeyError, AttributeError, TypeError):
            raise ParseError("damaged EPUB (no readable package document)") from None
        if "META-INF/encryption.xml" in zf.namelist():
            enc = _xml(zf, "META-INF/encryption.xml")
            refs = [r.get("URI", "") for r in enc.iter("{%s}CipherReference" % _NS["enc"])]
            if any(re.search(r"\.x?html?$", r, re.I) for r in refs):
                raise ParseError("DRM-protected EPUB (its chapters are encrypted)")
        manifest = {
            item.get("id"): (_join(opf_path, item.get("href", "")), item.get("media-type", ""), item.get("properties", ""))
            for item in opf.iterfind("opf:manifest/opf:item", _NS)
        }
        titles = _toc_titles(zf, opf_path, opf, manifest)
        sections: list = []
        chapter = ""
        for ref in opf.iterfind("opf:spine/opf:itemref", _NS):
            href, media, _props = manifest.get(ref.get("idref"), ("", "", ""))
            if not href or media not in _HTML_TYPES:
                continue
            try:
                info = zf.getinfo(href)
            except KeyError:
                continue  # a spine entry the zip lacks: the other chapters still count
            if info.file_size > _MAX_CHAPTER_BYTES:
                continue
            text, _enc, _w = decode_html(zf.read(info))
            chapter = titles.get(href, chapter)
            # the XML declaration would only make BeautifulSoup's HTML parser warn
            text = re.sub(r"\A\s*<\?xml[^>]*\?>", "", clean_text(text))
            for sec in html_sections(text):
                own = sec.heading or ()
                if chapter and (not own or own[0] != chapter):
                    own = (chapter, *own)
                sections.append(Section(sec.text, None, own))
    if not sections:
        raise ParseError("no text in any chapter")
    return ParsedDocument(path, "epub", sections, None)
