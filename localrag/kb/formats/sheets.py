"""Spreadsheets and delimited text: .xlsx/.xlsm (openpyxl), .ods (zip + lxml), .csv/.tsv (csv).

A sheet is read row by row (openpyxl's read-only mode, lxml's iterparse, the csv reader), never
loaded whole, so a 50,000-row sheet costs memory for its text only. Rows become ``cell | cell``
lines, gathered into blocks of about ``BLOCK_TOKENS`` estimated tokens; each block is a section
whose heading is ``(sheet name, "rows 2–41")`` and whose text starts with the sheet's header row
(its first non-empty row), so every chunk of a sheet quotes the column names it needs. Formulas
are read as the values Excel last computed (``data_only``), and macros (.xlsm) are never loaded.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from localrag.kb.document import ParsedDocument, ParseError, Section, read_text_file

# a block of rows fits one 256-token chunk with its header and heading: CJK costs about a token
# a character, other text about a quarter
BLOCK_TOKENS = 160
MAX_COLUMNS = 200  # a runaway row (a formatted column to XFD) stops here
_CJK = re.compile(r"[\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def _tokens(text: str) -> int:
    cjk = len(_CJK.findall(text))
    return cjk + (len(text) - cjk) // 4 + 1


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="minutes") if (value.hour, value.minute, value.second) != (0, 0, 0) else value.date().isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return re.sub(r"\s+", " ", str(value)).strip()


def _line(values: Iterable) -> str:
    cells = [_cell(v) for v in values][:MAX_COLUMNS]
    while cells and not cells[-1]:
        cells.pop()
    return " | ".join(cells) if any(cells) else ""


def sheet_sections(name: str, rows: Iterator[tuple[int, str]]) -> list:
    """(row number, row line) pairs -> sections of about BLOCK_TOKENS, each led by the header row."""
    sections: list = []
    header = None
    block: list[tuple[int, str]] = []
    cost = 0
    budget = BLOCK_TOKENS

    def flush():
        if block:
            first, last = block[0][0], block[-1][0]
            label = f"row {first}" if first == last else f"rows {first}–{last}"
            lines = ([header[1]] if header else []) + [line for _, line in block]
            sections.append(Section("\n".join(lines), None, (name, label) if name else (label,)))
            block.clear()

    for number, line in rows:
        if not line:
            continue
        if header is None:
            header = (number, line)
            budget = max(BLOCK_TOKENS // 2, BLOCK_TOKENS - _tokens(line))
            continue
        t = _tokens(line)
        if block and cost + t > budget:
            flush()
            cost = 0
        block.append((number, line))
        cost += t
    flush()
    if not sections and header is not None:  # a sheet of one row
        sections.append(Section(header[1], None, (name, f"row {header[0]}") if name else (f"row {header[0]}",)))
    return sections


# ---------------------------------------------------------------- xlsx


def read_xlsx(path: Path, filetype: str):
    import zipfile

    from localrag.kb.formats.office import open_zip

    open_zip(path, "xlsx").close()
    import openpyxl

    try:
        wb = openpyxl.load_workbook(str(path), read_only=True, data_only=True, keep_vba=False, keep_links=False)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as exc:
        raise ParseError(f"damaged XLSX ({type(exc).__name__}: {str(exc)[:100]})") from None
    sections = []
    try:
        for ws in wb.worksheets:
            if not hasattr(ws, "iter_rows"):
                continue  # a chart sheet
            rows = ((i, _line(values)) for i, values in enumerate(ws.iter_rows(values_only=True), start=1))
            sections += sheet_sections(ws.title, rows)
    finally:
        wb.close()
    if not sections:
        raise ParseError("no cell has a value")
    return ParsedDocument(path, "xlsx", sections, None)


# ---------------------------------------------------------------- ods


def _ods_rows(fh) -> Iterator[tuple[str, int, str]]:
    """(sheet name, row number, row line) for every row of an .ods content.xml, streamed."""
    from lxml import etree

    from localrag.kb.formats.office import _q, odf_text

    table_tag, row_tag, cell_tags = _q("table", "table"), _q("table", "table-row"), (_q("table", "table-cell"), _q("table", "covered-table-cell"))
    name, number = "", 0
    for event, el in etree.iterparse(fh, events=("start", "end"), tag=(table_tag, row_tag), huge_tree=True, resolve_entities=False, no_network=True):
        if el.tag == table_tag:
            if event == "start":
                name, number = el.get(_q("table", "name"), ""), 0
            else:
                el.clear()
            continue
        if event != "end":
            continue
        values: list[str] = []
        for c in el:
            if c.tag not in cell_tags:
                continue
            text = "\n".join(odf_text(p) for p in c if p.tag == _q("text", "p"))
            repeat = int(c.get(_q("table", "number-columns-repeated"), "1") or 1)
            values += [text] * min(repeat, MAX_COLUMNS - len(values))
            if len(values) >= MAX_COLUMNS:
                break
        repeat = int(el.get(_q("table", "number-rows-repeated"), "1") or 1)
        line = _line(values)
        # a repeated non-empty row is real data (rare); repeated empty rows pad sheets to 1M rows
        for _ in range(min(repeat, 1000) if line else 1):
            number += 1
            yield name, number, line
        if not line:
            number += repeat - 1
        el.clear()
        while el.getprevious() is not None:
            del el.getparent()[0]


def read_ods(path: Path, filetype: str):
    from itertools import groupby

    from lxml import etree

    from localrag.kb.formats.office import open_zip

    sections = []
    with open_zip(path, "ods") as zf:
        try:
            with zf.open("content.xml") as fh:
                for name, rows in groupby(_ods_rows(fh), key=lambda r: r[0]):
                    sections += sheet_sections(name, ((n, line) for _, n, line in rows))
        except KeyError:
            raise ParseError("damaged ODS (no content.xml)") from None
        except etree.XMLSyntaxError as exc:
            raise ParseError(f"damaged ODS (content.xml: {str(exc)[:100]})") from None
    if not sections:
        raise ParseError("no cell has a value")
    return ParsedDocument(path, "ods", sections, None)


# ---------------------------------------------------------------- csv / tsv


def read_csv(path: Path, filetype: str):
    text, encoding, warnings = read_text_file(path, filetype)
    if path.suffix.lower() == ".tsv":
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(text[:16384], delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    csv.field_size_limit(16 * 1024 * 1024)
    import io

    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        sections = sheet_sections("", ((i, _line(row)) for i, row in enumerate(reader, start=1)))
    except csv.Error as exc:
        raise ParseError(f"malformed {path.suffix.lstrip('.').upper() or 'CSV'} ({exc})") from None
    if not sections:
        raise ParseError("no text")
    return ParsedDocument(path, "csv", sections, encoding, warnings)
