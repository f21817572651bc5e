"""Which source an answer's sentences come from.

Two questions, for two kinds of answer:

* An answer with [n] markers: does each cited source hold its sentence? A 1.5B writes the right
  sentence with the wrong number often enough to matter: it copies "Milvus standalone uses
  RocksDB as its log broker" out of source [1] and writes "[2]" after it, or, with the answer
  copied word for word from [2], opens it "根据 [1] 中的描述". A reader who opens the cited source
  then finds nothing, and a correct answer looks invented. ``repoint`` checks each cited sentence
  against the sources' own words: the share of its content terms (words, identifiers and
  figures; for Chinese, character pairs), less the question's, that each source contains. When
  the cited sources hold almost none of them and another source holds most, the marker moves to
  that source. Sentences that only say where ("This is stated in [2].") follow the sentence
  before them (moved with it, or judged by its words when it carried none). A sentence whose cited
  source holds a fair share keeps its marker, and a sentence
  no source holds is left to the reader (and to rag/figures.py).

  Replayed on eight full dev-set runs of the real 1.5B (440 answers, BENCHMARKS §12): the cited
  source held the evidence in 25 more answers and in 4 fewer, each of those 4 a sentence copied
  from another source than the one holding the evidence. Sentence embeddings were tried first
  and rejected (4 answers fixed, 8 broken): a paraphrase of a neighbouring passage is close in
  meaning, while the words say where a sentence was copied from. ``cite_copied`` asks the same of
  the sentences before a paragraph's one marker, which the model left uncited, and of cited
  sentences copied from another source than the one they cite.

* An answer without markers: ``match`` attaches the sources whose sentences say what its
  sentences say, by the embedder, shown as *matched*, never as cited.
"""

from __future__ import annotations

import re
from typing import Mapping

from localrag.kb.chunk import split_sentences
from localrag.lang import CJK_LETTER
from localrag.rag import answer_text, figures, prompt
from localrag.rag.figures import is_pointer
from localrag.rag.prompt import FENCE

# Below this share of its terms the cited source does not hold the sentence; the best source must
# hold at least MARGIN more of them, and at least FLOOR, before the marker moves.
GATE = 0.3
MARGIN = 0.3
FLOOR = 0.5
MIN_TERMS = 3

# Matched sources: an answer sentence is attached to a source only when its cosine to one of the
# source's sentences reaches this, per embedder (only measured values; others attach nothing).
# Measured with the real 1.5B on the milvus-docs dev subset (BENCHMARKS.md §9): correct answers vs
# the source holding the evidence, median best cosine 0.96 (n=11); vs unrelated sources at most
# 0.706 (n=65). At 0.75 no unrelated source is attached and 73% of the evidence sources are.
MATCH_GATE: dict[str, float] = {
    "all-minilm-l6-v2": 0.75,
}
MIN_CLAIM_CHARS = 20

_WORD = re.compile(r"[a-z_][a-z0-9_.\-]*[a-z0-9]|\d[\d,.]*\d")  # a lone digit says nothing of where
_STOP = frozenset(
    "the and for are with that this you your can not use from has have will was were its into only also which "
    "when what how does using used than then they them there their these those more most such each other any "
    "all may must should would could about over under after before between".split()
)


def terms(text: str) -> set[str]:
    """Content terms of a piece of text: words of three letters or more (not the commonest),
    identifiers, figures, and pairs of adjacent Chinese characters."""
    low = answer_text.CITATION.sub(" ", text.lower())
    out = {w for w in _WORD.findall(low) if (len(w) >= 3 or w[0].isdigit()) and w not in _STOP}  # "16", "1.5", "1,024"
    for run in "".join(c if CJK_LETTER.match(c) else " " for c in low).split():
        out.update(run[i : i + 2] for i in range(len(run) - 1))
    return out


def _within(wanted: set[str], text: str) -> set[str]:
    """The terms of ``wanted`` that ``text`` contains, as substrings: "segment" is in "segments",
    "tlsmode" in "common.security.tlsmode"."""
    low = text.lower()
    return {w for w in wanted if w in low}


def support(wanted: set[str], text: str) -> float:
    """The share of ``wanted`` that ``text`` contains (``_within``)."""
    return len(_within(wanted, text)) / len(wanted) if wanted else 0.0


def _better(unit: str, cited: list[int], sources: Mapping[int, str], asked: set[str]) -> int | None:
    """The source to cite instead, when the cited ones hold almost none of the sentence's terms."""
    wanted = terms(unit) - asked
    if len(wanted) < MIN_TERMS:
        return None
    share = {n: support(wanted, text) for n, text in sources.items()}
    best = max(share, key=lambda n: (share[n], -n))
    held = max(share[n] for n in cited)
    if held < GATE and share[best] >= max(FLOOR, held + MARGIN) and best not in cited:
        return best
    return None


def repoint(answer: str, sources: Mapping[int, str], question: str) -> tuple[str, list[tuple[int, int]]]:
    """The answer with each marker whose source does not hold its sentence moved to the source
    that does, and the moves made (from, to), in order. ``sources`` maps each valid number to
    the text the model was shown. Markers in code are never touched."""
    markers = answer_text.prose_citations(answer) if sources else []
    if not markers:
        return answer, []
    asked = terms(question)
    moves: list[tuple[int, int]] = []
    new_text: dict[int, str] = {}  # a marker's start -> its renumbered text
    last: dict[int, int] = {}  # the previous sentence's moves, for a pointer after it
    bare = ""  # the previous sentence when it carried no marker: a pointer after it is about it
    start = 0
    for unit in answer_text.claim_units(answer):
        end = start + len(unit)
        mine = [m for m in markers if start <= m.start() < end]
        start = end
        cited = [n for m in mine for n in answer_text.cited_numbers(m.group(1)) if n in sources]
        if not cited:
            last, bare = (last, bare) if not unit.strip() else ({}, unit)
            continue
        if is_pointer(unit) and bare:
            best = _better(bare, cited, sources, asked)
            here = {n: best for n in cited} if best is not None else {}
        elif is_pointer(unit):
            here = {n: last[n] for n in cited if n in last}
        else:
            best = _better(unit, cited, sources, asked)
            here = {n: best for n in cited} if best is not None else {}
        for m in mine if here else []:
            nums = [here.get(n, n) for n in answer_text.cited_numbers(m.group(1))]
            new_text[m.start()] = "".join(f"[{n}]" for n in dict.fromkeys(nums))
        moves.extend(move for move in here.items() if move not in moves)
        last, bare = here, ""
    if not new_text:
        return answer, []
    text = answer_text.replace_citations(answer, lambda m: new_text.get(m.start()))
    # "[2][3]" both moved to 1 reads "[1]", not "[1][1]"
    return re.sub(r"\[(\d+)\](?:\s*\[\1\])+", r"[\1]", text), moves



# A sentence gets a number only when one source holds at least this share of its terms (a
# sentence copied, not a paraphrase of the topic).
COPIED = 0.7
# A sentence the model did cite needs one term more before a second number goes beside its own:
# with three, one short word inside a longer one ("set" in "dataset") tipped a sentence the cited
# source holds toward another.
MIN_TERMS_CITED = 4
_CJK_STOPS = "。！？；：，"
_ENDS = " \t\n.,;:!?)" + _CJK_STOPS


def _covering(units: list[tuple[int, int, str]], i: int, markers: list[re.Match], sources) -> list[int]:
    """The numbers of the marker that closes unit ``i``'s paragraph or list: the next one
    before a blank line or code ("A. B.\nC. [2]" — the [2] covers A and B too). A pointer ("This
    is stated in [2].") is ``repoint``'s to judge, as it is about the sentence before it."""
    for a, b, unit in units[i + 1 :]:
        mine = [m for m in markers if a <= m.start() < b]
        if mine:
            if is_pointer(unit):
                return []
            return [n for m in mine for n in answer_text.cited_numbers(m.group(1)) if n in sources]
        if not unit.strip() or FENCE.match(unit):
            return []
    return []


def _starts(wanted: set[str], text: str) -> set[str]:
    """The terms of ``wanted`` that begin a word of ``text`` (``_word_start``)."""
    low = text.lower()
    return {w for w in wanted if re.search(_word_start(w), low)}


def _word_start(term: str) -> str:
    """A pattern for ``term`` where a word begins ("max" in "maximum", not "set" in "dataset"),
    or, for a figure, the figure whole ("16" not in "160" nor "2.16")."""
    if term[0].isdigit():
        return rf"(?<![\w.,]){re.escape(term)}(?!\d)"
    return rf"(?<![a-z0-9_]){re.escape(term)}"


def _copied_from(unit: str, claimed: list[int], sources: Mapping[int, str], asked: set[str], cited: bool) -> int | None:
    """The source ``unit`` was copied from when that is not one of ``claimed``: it holds at least
    COPIED of the sentence's terms, and the claimed sources hold under GATE of them (a sentence
    left uncited, claimed by its paragraph's marker) or MARGIN less than it does (a sentence
    citing a source that holds some of it, which ``repoint`` leaves be).

    A cited sentence is judged more strictly, as its number is the model's own word: its terms
    count only where they begin a word, and the other source must hold each of its figures
    ("The max dim is 32768 [2]" is not copied from a passage on the maximum dimension of
    something else)."""
    wanted = terms(unit) - asked
    if not claimed or len(wanted) < (MIN_TERMS_CITED if cited else MIN_TERMS):
        return None
    found = {n: (_starts if cited else _within)(wanted, text) for n, text in sources.items()}
    share = {n: len(found[n]) / len(wanted) for n in sources}
    best = max(share, key=lambda n: (share[n], -n))
    held = max(share[n] for n in claimed)
    if cited:  # the model's own number stands unless the other source holds far more, figures included
        enough = share[best] >= held + MARGIN and all(w in found[best] for w in wanted if w[0].isdigit())
    else:
        enough = held < GATE
    return best if share[best] >= COPIED and enough and best not in claimed else None


def cite_copied(answer: str, sources: Mapping[int, str], question: str) -> tuple[str, list[int]]:
    """The answer with the number of the source a sentence was copied from put after it where
    the model cited another source or none, and the numbers added.

    The 1.5B puts one marker at the end of a paragraph, after sentences taken from different
    sources: "The $meta field is a reserved JSON field … key-value pairs. … not included in the
    data to insert. [2]" — the first sentence is word for word from [1], and a reader opening [2]
    does not find it. Replayed on five full dev-set runs (275 answers, BENCHMARKS §16): 11
    answers gain a number, each after a sentence the added source holds (6 of them the passage
    holding the evidence). A sentence no marker follows is left alone (nothing claims it).

    A sentence the model cited, copied word for word from another source while its cited one
    holds some of its words (a neighbouring passage on the same topic), keeps its number and
    gains the other beside it: "… RocksDB as its log broker [2][1]." (BENCHMARKS §24)."""
    markers = answer_text.prose_citations(answer) if sources else []
    if not markers:
        return answer, []
    asked = terms(question)
    units, start = [], 0
    for unit in answer_text.claim_units(answer):
        units.append((start, start + len(unit), unit))
        start += len(unit)
    code = [m.span() for m in answer_text.CODE.finditer(answer)]
    inserts: list[tuple[int, int]] = []  # (position after the sentence's text or its marker, source number)
    for i, (a, b, unit) in enumerate(units):
        line = unit.strip()
        end = a + len(unit.rstrip())
        if (not line or is_pointer(unit) or answer_text.CODE.fullmatch(line) or line[0] in "#|"
                or any(x < a < y or x < end < y for x, y in code)):
            continue  # a heading or a table row takes no number, and nothing goes inside code
        mine = [m for m in markers if a <= m.start() < b]
        if mine:
            # only a marker that ends its sentence ("… broker [2].", "… 方式。[4]"): one inside a
            # sentence or opening a list item ("[4] 目前 …") is not the sentence's source note
            if answer[mine[-1].end() : end].strip(_ENDS):
                continue
            own = [n for m in mine for n in answer_text.cited_numbers(m.group(1)) if n in sources]
            best = _copied_from(unit, own, sources, asked, cited=True)
            if best is not None:
                inserts.append((mine[-1].end(), best))
            continue
        best = _copied_from(unit, _covering(units, i, markers, sources), sources, asked, cited=False)
        if best is not None:
            inserts.append((end, best))
    text = answer
    for pos, n in reversed(inserts):
        # "[2][1]" beside a marker; "方式。[3]" as Chinese answers write it
        space = "" if text[pos - 1] in _CJK_STOPS or text[pos - 1] == "]" else " "
        text = f"{text[:pos]}{space}[{n}]{text[pos:]}"
    return text, list(dict.fromkeys(n for _, n in inserts))


def any_sentence_held(answer: str, sources: Mapping[int, str], question: str) -> bool:
    """Whether some sentence of the answer says something a source says: at least MIN_TERMS
    terms beyond the question's, of which one source holds GATE (the bars a cited source is held
    to above). An answer with no such sentence says nothing the sources say: it restates the
    question ("空闲连接默认会自动回收") or talks around it in words of its own ("determined by the
    number of available CPU cores")."""
    asked = terms(question)
    for unit in answer_text.claim_units(answer):
        wanted = terms(unit) - asked
        if len(wanted) >= MIN_TERMS and any(support(wanted, text) >= GATE for text in sources.values()):
            return True
    return False


def unfounded(answer: str, sources: Mapping[int, str], question: str) -> bool:
    """An answer to a quantity question that gives no figure (nor "no limit"), does not say the
    documents do not say, and holds nothing a source says (``any_sentence_held``): the 1.5B's
    dodge when the documents do not give the figure. Replayed on greedy runs of four question
    sets (BENCHMARKS §26). An empty answer is not one: the model wrote nothing to judge."""
    if not answer.strip() or figures.gives_figure(answer) or answer_text.says_not_found(answer):
        return False
    return not any_sentence_held(answer, sources, question)


# --- answers without markers -----------------------------------------------------------------


def match(answer: str, sources: list[prompt.Source], embedder, gate: float) -> list[int]:
    """The sources that say what an answer's sentences say, by the embedder, for an answer that
    carries no [n]: each sentence goes to the source holding its most similar sentence, only at
    or above ``gate``; a sentence close to nothing matches nothing. Shown as *matched*, never as
    cited: the model did not say it used them."""
    if not sources or not answer.strip() or answer_text.says_not_found(answer):
        return []
    claims = [c for c in split_sentences(answer) if len(c) >= MIN_CLAIM_CHARS]
    units = [(s.n, u) for s in sources for u in split_sentences(s.text) if len(u) >= MIN_CLAIM_CHARS]
    if not claims or not units:
        return []
    import numpy as np

    wrap = getattr(embedder, "passage_text", lambda x: x)
    try:
        vecs = np.asarray(embedder.embed_passages([wrap(t) for t in claims + [u for _, u in units]]), dtype=np.float32)
    except Exception:  # noqa: BLE001 - matching is a courtesy, never a failure
        return []
    sims = vecs[: len(claims)] @ vecs[len(claims):].T
    chosen: list[int] = []
    for row in sims:
        j = int(row.argmax())
        if float(row[j]) >= gate and units[j][0] not in chosen:
            chosen.append(units[j][0])
    return chosen
