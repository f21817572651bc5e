"""Where each figure of an answer stands in the sources, in the sources' own words.

Asked for a quantity the documents never give, the 1.5B answers with a number the sources do hold,
in another context: "the maximum length of a collection's description is 255 characters [2]",
where source [2] gives 255 as the limit of a resource *name* (BENCHMARKS §18: 17 of 24 unanswerable
quantity questions). No check tried separates those from right answers well enough to withhold
them (§17, §18). So each figure is shown with the line of the source that holds it, beside the
answer: the reader sees "Length of a resource name | 255 characters" and can judge in a glance,
without opening the source.

A figure is looked for first in the sources its sentence cites (or the "This is stated in [2]."
after it), then in this turn's other sources, then in earlier turns'; within a source, where a
unit of its kind is close by, outside code, before elsewhere. The quote is the source's own text
(digits grouped as it groups them), its Markdown and HTML markup dropped: a table row's first cell
and the cell with the figure, or the sentence of a long line. Figures the question states, figures
in code, ordinals ("99th") and figures whose quote the answer already copies are not quoted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping

from localrag.rag import answer_text, figures

MAX_QUOTES = 4
_QUOTE_WIDTH = 160  # display columns (a CJK character takes two); a longer quote is cut around the figure


@dataclass(frozen=True)
class FigureQuote:
    figure: str  # as the answer states it ("255 characters", "10 分钟"); several when one line holds them
    n: int  # the source that holds it
    quote: str  # that source's words around it


def quotes(answer: str, sources: Mapping[int, str], question: str = "", current: Iterable[int] = ()) -> list[FigureQuote]:
    """Up to ``MAX_QUOTES`` figures of ``answer`` with the source words that hold each.
    ``sources`` maps each valid citation number to the text the model was shown; ``current``:
    this turn's numbers (preferred to earlier turns')."""
    asked = figures._plain(question)
    this_turn = sorted(n for n in current if n in sources)
    rest = sorted(n for n in sources if n not in this_turn)
    flat = _flat(answer_text.CITATION.sub("", answer))
    out: list[FigureQuote] = []
    seen: set[str] = set()
    units = answer_text.claim_units(answer)
    for i, unit in enumerate(units):
        cited = _cited(unit) + (_cited(units[i + 1]) if i + 1 < len(units) and figures.is_pointer(units[i + 1]) else [])
        order = list(dict.fromkeys([n for n in cited if n in sources] + this_turn + rest))
        for fig in figures._stated(unit):
            if fig.shown in seen or _number(fig.number).search(asked) or _ordinal(fig.number, unit):
                continue
            seen.add(fig.shown)
            found = next(((n, q) for n in order if (q := _quote(fig, sources[n]))), None)
            if found is None or _flat(found[1]) in flat:
                continue
            same = next((k for k, q in enumerate(out) if (q.n, q.quote) == found), None)
            if same is not None:  # one line holding several of the answer's figures: one row
                out[same] = FigureQuote(f"{out[same].figure}, {fig.as_written}", *found)
            elif len(out) < MAX_QUOTES:
                out.append(FigureQuote(fig.as_written, *found))
    return out


def _cited(unit: str) -> list[int]:
    return [n for m in answer_text.prose_citations(unit) for n in answer_text.cited_numbers(m.group(1))]


def _number(number: str) -> re.Pattern:
    """``number`` ("16384", "2.4") as a source may write it ("16,384", "16 384"), not inside a
    longer number ("2.4.2", "99.9", "[1,100]")."""
    whole, _, frac = number.partition(".")
    groups = [whole[max(0, k - 3) : k] for k in range(len(whole), 0, -3)][::-1]
    body = "[,\u00a0\u202f ]?".join(map(re.escape, groups)) if len(whole) > 3 else re.escape(whole)
    if frac:
        body += re.escape("." + frac)
    return re.compile(rf"(?<![\d.,\[]){body}(?!\.?\d|,\d)")  # "[1,100]" is a range, not 1100


def _ordinal(number: str, unit: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(number)}(?:st|nd|rd|th)\b", unit) is not None


def _quote(fig, text: str) -> str | None:
    """The words of ``text`` around ``fig``; None where the source does not ground it."""
    if not figures._grounded(fig, figures._plain(text)):
        return None
    kinds = figures._kinds(fig.unit)
    # a single digit counts only right before its unit
    pattern = figures.single_digit(fig) if len(re.sub(r"\D", "", fig.number)) < 2 else _number(fig.number)
    code = [m.span() for m in answer_text.CODE.finditer(text)]
    unit_next = re.compile(rf"\s?(?:{figures._unit_of(kinds)})(?![A-Za-z])", re.IGNORECASE) if kinds else None

    def rank(m: re.Match) -> tuple[bool, bool, bool]:
        """Its unit right after it, then close by, then outside code: the best place first."""
        if unit_next is None:
            return (False, False, any(a <= m.start() < b for a, b in code))
        near = figures._near_unit(fig.number, kinds, figures._plain(
            text[max(0, m.start() - figures._UNIT_REACH) : m.end() + figures._UNIT_REACH]))
        return (not unit_next.match(text, m.end()), not near, any(a <= m.start() < b for a, b in code))

    best = min(pattern.finditer(text), key=rank, default=None)  # min keeps the first of equals
    return _around(text, best) if best else None


def _around(text: str, m: re.Match) -> str:
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    line = text[start : len(text) if end < 0 else end]
    at = m.start() - start
    if line.lstrip().startswith("|"):
        quote = _row(line, at)
    else:
        clean, where = _display(line, at)
        if _width(clean) > _QUOTE_WIDTH:
            clean, where = _sentence(clean, where)
        quote = _cut(clean, where)
    if m.group(0) not in quote:  # markup that held the figure: the plain line, cut around it
        quote = _cut(re.sub(r"\s+", " ", line).strip(), at)
    return quote


def _row(line: str, at: int) -> str:
    """A Markdown table row: its first cell (what the row is about) and the cell with the figure."""
    cells, pos = [], 0
    for cell in line.split("|"):
        cells.append((pos, cell))
        pos += len(cell) + 1
    cells = [(p, c) for p, c in cells if c.strip()]
    hit = next(((p, c) for p, c in reversed(cells) if p <= at), cells[0])
    first = _display(cells[0][1], 0)[0]
    value, where = _display(hit[1], at - hit[0])
    if hit is cells[0] or first == value:
        return _cut(value, where)
    lead = _cut(first, 0, _QUOTE_WIDTH // 2)
    return f"{lead} | {_cut(value, where, _QUOTE_WIDTH - _width(lead) - 3)}"


_MARKUP = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>\n]{0,200})?/?>|\*\*|__|`|!?\[([^\]\n]*)\]\([^)\n]*\)")


def _display(text: str, at: int) -> tuple[str, int]:
    """``text`` without Markdown and HTML markup, whitespace runs as one space, and where
    position ``at`` lands in it."""
    out, pos, size, new_at = [], 0, 0, None
    for m in _MARKUP.finditer(text):
        if new_at is None and at < m.start():
            new_at = size + max(0, at - pos)
        kept = text[pos : m.start()] + (m.group(1) or (" " if m.group(0).startswith("<") else ""))
        out.append(kept)
        size += len(kept)
        pos = m.end()
    if new_at is None:
        new_at = size + max(0, at - pos)
    out.append(text[pos:])
    raw = "".join(out)
    def tidy(part: str) -> str:
        return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s+", " ", part))

    head = tidy(raw[:new_at]).lstrip()
    return tidy(raw).strip(), len(head)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


def _sentence(line: str, at: int) -> tuple[str, int]:
    """The sentence of ``line`` around position ``at``, and ``at`` within it."""
    start = 0
    for m in _SENTENCE_END.finditer(line):
        if m.end() > at:
            return line[start : m.start()], at - start
        start = m.end()
    return line[start:], at - start


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, at: int, width: int = _QUOTE_WIDTH) -> str:
    """``text`` cut to ``width`` columns around position ``at``, at spaces where there are any."""
    if _width(text) <= width:
        return text
    start, end = at, at
    while (start > 0 or end < len(text)) and _width(text[start:end]) < width:
        if start > 0 and (at - start <= (end - at) or end >= len(text)):
            start -= 1
        else:
            end += 1
    # a word cut in two reads badly: move in to the nearest space, unless that loses much (CJK
    # text has few spaces)
    if start > 0 and " " in text[start : min(at, start + 20)]:
        start = text.index(" ", start) + 1
    if end < len(text) and " " in text[max(at, end - 20) : end]:
        end = text.rindex(" ", max(at, end - 20), end)
    return ("…" if start > 0 else "") + text[start:end].strip() + ("…" if end < len(text) else "")


def _flat(text: str) -> str:
    return re.sub(r"[\s*`_]+", "", figures._plain(text)).lower()
