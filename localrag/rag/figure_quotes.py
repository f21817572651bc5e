"""Where each figure of an answer stands in the sources, in the sources' own words.

Asked for a quantity the documents never give, the 1.5B answers with a number the sources do hold,
in another context: "the maximum length of a collection's description is 255 characters [2]",
where source [2] gives 255 as the limit of a resource *name* (BENCHMARKS §18: 17 of 24 unanswerable
quantity questions). No check tried separates those from right answers well enough to withhold
them (§17, §18). So each figure is shown with the line of the source that holds it, beside the
answer: the reader sees "Length of a resource name | 255 characters" and can judge in a glance,
without opening the source.

A figure is looked for first in the sources its sentence cites, then in the others, matched as
rag/figures.py grounds it (the number, and a unit of its kind close by when it has one). Figures
that the question itself states, and figures in code, are not quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from localrag.rag import answer_text, figures

MAX_QUOTES = 4
_QUOTE_CHARS = 160  # a longer line is cut to this much around the figure


@dataclass(frozen=True)
class FigureQuote:
    figure: str  # as the answer states it ("255 characters", "10 分钟")
    n: int  # the source that holds it
    quote: str  # that source's line around it


def quotes(answer: str, sources: Mapping[int, str], question: str = "") -> list[FigureQuote]:
    """Up to ``MAX_QUOTES`` figures of ``answer`` with the source line that holds each.
    ``sources`` maps each valid citation number to the text the model was shown."""
    asked = figures._plain(question)
    plain = {n: figures._plain(text) for n, text in sources.items()}
    out: list[FigureQuote] = []
    seen: set[str] = set()
    for unit in answer_text.claim_units(answer):
        cited = [n for m in answer_text.prose_citations(unit) for n in answer_text.cited_numbers(m.group(1))]
        order = list(dict.fromkeys([n for n in cited if n in plain] + sorted(plain)))
        for fig in figures._stated(unit):
            if fig.shown in seen or _occurs(fig.number, asked):
                continue
            seen.add(fig.shown)
            found = next(((n, q) for n in order if (q := _quote(fig, plain[n]))), None)
            if found:
                out.append(FigureQuote(fig.shown, found[0], found[1]))
                if len(out) == MAX_QUOTES:
                    return out
    return out


def _occurs(number: str, text: str) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(number)}(?!\d)", text) is not None


def _quote(fig, text: str) -> str | None:
    """The line of ``text`` where ``fig`` is grounded, cut around it; None where it is not."""
    if not figures._grounded(fig, text):
        return None
    hits = list(re.finditer(rf"(?<![\d.]){re.escape(fig.number)}(?!\d)", text))
    if not hits:  # a single digit grounded by its word ("five minutes")
        return None
    kinds = figures._kinds(fig.unit)
    places = [_place(text, m) for m in hits]
    line, at = next((p for p in places if not kinds or figures._near_unit(fig.number, kinds, p[0])), places[0])
    if len(line) > _QUOTE_CHARS:
        start = max(0, at - _QUOTE_CHARS // 2)
        line = ("…" if start > 0 else "") + line[start : start + _QUOTE_CHARS].strip() + (
            "…" if start + _QUOTE_CHARS < len(line) else "")
    return re.sub(r"\s+", " ", line).strip()


def _place(text: str, m: re.Match) -> tuple[str, int]:
    """The line holding match ``m`` (its sentence, for a long line of prose), and where in it the
    match starts: "10 minutes" is quoted from its own sentence, not one with a range(10)."""
    line, at = _line(text, m)
    return _sentence(line, at) if len(line) > _QUOTE_CHARS else (line, at)


def _line(text: str, m: re.Match) -> tuple[str, int]:
    """The line holding match ``m`` and where in it the match starts."""
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.end())
    end = len(text) if end < 0 else end
    return text[start:end], m.start() - start


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？；])")


def _sentence(line: str, at: int) -> tuple[str, int]:
    """The sentence of ``line`` around position ``at``, and ``at`` within it."""
    start = 0
    for m in _SENTENCE_END.finditer(line):
        if m.end() > at:
            return line[start : m.start()], at - start
        start = m.end()
    return line[start:], at - start
