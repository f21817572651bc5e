"""Markdown, HTML and plain text.

* Markdown: markdown-it-py finds the headings (ATX and setext, not ``#`` lines inside code
  fences); a section keeps its raw Markdown lines, heading line included, so code blocks,
  tables and links stay verbatim and quotable. Raw HTML blocks are the exception: a reader (and
  the model) is shown what they display. Documentation writes parameter tables, notes and
  collapsible FAQs as HTML inside Markdown (14% of the milvus-docs characters), and their tags
  cost prompt tokens and blur the embedding while saying nothing. A block holding a table is
  read as HTML (rows of " | " cells: the chunker repeats the header row); a block that is one
  ``<pre>`` becomes a fenced block, one ``<h3>`` a heading; any other block (a note, a list, a
  ``<details>``, often wrapping Markdown) loses its tag-only lines and its tags, its text kept
  line by line. Headings come from the Markdown and those ``<hN>`` blocks only, never from text
  that came out of HTML. Blocks inside lists and quotes stay as written.
* HTML: BeautifulSoup over lxml (tolerant of broken markup), walking the main content
  (``<main>``/``<article>`` when present) and dropping scripts, styles, navigation, forms.
  trafilatura was not used: its boilerplate removal is tuned for news pages and throws away
  parts of documentation pages, and it brings half a dozen more dependencies. EPUB chapters and
  HTML mail bodies reuse ``html_sections``.
* Plain text: decoded as described in ``document.decode_text``, one section.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from localrag.kb.document import ParsedDocument, ParseError, Section, clean_text, decode_text, read_text_file, strip_blank_edges

_FRONT_MATTER = re.compile(r"\A(?:---|\+\+\+)[ \t]*\n(.*?\n)?(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FM_TITLE = re.compile(r"^title\s*[:=]\s*['\"]?(.*?)['\"]?\s*$", re.M)


_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKS = re.compile(r"<[^>]+>|[`*]|(?<!\w)_+|_+(?!\w)|\\(?=[^\w\s])")


def _heading_text(raw: str) -> str:
    """A heading's plain text: links to their words, emphasis/code marks and tags dropped."""
    text = _MD_MARKS.sub("", _MD_LINK.sub(r"\1", raw))
    return re.sub(r"\s+", " ", text).strip() or raw.strip()


_HTML_HEADING = re.compile(r"\s*<h([1-6])\b[^>]*>((?:(?!</?h[1-6]\b).)*)</h\1>\s*", re.S | re.I)
# the tags of a note, a list or a collapsible block written around Markdown text: dropped from its
# lines, the text kept as written (only these names: "<component-host>" in prose is not a tag)
_LINE_TAG = re.compile(
    r"</?(?:p|div|span|font|b|strong|i|em|u|s|a|ul|ol|li|dl|dt|dd|details|summary|center|section|article|"
    r"aside|figure|figcaption|blockquote|img|br|hr|sup|sub|small|mark|kbd|var|samp|abbr|cite|q|label)\b[^<>]*/?>",
    re.I,
)


def _markdown_parser():
    from markdown_it import MarkdownIt

    # block structure is all that is needed (headings, code fences, HTML blocks); skipping the
    # inline pass makes the parse 2.4x faster
    return MarkdownIt("commonmark", {"html": True}).disable("inline")


def _html_block_text(html: str) -> tuple[list[str], tuple[int, str] | None]:
    """What a raw HTML block in Markdown shows, as lines, and (level, text) when it is a heading.
    A table (with anything around it) is read as HTML; other blocks lose their tag-only lines and
    their tags, their text and layout kept (they often wrap Markdown: notes, lists, code)."""
    if re.fullmatch(r"\s*<!--.*-->\s*", html, re.S):
        return [], None  # <!-- TOC --> and such
    heading = _HTML_HEADING.fullmatch(html)
    if heading:
        words = _heading_text(heading.group(2))
        return ([], None) if not words else (["#" * int(heading.group(1)) + " " + words], (int(heading.group(1)), words))
    if re.match(r"\s*<pre\b", html, re.I):
        from bs4 import BeautifulSoup

        code = BeautifulSoup(html, "lxml").get_text().strip("\n")
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", code)), default=0))
        return ([fence, *code.split("\n"), fence] if code.strip() else []), None
    if re.search(r"<table\b", html, re.I):
        return "\n\n".join(section.text for section in html_sections(html)).split("\n"), None
    out = []
    for line in html.rstrip("\n").split("\n"):
        text = _LINE_TAG.sub("", re.sub(r"</?code>", "`", line, flags=re.I)).rstrip()
        if text.strip() or not line.strip():
            out.append(text)
    return out, None


def _html_blocks_as_text(lines: list[str], blocks, headings: list[tuple]) -> tuple[list[str], list[tuple]]:
    """``lines`` with each top-level HTML block replaced by what it shows, and the headings (first
    line, end line, level, text) moved to their new lines, plus those the blocks were. The first
    parse's headings are kept rather than parsing again: text out of HTML ("# | id | name", a
    shell comment in a <pre>) must not become a heading."""
    out: list[str] = []
    moved: list[tuple] = []
    pos = 0
    for tok in [*blocks, None]:
        a, b = tok.map if tok is not None else (len(lines), len(lines))
        shift = len(out) - pos
        moved += [(first + shift, end + shift, level, name) for first, end, level, name in headings if pos <= first < a]
        out.extend(lines[pos:a])
        if tok is None:
            break
        shown, heading = _html_block_text(tok.content)
        # a blank line on each side, so it is never glued to a paragraph, but not a second one
        if out and out[-1].strip():
            out.append("")
        if heading:
            moved.append((len(out), len(out) + 1, *heading))
        out.extend(shown)
        if shown and b < len(lines) and lines[b].strip():
            out.append("")
        pos = b
    return out, sorted(moved)


def markdown_sections(text: str) -> list[Section]:
    title = None
    fm = _FRONT_MATTER.match(text)
    if fm:
        m = _FM_TITLE.search(fm.group(1) or "")
        title = m.group(1).strip() if m else None
        text = text[fm.end() :]
    tokens = _markdown_parser().parse(text)
    lines = text.split("\n")
    headings = []  # (first line, end line, level, text)
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.level == 0 and tok.map:
            headings.append((tok.map[0], tok.map[1], int(tok.tag[1]), _heading_text(tokens[i + 1].content)))
    # inside a list or a quote a block keeps its prefixes only as written: those are left alone
    blocks = [tok for tok in tokens if tok.type == "html_block" and tok.map and tok.level == 0]
    if blocks:
        lines, headings = _html_blocks_as_text(lines, blocks, headings)
    has_h1 = any(level == 1 for _, _, level, _ in headings)
    root: tuple[str, ...] = (title,) if title and not has_h1 else ()
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    starts = [h[0] for h in headings] + [len(lines)]
    preamble = strip_blank_edges("\n".join(lines[: starts[0]]))
    if preamble:
        sections.append(Section(preamble, None, root))
    for (first, _end, level, name), nxt in zip(headings, starts[1:]):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        body = strip_blank_edges("\n".join(lines[first:nxt]))
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


def decode_html(data: bytes) -> tuple[str, str, list[str]]:
    declared = _META_CHARSET.search(data[:4096])
    if declared and not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        name = declared.group(1).decode("ascii", "ignore").lower()
        try:
            return data.decode(name), name, []
        except (UnicodeDecodeError, LookupError):
            pass
    return decode_text(data)


def html_sections(text: str) -> list[Section]:
    """Sections of an HTML/XHTML page, under its headings (and its title when it has no h1)."""
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



def read_text(path: Path, filetype: str) -> ParsedDocument:
    """A Markdown, HTML or plain-text file (any type without a reader of its own reads as text)."""
    if filetype == "html":
        text, encoding, warnings = decode_html(path.read_bytes())
        text = clean_text(text)
    else:
        text, encoding, warnings = read_text_file(path, filetype)
    if filetype == "markdown":
        sections = markdown_sections(text)
    elif filetype == "html":
        sections = html_sections(text)
    else:
        body = strip_blank_edges(text)
        sections = [Section(body, None, ())] if body else []
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, filetype, sections, encoding, warnings)
