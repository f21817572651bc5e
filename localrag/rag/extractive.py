"""Quoting the documents when a tiny model cites nothing: the source sentences that share the most
words with the question, each with its citation. A quote cannot be invented."""

from __future__ import annotations

import re

from localrag.lang import IDEOGRAPHS
from localrag.rag import prompt

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
_WORD = re.compile(f"[{IDEOGRAPHS}]|[^\\W_]{{3,}}")
_COMMON = frozenset(
    "the and for are you your how what when where which who why does can with from this that "
    "into not use using about have has was were will would should its it's".split()
)


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON}


def extractive_answer(question: str, sources: list[prompt.Source], limit: int = 2) -> str:
    """The source sentences that share the most words with the question, each cited.

    Used when the 135M starter produced no cited answer: a quoted sentence with its source is
    worth more to the reader than an empty reply, and it cannot be invented.
    """
    wanted = _terms(question)
    scored = []
    for src in sources:
        paragraphs = (p.strip() for p in _PARAGRAPH.split(src.text))
        for para in paragraphs:
            if para.startswith(("#", "|", "```", "<", "    ")):
                continue  # headings, tables, code: not sentences a reader can take as an answer
            for sentence in _SENTENCE_END.split(" ".join(para.split())):
                if len(sentence) < 30:
                    continue
                overlap = len(wanted & _terms(sentence))
                if overlap:
                    scored.append((overlap, -src.n, sentence, src.n))
    scored.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return " ".join(f"{sentence} [{n}]" for _, _, sentence, n in scored[:limit])
