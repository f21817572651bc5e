"""The text an answer comes back as: code spans, citation markers and the sentence each belongs
to, and how answers say that the documents do not say.

One definition of each, for every rule that reads or rewrites an answer (session.py's finishing
steps, rag/attribution.py, rag/figures.py) and for the scorer (rag/evaluate.py).
"""

from __future__ import annotations

import bisect
import os.path
import re
from typing import Callable, Sequence

from localrag.rag.prompt import FENCE, note_parts, split_units


# --- citations ----------------------------------------------------------------------------------

# Code in an answer (fenced or inline) and a citation marker ("[1]", "[2, 3]", "[4-5]"): the one
# definition every rule about an answer's text uses (rag/figures.py, rag/evaluate.py too).
# A fence left open runs to the end (\Z, not $, which also matches before a final newline); a
# backtick that nothing on its line closes is prose, so it cannot shield a marker or a figure.
_FENCED = r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)"
CODE = re.compile(rf"({_FENCED}|`[^`\n]*`)", re.DOTALL)
FENCED = re.compile(_FENCED, re.DOTALL)  # code blocks only
# (Spaces, not line breaks: a bracket across lines is not a citation.)
_SP = r"[^\S\n]"
_SEP = r"(?:,|;|，|and|-|–)"
CITATION = re.compile(rf"\[({_SP}*\d{{1,3}}{_SP}*(?:{_SEP}{_SP}*\d{{1,3}}{_SP}*)*)\]")


# The prompt's own markup copied into an answer: "根据 [source n="4"] 文档" (the 1.5B, once in ~400
# answers) reads as the citation it means; a closing tag means nothing. Attribute values are
# quoted and may hold "]" or ">" (a heading "Limits > Search").
_ATTRS = r"""(?:[^\S\n]+[\w-]+[^\S\n]*=[^\S\n]*(?:"[^"\n]{0,1000}"|'[^'\n]{0,1000}'|[^\s>\]"']+))*[^\S\n]*"""
_COPIED_TAG = re.compile(rf"""\[source[^\S\n]+n[^\S\n]*=[^\S\n]*["']?(\d{{1,3}})["']?{_ATTRS}\]"""
                         rf"""|[<‹]source[^\S\n]+n[^\S\n]*=[^\S\n]*["']?(\d{{1,3}})["']?{_ATTRS}>""")
_COPIED_CLOSE = re.compile(r"[<‹]/source[^\S\n]*>|\[/source\]")

_LEADING_CITES = re.compile(r"^[ \t]*(?:\[[^\]\n]{1,20}\][ \t]*)+")
# A marker that a ";" inside it cut in two ("fast [2; " + "3]. "): sentence splitting is shared
# with the sources' (split_units), so the two halves are joined here. Bounded, so a model looping
# "; 1; 1; …" costs linear time.
_MARKER_HEAD = re.compile(rf"\[{_SP}*\d{{1,3}}(?:{_SP}*{_SEP}{_SP}*\d{{1,3}}){{0,20}}{_SP}*;{_SP}*\Z")
_MARKER_TAIL = re.compile(rf"\d{{1,3}}(?:{_SP}*{_SEP}{_SP}*\d{{1,3}}){{0,20}}{_SP}*\]")


def claim_units(text: str) -> list[str]:
    """``split_units`` with the markers that follow a sentence given to it: "… broker. [2] Next …"
    → "… broker. [2] ", "Next …", unless the marker opens a line (a list item "[1] Shard 是指…")
    or follows a code block. ``"".join(units) == text``."""
    pieces: list[str] = []
    for piece in split_units(text):
        if pieces and _MARKER_TAIL.match(piece) and _MARKER_HEAD.search(pieces[-1][-200:]):
            pieces[-1] += piece
        else:
            pieces.append(piece)
    units: list[str] = []
    for unit in pieces:
        lead = _LEADING_CITES.match(unit)
        if lead and units and not units[-1].endswith("\n") and not FENCE.match(units[-1]):
            units[-1] += lead.group(0)
            unit = unit[lead.end() :]
        if unit:
            units.append(unit)
    return units


def prose_citations(text: str) -> list[re.Match]:
    """The citation markers of ``text`` outside code (fenced or inline), judged on the whole text
    so inline code that a sentence split cuts in two stays code."""
    code = [m.span() for m in CODE.finditer(text)]
    starts = [a for a, _ in code]

    def in_code(pos: int) -> bool:  # the spans are sorted and disjoint: one lookup, not a scan
        i = bisect.bisect_right(starts, pos) - 1
        return i >= 0 and pos < code[i][1]

    return [m for m in CITATION.finditer(text) if not in_code(m.start())]


def replace_citations(text: str, replace: Callable[[re.Match], str | None]) -> str:
    """``text`` with each citation marker outside code replaced by ``replace(marker)`` (None
    keeps it as it is)."""
    out, pos = [], 0
    for m in prose_citations(text):
        new = replace(m)
        if new is not None:
            out += [text[pos : m.start()], new]
            pos = m.end()
    return "".join(out) + text[pos:]


def cited_numbers(group: str) -> list[int]:
    """The source numbers inside one marker: "2, 3" → [2, 3], "4-6" → [4, 5, 6]."""
    nums: list[int] = []
    for part in re.split(r"\s*(?:,|;|，|and)\s*", group.strip()):
        rng = re.split(r"\s*[-–]\s*", part)
        if len(rng) == 2 and rng[0].isdigit() and rng[1].isdigit():
            a, b = int(rng[0]), int(rng[1])
            if 0 <= b - a < 20:  # "[2-2]" is source 2
                nums.extend(range(a, b + 1))
            elif a < b:  # "[1-30]": the two numbers written, not thirty claimed sources
                nums.extend((a, b))
            continue
        if part.strip().isdigit():
            nums.append(int(part))
    return nums


def _copied_tags_as_citations(text: str) -> str:
    """``[source n="4"]`` and ``<source n="4" …>`` outside code as ``[4]``; closing tags gone."""
    def prose(part: str) -> str:
        part = _COPIED_TAG.sub(lambda m: f"[{m.group(1) or m.group(2)}]", part)
        return _COPIED_CLOSE.sub("", part)

    out, pos = [], 0
    for m in CODE.finditer(text):
        out += [prose(text[pos : m.start()]), m.group(0)]
        pos = m.end()
    return "".join(out) + prose(text[pos:])


def clean_citations(answer: str, valid: set[int] | Sequence[int]) -> tuple[str, list[int], list[int]]:
    """Drop citation numbers that match no source; return (text, cited in order, dropped).

    A fake ``[7]`` must never look like a real reference, so it is removed from the text (a
    bracket of several numbers keeps its real ones). Called on the partial text while streaming
    too, so a reader never sees an invalid number even for a moment.
    """
    valid = set(valid)
    cited: list[int] = []
    dropped: list[int] = []
    answer = _copied_tags_as_citations(answer)

    def repl(match: re.Match) -> str:
        nums = cited_numbers(match.group(1))
        good = [n for n in nums if n in valid]
        for n in nums:
            target = cited if n in valid else dropped
            if n not in target:
                target.append(n)
        return "".join(f"[{n}]" for n in dict.fromkeys(good)) or _GONE

    # Code is left alone: `vectors[0]` in an answer is an index, not a citation. An unclosed
    # fence or backtick (mid-stream) counts as code until it closes.
    text = replace_citations(answer, repl)
    # a marker with no number at all ("[3-1]", a backwards range) drops nothing yet leaves a
    # place to settle
    if _GONE in text:
        text = _GONE_RUN.sub(_settle_gone, text)
    return text, cited, dropped


_GONE = "\x00"  # where a marker with no valid number was, until the spaces around it are settled
_GONE_RUN = re.compile(rf"[^\S\n]*(?:{_GONE}[^\S\n]*)+")
_CLOSES = "\n.,;:!?)。，；：！？）"  # what a removed marker leaves no space before


def _settle_gone(m: re.Match) -> str:
    """The spaces around removed markers: one between two words ("RocksDB [7] and" reads
    "RocksDB and", not two spaces), none where the marker touched the words (Chinese:
    "etcd[3]元数据"), none before a full stop or a line's end ("uses RocksDB [7]." reads "uses
    RocksDB."), and a line's indentation kept at its start."""
    text, run = m.string, m.group(0)
    if m.end() == len(text) or text[m.end()] in _CLOSES:
        return ""
    if m.start() == 0 or text[m.start() - 1] == "\n":
        return run[: run.index(_GONE)]
    return " " if run.strip(_GONE) else ""


class CitationStream:
    """The answer as it streams, its markers cleaned as ``clean_citations`` cleans the whole: a
    reader (the CLI, a server's SSE client) never sees a copied ``[source n="4"`` or a number that
    matches no source, not even for the few tokens before the marker closes.

    ``feed`` returns only text that cleaning cannot change later: a marker still open at the end,
    markers just closed and the spaces before them (a dropped marker takes the space before its
    full stop), and an inline code span still open on the last line (it is prose if the line ends
    first) wait for what follows. Paragraphs before the last one are cleaned once, not per token.
    """

    def __init__(self, valid: set[int] | Sequence[int]):
        self.valid = set(valid)
        self.raw = ""
        self.sent = ""
        self._base = 0  # raw[:_base] ends at a paragraph break outside code; it is cleaned once
        self._base_clean = ""

    def feed(self, delta: str) -> str:
        self.raw += delta
        return self._emit(_settled(self.raw, self._base))

    def flush(self) -> str:
        """What is left once the model has finished."""
        return self._emit(len(self.raw.rstrip()))

    def _emit(self, end: int) -> str:
        if end <= self._base:
            return ""
        tail = self.raw[self._base : end]
        clean = self._base_clean + clean_citations(tail, self.valid)[0]
        cut = _last_paragraph_break(tail)
        if cut:
            self._base_clean += clean_citations(tail[:cut], self.valid)[0]
            self._base += cut
        if clean.startswith(self.sent):
            out = clean[len(self.sent) :]
        else:  # a case the rules above miss: keep the reader's text going rather than stall it
            out = clean[len(os.path.commonprefix([clean, self.sent])) :]
        self.sent = clean
        return out


def _last_paragraph_break(text: str) -> int:
    """Where the last blank line outside code ends (0: none): cleaning never reaches across it."""
    code = [m.span() for m in CODE.finditer(text)]
    for m in reversed(list(re.finditer(r"\n[ \t]*\n", text))):
        if not any(a < m.end() <= b for a, b in code):
            return m.end()
    return 0


# What may still become a marker at the end of the text: "[", "[1, 2", "[1 an", "[sour",
# "[source n=\"4\" section=\"Guide > Lim", "<sou", "‹source", "</", "[/"; and markers just
# written, each of whose beginnings was held so: whether they stay, and the space before them,
# depends on what follows.
# A bare value may carry a stray closing quote (n=9"), as the copied tags clean_citations reads do.
_OPEN_ATTRS = rf"""(?:{_SP}+[\w-]+(?:{_SP}*={_SP}*(?:"[^"\n]*"?|'[^'\n]*'?|[^\s>\]"']*["']?)?)?)*{_SP}*"""
_WHOLE_ATTRS = rf"""(?:{_SP}+[\w-]+(?:{_SP}*={_SP}*(?:"[^"\n]*"|'[^'\n]*'|[^\s>\]"']*["']?))?)*{_SP}*"""
_OPEN_MARKER = re.compile(
    rf"(?:\[{_SP}*(?:\d{{1,3}}{_SP}*(?:(?:,|;|，|a|an|and|-|–){_SP}*)?)*"
    rf"|[\[<‹]{_SP}*/?{_SP}*(?:s(?:o(?:u(?:r(?:c(?:e{_OPEN_ATTRS})?)?)?)?)?)?)\Z"
)
_CLOSED_MARKERS = re.compile(
    rf"(?:{_SP}*(?:\[{_SP}*\d{{1,3}}(?:{_SP}*{_SEP}{_SP}*\d{{1,3}})*{_SP}*\]"
    rf"|[\[<‹]{_SP}*/?{_SP}*source{_WHOLE_ATTRS}[\]>]))+\Z"
)


def _settled(raw: str, start: int = 0) -> int:
    """How much of ``raw`` cleaning can no longer change (see ``CitationStream``); ``start``: a
    paragraph break outside code before which nothing is looked at again."""
    end = len(_rstrip_spaces(raw))
    line = raw.rfind("\n", start, end) + 1
    last = None
    for last in CODE.finditer(raw, max(start, 0), end):
        pass
    if last is not None and last.end() == end and last.group(0).startswith(("```", "~~~")):
        return end  # inside a fence left open so far: code, left alone
    tick = raw.find("`", max(line, last.end() if last is not None else 0), end)
    if tick >= 0:
        end = len(_rstrip_spaces(raw[:tick]))  # an inline span its line has not closed yet
    # markers are short: only the tail after the last code span is read
    window = max(start, end - 2000, last.end() if last is not None else 0)
    for pattern in (_OPEN_MARKER, _CLOSED_MARKERS):
        m = pattern.search(raw, window, end)
        if m:
            end = len(_rstrip_spaces(raw[: m.start()]))
    return end


def _rstrip_spaces(text: str) -> str:
    """``text`` without the spaces (not line breaks) it ends with."""
    return re.sub(rf"{_SP}+\Z", "", text)


# --- abstentions --------------------------------------------------------------------------------

# How answers say "the documents do not say" (ours, and what instruct models write).
_NOT_FOUND = re.compile(
    r"(documents?|documentation|sources?|context|provided (?:text|information)|passages?)\s+(?:do(?:es)?\s*n[o']t|do(?:es)? not)\s+"
    r"(?:say|mention|contain|provide|specify|include|cover|state|address|discuss|describe|explain|answer)"
    r"|(?:no|not enough|insufficient)\s+(?:relevant\s+)?information\s+(?:in|about|on|is|was|available|provided)"
    r"|not (?:mentioned|covered|specified|stated|found|addressed|described|provided) in the (?:documents?|sources?|context)"
    r"|(?:cannot|can't|can not|unable to) (?:be )?(?:answer|find|determine|answered|found|determined)"
    r"|文档(?:中)?(?:没有|未|并未|没)(?:提到|提及|说明|涉及|包含|给出|提供|描述)"
    r"|(?:来源|资料|上下文|文档)(?:中)?(?:没有|未|并未)(?:相关|提及|提到|说明)"
    r"|没有(?:相关|足够)?(?:的)?信息|无法(?:回答|确定|找到|从(?:文档|来源|资料|上下文|所给|提供))|未(?:提及|说明|提到)",
    re.IGNORECASE,
)


def says_not_found(answer: str) -> bool:
    """The answer says the documents do not say (ours, or in the words instruct models use)."""
    return bool(_NOT_FOUND.search(answer or ""))


_SENTENCE = re.compile(r"[^.!?。！？]+[.!?。！？]?")


def uncite_abstention(answer: str) -> str | None:
    """An answer that is only "the documents do not mention X" cites nothing: a [n] on it would
    show a source as support for a claim the source does not make (the 1.5B writes "The documents
    do not mention Raft. [5]"). Returns the answer without its markers, or None when it says more
    than that."""
    bare = CITATION.sub("", answer).strip()
    sentences = [m.group(0) for m in _SENTENCE.finditer(bare) if m.group(0).strip(" \n.。")]
    if bare == answer.strip() or len(sentences) != 1 or not says_not_found(bare):
        return None
    return re.sub(r"[ \t]+([.,;:!?。，])", r"\1", bare)


def drop_note_echo(answer: str, terms: Sequence[str], lang: str) -> str:
    """The answer without the unmentioned-names note (prompt.unmentioned_note) copied into it:
    measured, the 1.5B once answered 'The documents do not mention GraphQL. If the question is
    about "GraphQL", reply only: "The documents do not mention GraphQL." Otherwise: The documents
    do not mention GraphQL.' A sentence then left twice in a row is kept once; an answer that was
    only the note becomes the reply the note asks for."""
    if not terms:
        return answer
    parts, reply = note_parts(terms, lang)
    if parts[0] not in answer and parts[1] not in answer:  # "Otherwise:" alone is an answer's word
        return answer
    text = answer
    for part in parts:
        text = text.replace(part, " ")
    kept: list[str] = []
    for sentence in _SENTENCE.findall(re.sub(r"[ \t]{2,}", " ", text).strip()):
        if not kept or sentence.strip() != kept[-1].strip():
            kept.append(sentence)
    return "".join(kept).strip() or reply
