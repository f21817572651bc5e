"""Retrieval scoring over a questions JSONL, exactly as shared/eval/README.md defines it.

A hit at rank r: the r-th chunk contains the evidence after normalisation (NFKC, lower case,
no whitespace, no markdown punctuation), or a contiguous run of at least 60 normalised
characters of it (a chunk border may cut long evidence). Multi-hop questions count the first
evidence; unanswerable ones (no source) are not scored.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from localrag.errors import BadInput

KS = (1, 3, 5, 10)
MIN_RUN = 60
_STRIP = re.compile(r"[\s`*_#>|\[\]()]+")


def normalise(text: str) -> str:
    return _STRIP.sub("", unicodedata.normalize("NFKC", text).lower())


def contains_evidence(chunk_text: str, evidence: str) -> bool:
    chunk, ev = normalise(chunk_text), normalise(evidence)
    if not ev:
        return False
    if ev in chunk:
        return True
    if len(ev) <= MIN_RUN:
        return False
    return _longest_common_run(chunk, ev) >= MIN_RUN


def _longest_common_run(a: str, b: str) -> int:
    """Length of the longest common substring (difflib's matcher finds it in linear-ish time)."""
    from difflib import SequenceMatcher

    m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
    return m.size


@dataclass
class Question:
    id: str
    lang: str
    question: str
    source: str | None
    evidence: str | None
    kind: str = ""


@dataclass
class QuestionResult:
    id: str
    lang: str
    kind: str
    rank: int | None  # first hit rank (1-based), None if not in the top max(KS)
    sources: list[str] = field(default_factory=list)
    seconds: float = 0.0


def read_question_rows(path: Path, make):
    """``make(line_number, row)`` for each question object of a JSONL file; a line that is not
    one is a BadInput naming the file and line (both evals read the same format)."""
    try:
        # utf-8-sig: a file saved by Windows Notepad starts with a byte-order mark
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not UTF-8 text (byte {exc.start})", hint="Save it as UTF-8 JSONL.") from exc
    out = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(make(n, json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInput(f"{path}:{n}: not a question object ({exc})", hint="See shared/eval/README.md for the format.") from exc
    if not out:
        raise BadInput(f"no questions in {path}", hint="One JSON object per line; see shared/eval/README.md.")
    return out


def question_text(d: dict) -> str:
    """A row's question; a null or empty one is a bad row (null would be asked as "None")."""
    q = d["question"]
    if not isinstance(q, str) or not q.strip():
        raise ValueError(f"'question' must be a non-empty string, not {q!r}")
    return q


def load_questions(path: Path) -> list[Question]:
    return read_question_rows(path, lambda n, d: Question(
        id=str(d.get("id", n)), lang=str(d.get("lang", "all")), question=question_text(d), source=d.get("source"),
        evidence=d.get("evidence"), kind=d.get("kind", ""),
    ))


def score(results: list[QuestionResult]) -> dict[str, dict]:
    """hit@k and MRR per language and overall."""
    groups: dict[str, list[QuestionResult]] = {}
    for r in results:
        groups.setdefault(r.lang, []).append(r)
    groups["all"] = list(results)
    out = {}
    for lang, rs in groups.items():
        n = len(rs)
        if not n:
            continue
        row = {"n": n}
        for k in KS:
            row[f"hit@{k}"] = round(sum(1 for r in rs if r.rank and r.rank <= k) / n, 4)
        row["mrr"] = round(sum(1.0 / r.rank for r in rs if r.rank) / n, 4)
        out[lang] = row
    return out


def evaluate(retriever, questions: list[Question], progress: Callable[[int, int], None] | None = None) -> tuple[dict, list[QuestionResult]]:
    answerable = [q for q in questions if q.source and q.evidence]
    results = []
    for i, q in enumerate(answerable, start=1):
        t0 = time.perf_counter()
        hits = retriever.search(q.question, k=max(KS))
        rank = next((h.rank for h in hits if contains_evidence(h.text, q.evidence)), None)
        results.append(QuestionResult(q.id, q.lang, q.kind, rank, [h.source for h in hits[:5]], time.perf_counter() - t0))
        if progress:
            progress(i, len(answerable))
    return score(results), results
