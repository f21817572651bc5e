"""ParsedDocument -> chunks: structure-aware, bounded in the embedder's tokens, overlapping, CJK-aware.

How a document is cut:

1. Sections (Markdown headings, HTML headings, DOCX heading styles, PDF pages) are the first
   boundaries. Consecutive small sections are merged while they fit, never across pages and never
   above the first section's parent heading, so a FAQ's one-line answers are not 3-word chunks.
2. A section too long for one chunk is cut into units at paragraphs, lines and sentences
   (``. ! ? ;`` followed by a space, and the CJK ``。！？；…`` which need none). A unit still too long
   (a giant code line, a CJK run without punctuation) is cut by semchunk, which falls back from
   whitespace to punctuation to single characters: never inside a character. Units are packed
   greedily up to the budget; the cut goes at the strongest boundary in the last half of the
   window (paragraph > line > sentence), and the next piece starts with the previous piece's last
   units up to ``overlap`` tokens.
3. Token counts come from the embedder's own tokenizer (``count_tokens``): one call per section,
   one per unit of a long section, and one exact check per chunk, so the bound holds exactly.

Provenance: ``char_start``/``char_end`` index ``doc.text`` (the sections joined by
``document.SECTION_SEPARATOR``) and ``doc.text[char_start:char_end] == chunk.text`` always holds.
``embed_text`` is what to embed: the heading path (its ancestors when the chunk already starts with
its own heading line) on a first line, plus the header row of a table the chunk starts inside, then
the text. The prefix (``context``) is kept out of ``text`` and of the spans, so citations quote the
document exactly; ``count_tokens(embed_text) <= max_tokens`` holds.

Measured on /work/shared/corpora/milvus-docs (305 files) with the MiniLM tokenizer, max 254 / overlap
32: 5.3k chunks, median 183 tokens, ~3.5 s CPU; all 63 dev-set evidence strings lie whole in one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from localrag.kb.document import ParsedDocument, Section

HEADING_JOIN = " > "


@dataclass
class Chunk:
    text: str
    source: str
    page: int | None
    heading: str
    char_start: int
    char_end: int
    ordinal: int
    context: str = ""  # heading path (+ table header) prefixed for embedding and BM25; not in text or span
    filetype: str = ""  # set by ingest where it differs from the file's: "pdf+ocr", an attachment's type

    @property
    def embed_text(self) -> str:
        return f"{self.context}\n{self.text}" if self.context else self.text


# (start, end, tokens, strength of the boundary after it)
_Unit = tuple[int, int, int, int]

# boundary strengths: the cut prefers the strongest boundary in the window
_PARAGRAPH, _LINE, _SENTENCE, _PIECE = 3, 2, 1, 0
_PARAGRAPH_END = re.compile(r"\n[ \t]*\n\s*")
_LINE_END = re.compile(r"\n")
# a Latin sentence end needs a letter or a closing bracket/quote before it ("1. " is a list marker)
# and whitespace after ("e.g" "3.14" "milvus.io" stay whole); CJK ends need no space
_SENTENCE_END = re.compile(
    r"(?:(?<=[^\W_]|[)\]\"'”’`])[.!?;]+[)\]\"'”’]*[ \t]+)|(?:[。！？；…]+[”’」』）)]*[ \t]*)"
)
_LIST_MARKER = re.compile(r"(?:^|\n)[ \t]*\d{1,3}$")
_HEADING_LINE = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def _lcp(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class _Counter:
    """The embedder's token count without its fixed special tokens ([CLS]/[SEP] ...)."""

    def __init__(self, count_tokens: Callable[[str], int]):
        self.exact = count_tokens
        self.special = count_tokens("")
        self._prefixes: dict[str, int] = {}  # heading prefixes repeat on every chunk of a section

    def __call__(self, text: str) -> int:
        return max(0, self.exact(text) - self.special)

    def prefix(self, text: str) -> int:
        if text not in self._prefixes:
            self._prefixes[text] = self(text)
        return self._prefixes[text]


def _context(heading: tuple[str, ...], text: str, counter: _Counter, max_tokens: int) -> tuple[str, int]:
    """The heading prefix for a chunk and its token cost (prefix + its newline)."""
    path = list(heading)
    first = text.lstrip().split("\n", 1)[0]
    m = _HEADING_LINE.match(first)
    own = m.group(1) if m else first.strip()
    if path and own and own == path[-1]:
        path = path[:-1]  # the chunk starts with its own heading line: say it once
    # a deep or long path must leave room for the text: keep the nearest headings
    while path:
        prefix = HEADING_JOIN.join(path)
        cost = counter.prefix(prefix + "\n")
        if cost <= max_tokens // 4:
            return prefix, cost
        path = path[1:]
    return "", 0


def _is_table_row(line: str) -> bool:
    return line.lstrip().startswith("|") or " | " in line


def _table_header(text: str, start: int) -> str | None:
    """The header row of the table a chunk starts inside, so rows cut from it keep their
    column names (in the embedded context, not in the quoted text)."""
    if start > 0 and text[start - 1] != "\n":
        return None
    end = text.find("\n", start)
    if not _is_table_row(text[start : end if end >= 0 else len(text)]):
        return None
    header, pos = None, start
    while pos > 0 and text[pos - 1] == "\n":
        line_start = text.rfind("\n", 0, pos - 1) + 1
        line = text[line_start : pos - 1]
        if not _is_table_row(line):
            break
        header, pos = line, line_start
    if header is None or re.fullmatch(r"[\s|:\-]*", header):
        return None
    return re.sub(r"\s+", " ", header.strip())


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _units(
    text: str, start: int, end: int, budget: int, counter: _Counter, rate: float, overlap: int = 0
) -> list[_Unit]:
    """Cut text[start:end] into units of at most ``budget`` estimated tokens, tiling the span.

    Units are sentences, lines or paragraphs (whichever is smallest); each carries the strength
    of the boundary after it. Their tokens are estimated (``rate`` tokens per character, measured
    on the section): tokenizing every sentence would cost more than the rest of the chunker.
    """
    cuts: dict[int, int] = {}
    segment = text[start:end]
    for strength, pattern in ((_SENTENCE, _SENTENCE_END), (_LINE, _LINE_END), (_PARAGRAPH, _PARAGRAPH_END)):
        for m in pattern.finditer(segment):
            pos = start + m.end()
            if strength == _SENTENCE and _LIST_MARKER.search(segment, max(0, m.start() - 6), m.start()):
                continue  # "1. Install" is a list item, not a sentence "1."
            if start < pos < end:
                cuts[pos] = max(cuts.get(pos, -1), strength)
    positions = sorted(cuts)
    bounds = [start, *positions, end]
    strengths = [cuts[p] for p in positions] + [_PARAGRAPH]
    # pieces of an over-long unit stay small enough for the overlap to carry one
    piece_budget = max(8, min(budget, overlap or budget // 4))
    units: list[_Unit] = []
    for s, e, strength in zip(bounds, bounds[1:], strengths):
        if units and not text[s:e].strip():  # whitespace only: it belongs to the previous unit
            ps, _pe, pt, pst = units[-1]
            units[-1] = (ps, e, pt, max(pst, strength))
            continue
        tokens = _estimate(text, s, e, rate)
        if tokens <= budget:
            units.append((s, e, tokens, strength))
            continue
        pieces = _split_long(text, s, e, piece_budget, counter)
        for k, (ps, pe, pt) in enumerate(pieces):
            units.append((ps, pe, pt, strength if k == len(pieces) - 1 else _PIECE))
    return units


def _estimate(text: str, start: int, end: int, rate: float) -> int:
    return int((end - start) * rate) + 1


def _split_long(text: str, start: int, end: int, budget: int, counter: _Counter) -> list[tuple[int, int, int]]:
    """Text with no sentence boundary that is over budget: semchunk cuts it (words, then characters)."""
    import semchunk

    segment = text[start:end]
    _chunks, offsets = semchunk.chunk(segment, chunk_size=budget, token_counter=counter, memoize=False, offsets=True)
    if not offsets:
        return [(start, end, counter(segment))]
    pieces: list[tuple[int, int, int]] = []
    for k, (s, _e) in enumerate(offsets):
        # make the pieces tile the segment (semchunk drops the whitespace it cut at)
        s = 0 if k == 0 else s
        e = offsets[k + 1][0] if k + 1 < len(offsets) else len(segment)
        pieces.append((start + s, start + e, counter(segment[s:e])))
    return pieces


def _select(units: list[_Unit], i: int, budget: float) -> int:
    """End (exclusive) of the window starting at unit i: as many units as fit, cut at the
    strongest boundary in the window's second half (the latest among equals)."""
    n = len(units)
    total, j = 0, i
    while j < n and total + units[j][2] <= budget:
        total += units[j][2]
        j += 1
    if j <= i + 1 or j >= n:
        return max(j, i + 1)
    best, best_strength, running = j, -1, 0
    for k in range(i, j):
        running += units[k][2]
        if running * 2 >= total and units[k][3] >= best_strength:
            best, best_strength = k + 1, units[k][3]
    return best


def _pack(
    units: list[_Unit], budget: int, limit: int, overlap: int, exact: Callable[[int, int], int]
) -> list[tuple[int, int, bool]]:
    """Windows over units -> (first unit, last unit + 1, verified), overlapping by ``overlap``.

    Windows are chosen on estimated unit tokens against ``budget``; ``exact(a, b)`` is the true
    count of what gets embedded (context included), which must not pass ``limit``: a window the
    estimate let through over it is chosen again with a proportionally smaller budget.
    """
    windows: list[tuple[int, int, bool]] = []
    i, n = 0, len(units)
    while i < n:
        target: float = budget
        j = _select(units, i, target)
        ok = True
        for _ in range(8):
            tokens = exact(i, j)
            if tokens <= limit:
                break
            if j == i + 1:
                ok = False  # one unit over budget on its own: cut again downstream
                break
            target = min(target, sum(u[2] for u in units[i:j])) * limit / tokens * 0.95
            j = _select(units, i, target)
        else:
            ok = False
        if windows and ok and sum(u[2] for u in units[i:j]) < budget // 8:
            # a scrap ("-", "and") left before a unit too big to join it: back into the window
            # before, when the two fit together
            pa, _pb, pok = windows[-1]
            if pok and sum(u[2] for u in units[pa:j]) <= budget and exact(pa, j) <= limit:
                windows[-1] = (pa, j, True)
                i = j  # no overlap after a merged scrap: the next window starts fresh
                continue
        windows.append((i, j, ok))
        if j >= n:
            break
        # the overlap: the window's last units, as long as the next unit still fits after them
        # (else the next window would be nothing but repeated text)
        m, carried, following = j, 0, units[j][2]
        while m - 1 > i and carried + units[m - 1][2] <= overlap and carried + units[m - 1][2] + following <= budget:
            m -= 1
            carried += units[m][2]
        i = m
    return windows


def chunk_document(
    doc: ParsedDocument,
    source: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap: int,
    *,
    min_tokens: int | None = None,
) -> list[Chunk]:
    """Cut ``doc`` into chunks of at most ``max_tokens`` embedder tokens (``embed_text`` included).

    ``min_tokens`` (default a quarter of max_tokens): a section smaller than this is merged with
    its neighbours under the same parent heading when they fit together.
    """
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    overlap = max(0, min(overlap, max_tokens // 2))
    min_tokens = max_tokens // 4 if min_tokens is None else min_tokens
    counter = _Counter(count_tokens)
    text = doc.text
    starts = doc.section_starts()
    sections: list[tuple[Section, int, int]] = [
        (s, st, st + len(s.text)) for s, st in zip(doc.sections, starts) if s.text.strip()
    ]

    def embed_of(s: int, e: int, heading: tuple[str, ...]) -> tuple[int, int, str, str]:
        s, e = _trim(text, s, e)
        piece = text[s:e]
        context, _ = _context(heading, piece, counter, max_tokens)
        header = _table_header(text, s)
        if header and counter.prefix(header) <= max_tokens // 4:
            context = f"{context}\n{header}" if context else header
        return s, e, context, (f"{context}\n{piece}" if context else piece)

    costs, rates = _section_costs(sections, counter, max_tokens)
    groups = _group_sections(sections, costs, counter, max_tokens, min_tokens)
    spans = _group_spans(text, sections, groups, costs, rates, counter, count_tokens, max_tokens, overlap, embed_of)

    # 3. exact check of what gets embedded; a span over budget (the estimate missed: long URLs,
    #    dense code) is cut again on exact counts and packed, smaller
    chunks: list[Chunk] = []
    pending = [(s, e, h, p, ok, 0) for s, e, h, p, ok in reversed(spans)]
    while pending:
        s, e, heading, page, verified, depth = pending.pop()
        s, e, context, embed = embed_of(s, e, heading)
        if s >= e:
            continue
        if not verified and count_tokens(embed) > max_tokens:
            for a, b, ok in reversed(_recut(text, s, e, heading, context, depth, counter, max_tokens, overlap, embed_of)):
                pending.append((a, b, heading, page, ok, depth + 1))
            continue
        chunks.append(Chunk(text[s:e], source, page, HEADING_JOIN.join(heading), s, e, len(chunks), context))
    return chunks


def _section_costs(sections, counter, max_tokens: int) -> tuple[list[int], list[float]]:
    """Each section's tokens (one call); a huge one is measured on a sample, for its rate only."""
    costs: list[int] = []
    rates: list[float] = []
    for sec, s, e in sections:
        if e - s <= max_tokens * 24:
            costs.append(counter(sec.text))
            rates.append(costs[-1] / max(1, e - s))
        else:
            sample = sec.text[: max_tokens * 24]
            rates.append(counter(sample) / len(sample))
            costs.append(int((e - s) * rates[-1]) + 1)
    return costs, rates


def _group_sections(sections, costs: list[int], counter, max_tokens: int, min_tokens: int) -> list[list[int]]:
    """1. Groups of consecutive small sections (same page, same parent heading) that fit one
    chunk together."""
    groups: list[list[int]] = []
    for idx, (sec, _s, _e) in enumerate(sections):
        if groups:
            group = groups[-1]
            first = sections[group[0]][0]
            heading = _lcp_all([sections[g][0].heading for g in group])
            joined = _lcp(heading, sec.heading)
            group_cost = sum(costs[g] for g in group) + 2 * len(group)
            small = group_cost < min_tokens or costs[idx] < min_tokens
            if (
                small
                and sec.page == first.page
                and len(joined) >= len(first.heading) - 1
                and group_cost + costs[idx] + 2 + _context_cost(joined, counter, max_tokens) <= max_tokens
            ):
                group.append(idx)
                continue
        groups.append([idx])
    return groups


def _group_spans(text, sections, groups, costs, rates, counter, count_tokens, max_tokens, overlap, embed_of):
    """2. Each group becomes one span, or a long section several (verified: exact count done)."""
    spans: list[tuple[int, int, tuple[str, ...], int | None, bool]] = []
    for group in groups:
        heading = _lcp_all([sections[g][0].heading for g in group])
        page = sections[group[0]][0].page
        s, e = sections[group[0]][1], sections[group[-1]][2]
        context_cost = _context_cost(heading, counter, max_tokens)
        if len(group) > 1 or costs[group[0]] + context_cost <= max_tokens:
            spans.append((s, e, heading, page, False))
            continue
        budget = max_tokens - context_cost
        units = _units(text, s, e, budget, counter, rates[group[0]], overlap)

        def exact(a: int, b: int, units=units, heading=heading) -> int:
            return count_tokens(embed_of(units[a][0], units[b - 1][1], heading)[3])

        for a, b, ok in _pack(units, budget, max_tokens, overlap, exact):
            spans.append((units[a][0], units[b - 1][1], heading, page, ok))
    return spans


def chunk_all(
    doc: ParsedDocument, source: str, count_tokens: Callable[[str], int], max_tokens: int, overlap: int
) -> list[Chunk]:
    """``chunk_document`` over a document and its parts (a mail's attachments, cited as
    ``source › name``), numbered in one sequence. Chunks of OCR'd pages, and of parts whose type
    differs from the document's, carry their own ``filetype`` ("pdf+ocr", "pdf")."""
    chunks: list[Chunk] = []
    for name, part in [("", doc), *doc.parts]:
        where = f"{source} › {name}" if name else source
        for c in chunk_document(part, where, count_tokens, max_tokens, overlap):
            c.ordinal = len(chunks)
            if c.page is not None and c.page in part.ocr_pages:
                c.filetype = f"{part.filetype}+ocr"
            elif part is not doc:
                c.filetype = part.filetype
            chunks.append(c)
    return chunks


def _recut(text, s, e, heading, context, depth, counter, max_tokens, overlap, embed_of) -> list[tuple[int, int, bool]]:
    """Spans for text[s:e], which is over budget: exact unit counts, packed again. Deeper
    attempts (only a tokenizer merging across unit borders gets there) halve the span."""
    if depth >= 2 or e - s < 2:
        mid = (s + e) // 2
        return [(s, mid, False), (mid, e, False)] if s < mid < e else [(s, e, True)]
    budget = max(8, (max_tokens - (counter.prefix(context + "\n") if context else 0)) * 3 // 4)
    units: list[_Unit] = []
    for a, b, _t, strength in _units(text, s, e, budget, counter, counter(text[s:e]) / (e - s), overlap):
        tokens = counter(text[a:b])
        if tokens <= budget:
            units.append((a, b, tokens, strength))
        else:
            pieces = _split_long(text, a, b, max(8, min(budget, overlap or budget // 4)), counter)
            units += [(pa, pb, pt, strength if k == len(pieces) - 1 else _PIECE) for k, (pa, pb, pt) in enumerate(pieces)]

    def exact(a: int, b: int) -> int:
        return counter.exact(embed_of(units[a][0], units[b - 1][1], heading)[3])

    return [(units[a][0], units[b - 1][1], ok) for a, b, ok in _pack(units, budget, max_tokens, overlap, exact)]


def _lcp_all(headings: list[tuple[str, ...]]) -> tuple[str, ...]:
    common = headings[0]
    for h in headings[1:]:
        common = _lcp(common, h)
    return common


def _context_cost(heading: tuple[str, ...], counter: _Counter, max_tokens: int) -> int:
    # an upper bound: the prefix may lose its last part when the chunk starts with that heading
    return _context(heading, "", counter, max_tokens)[1]


# lines, and sentence ends (Latin ones need the space after them: "milvus.io", "3.14" stay whole)
_SENTENCE_SPLIT = re.compile(r"\n+|(?<=[.!?;])\s+|(?<=[。！？；])")
_MIN_SENTENCE = 12  # characters: shorter pieces (list markers, "```", lone headings) say nothing alone
# A 256-token chunk rarely holds more; 48 float16 vectors of 384 dims, packed, fit a Milvus VARCHAR.
MAX_SENTENCES = 48


def split_sentences(text: str, limit: int = MAX_SENTENCES) -> list[str]:
    """The sentences and lines of a chunk worth embedding on their own (the whole text when none)."""
    out = [p.strip() for p in _SENTENCE_SPLIT.split(text) if p and len(p.strip()) > _MIN_SENTENCE]
    out = list(dict.fromkeys(out))[:limit]
    return out or ([text.strip()] if text.strip() else [])

