"""Search filters: ``--glob`` and ``--type`` turned into a Milvus filter expression.

A glob is matched here against the manifest's paths (``glob_match``), and the expression names the
matching files by ``file_id``, so no user text ever reaches the expression unescaped; file types
are checked against a strict pattern before they do.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import PurePosixPath
from typing import Callable

from localrag.errors import BadInput
from localrag.kb.records import file_id

_FILETYPE_RE = re.compile(r"^[A-Za-z0-9_+.-]{1,32}$")


def canonical_filetypes(types: list[str]) -> list[str]:
    """``--type md`` means the stored ``markdown``: extensions and their names both work."""
    from localrag.kb.files import FILETYPES

    out = []
    for t in types:
        t = t.strip().lower().lstrip(".")
        out.append(FILETYPES.get("." + t, t))
    return list(dict.fromkeys(out))


def filter_expr(glob: str | None, filetypes: list[str] | None, files: Callable[[], dict]) -> str | None:
    """A Milvus expression for the filters; None when nothing can match. ``files()``: the KB's
    manifest (path -> ``FileRecord``), asked only when there is a glob."""
    parts = []
    if filetypes:
        types = canonical_filetypes(filetypes)
        types += [f"{t}+ocr" for t in types if "+" not in t]  # OCR'd pages are still that type
        bad = [t for t in types if not _FILETYPE_RE.match(t)]
        if bad:
            raise BadInput(f"invalid file type: {bad[0]!r}")
        parts.append("filetype in [" + ", ".join(f'"{t}"' for t in types) + "]")
    if glob:
        ids = [
            file_id(path)
            for path, rec in files().items()
            if glob_match(rec.source, glob) or glob_match(path, glob)
        ]
        if not ids:
            return None
        parts.append("file_id in [" + ", ".join(map(str, ids)) + "]")
    return " and ".join(parts)


def glob_match(path: str, pattern: str) -> bool:
    """Shell-style match where ``**`` spans folders and a pattern without '/' matches the name."""
    p = PurePosixPath(path.replace("\\", "/"))
    if "/" not in pattern:
        return fnmatch.fnmatch(p.name, pattern)
    regex = _glob_regex(pattern)
    return re.fullmatch(regex, str(p)) is not None


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
