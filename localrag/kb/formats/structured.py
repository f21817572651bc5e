"""Structured text: JSON / JSON Lines, reStructuredText, Org, and source code.

* JSON: the values under each key path, as ``key: value`` lines, in a section whose heading is
  the path. An array item that names itself (a ``title``/``label``/``name``/``id`` member) is
  called by that name, so a menu reads "About Milvus > What is Milvus" rather than
  "[0] > children > [0]". JSON Lines are read a line at a time, one record per line.
* reStructuredText: section titles (underlined, optionally overlined; levels in order of first
  use, as docutils assigns them) split the text. Org: ``*`` headlines, ``#+TITLE`` on top.
* Source code: each top-level definition (Python via ``ast``: classes, functions and methods;
  other languages by their definition keywords at the start of a line) is a section headed by
  its symbol and its line range, so a citation names the file, the symbol and the lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from localrag.kb.document import ParsedDocument, ParseError, Section, read_text_file, strip_blank_edges

_NAME_KEYS = ("title", "label", "name", "id", "key")
_MAX_SCALAR = 2000  # characters of one value kept (a base64 blob says nothing)


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    text = str(value)
    return text if len(text) <= _MAX_SCALAR else text[:_MAX_SCALAR] + " …"


def _item_name(item, key: str, i: int) -> str:
    if isinstance(item, dict):
        for k in _NAME_KEYS:
            v = item.get(k)
            if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).strip():
                return re.sub(r"\s+", " ", str(v)).strip()[:80]
    return f"{key}[{i}]" if key else f"[{i}]"


def json_sections(value, path: tuple[str, ...], out: list, depth: int = 0) -> None:
    """Sections for ``value`` at key path ``path``: its scalars here, its containers below."""
    if depth > 64:  # a pathological nesting: the rest stays a JSON string
        out.append(Section(json.dumps(value, ensure_ascii=False)[:_MAX_SCALAR], None, path))
        return
    lines: list[str] = []
    nested: list[tuple[tuple[str, ...], object]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            k = str(k)
            if isinstance(v, dict) and v:
                nested.append((path + (k,), v))
            elif isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v):
                for i, item in enumerate(v):
                    nested.append((path + (_item_name(item, k, i),), item))
            elif isinstance(v, list):
                if v:
                    lines.append(f"{k}: " + ", ".join(_scalar(x) for x in v))
            elif v not in ("", None):
                lines.append(f"{k}: {_scalar(v)}")
    elif isinstance(value, list):
        scalars = [x for x in value if not isinstance(x, (dict, list))]
        if scalars:
            lines.append(", ".join(_scalar(x) for x in scalars))
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)):
                nested.append((path + (_item_name(item, "", i),), item))
    elif value not in ("", None):
        lines.append(_scalar(value))
    if lines:
        out.append(Section("\n".join(lines), None, path))
    for p, v in nested:
        json_sections(v, p, out, depth + 1)


def read_json(path: Path, filetype: str):
    text, encoding, warnings = read_text_file(path, filetype)
    sections: list = []
    if filetype == "jsonl":
        bad = 0
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            # the line number is the record's address; its own name (an id, a title) follows
            root = (f"line {n}",)
            name = _item_name(record, "", 0) if isinstance(record, dict) else "[0]"
            json_sections(record, root if name == "[0]" else root + (name,), sections)
        if bad:
            warnings.append(f"{bad} line(s) are not JSON")
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ParseError(f"invalid JSON ({str(exc)[:100]})") from None
        json_sections(data, (), sections)
    if not sections:
        raise ParseError("no values")
    return ParsedDocument(path, filetype, sections, encoding, warnings)


# ---------------------------------------------------------------- reST and Org


def _split_at(lines: list[str], heads: list[tuple[int, int, int, str]], root: tuple[str, ...] = ()) -> list:
    """Sections of ``lines`` cut at ``heads`` = (first line, text line, level, title)."""
    sections, stack = [], []
    bounds = [h[0] for h in heads] + [len(lines)]
    pre = strip_blank_edges("\n".join(lines[: bounds[0]]))
    if pre:
        sections.append(Section(pre, None, root))
    for (first, _t, level, title), nxt in zip(heads, bounds[1:]):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        body = strip_blank_edges("\n".join(lines[first:nxt]))
        if body:
            sections.append(Section(body, None, root + tuple(t for _, t in stack)))
    return sections


_RST_ADORN = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")


def read_rst(path: Path, filetype: str):
    text, encoding, warnings = read_text_file(path, filetype)
    lines = text.split("\n")
    styles: list[tuple[str, bool]] = []
    heads = []
    i = 0
    while i < len(lines) - 1:
        over = _RST_ADORN.match(lines[i])
        if over and i + 2 < len(lines) and lines[i + 1].strip() and _RST_ADORN.match(lines[i + 2]) and lines[i + 2].strip() == lines[i].strip():
            style, first, title, i_next = (over.group(1), True), i, lines[i + 1].strip(), i + 3
        elif lines[i].strip() and not lines[i].startswith((" ", "\t")) and _RST_ADORN.match(lines[i + 1]) and len(lines[i + 1].strip()) >= len(lines[i].strip()) and (i == 0 or not lines[i - 1].strip()):
            style, first, title, i_next = (lines[i + 1].strip()[0], False), i, lines[i].strip(), i + 2
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        heads.append((first, first, styles.index(style) + 1, title))
        i = i_next
    sections = _split_at(lines, heads)
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, "rst", sections, encoding, warnings)


_ORG_HEAD = re.compile(r"^(\*+)\s+(?:(?:TODO|DONE)\s+)?(.*?)(?:\s+:[\w@#%:]+:)?\s*$")
_ORG_TITLE = re.compile(r"^#\+TITLE:\s*(.+)$", re.I | re.M)


def read_org(path: Path, filetype: str):
    text, encoding, warnings = read_text_file(path, filetype)
    lines = text.split("\n")
    heads = []
    for n, line in enumerate(lines):
        m = _ORG_HEAD.match(line)
        if m and m.group(2):
            heads.append((n, n, len(m.group(1)), m.group(2)))
    title = _ORG_TITLE.search(text)
    sections = _split_at(lines, heads, (title.group(1).strip(),) if title else ())
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, "org", sections, encoding, warnings)


# ---------------------------------------------------------------- source code

_DEFINITION = re.compile(
    r"^(?:export\s+)?(?:pub(?:\([^)]*\))?\s+)?(?:public\s+|private\s+|protected\s+|static\s+|async\s+|abstract\s+|final\s+)*"
    r"(?:def|class|function|func|fn|interface|struct|enum|trait|impl|module|type|object|CREATE\s+(?:TABLE|VIEW|FUNCTION))\s+"
    r"([A-Za-z_][\w.:<>]*)",
    re.I,
)


def _python_heads(text: str) -> list[tuple[int, int, int, str]] | None:
    import ast

    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    heads = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            heads.append((first, first, 1, f"{kind} {node.name}"))
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        f = min([sub.lineno] + [d.lineno for d in sub.decorator_list]) - 1
                        heads.append((f, f, 2, f"def {sub.name}"))
    return sorted(heads)


def read_code(path: Path, filetype: str):
    text, encoding, warnings = read_text_file(path, filetype)
    lines = text.split("\n")
    heads = _python_heads(text) if path.suffix.lower() == ".py" else None
    if heads is None:
        heads = []
        for n, line in enumerate(lines):
            m = _DEFINITION.match(line)
            if m:
                heads.append((n, n, 1, m.group(0).strip()[:120]))
    # each symbol carries its line range: a second heading level that also keeps neighbouring
    # small definitions from being merged into one chunk under no symbol at all
    heads = sorted(heads)
    sections = []
    for sec in _split_at(lines, heads):
        start = next((h[0] for h in heads if sec.heading and h[3] == sec.heading[-1]), 0)
        n = sec.text.count("\n") + 1
        first = start + 1 if sec.heading else 1
        sections.append(type(sec)(sec.text, None, (sec.heading or ("top of file",)) + (f"lines {first}–{first + n - 1}" if n > 1 else f"line {first}",)))
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, "code", sections, encoding, warnings)
