"""Answer evaluation: is the answer right, cited, honest and in the question's language?

Scores ``AnswerResult``s against a questions JSONL (shared/eval/README.md's format, with
``answer_keywords``). Every measure is a pure function of the question and the answer, so the
scoring is tested on synthetic answers; ``run`` drives a real model through any ``ask``
callable (the CLI passes the public API's conversation).

What is counted, per question:

* correct: every answer keyword is in the answer (NFKC, lower case, whitespace and commas
  ignored, as the eval README says). Unanswerable questions are not scored for it.
* cited: the answer cites at least one valid source with ``[n]``.
* cited_evidence: a cited source's text holds the evidence (or ``evidence2`` of a multi-hop
  question), by the retrieval eval's rule (normalised containment, or a 60-character run).
  ``supported_evidence`` counts *matched* sources (attached by sentence similarity when the
  answer carries no markers) too.
* says_not_found: the answer says the documents do not say (the relevance gate's answer, or
  the model's own words in English or Chinese).
* abstained (unanswerable only): says so and cites nothing.
* lang_ok: a Chinese question got a mostly-Chinese answer, an English one an English answer.
* ttft_s / total_s: wall time from asking to the first streamed token / to the end, as a
  user waits for them; prompt_tokens: tokens the model read.
"""

from __future__ import annotations

import re
import statistics
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from localrag.kb.evaluate import contains_evidence
from localrag.rag.answer_text import CITATION, says_not_found  # noqa: F401 - scored here, defined with the answer's text rules

_KW_STRIP = re.compile(r"[\s,，]+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")
_CODE = re.compile(r"```.*?(?:```|$)|`[^`\n]*`", re.DOTALL)

def keyword_norm(text: str) -> str:
    return _KW_STRIP.sub("", unicodedata.normalize("NFKC", text or "").lower())


def has_keywords(answer: str, keywords: Iterable[str]) -> bool:
    """All keywords in the answer, compared as the eval README says. Citation markers are not the
    answer's words: "分成两个 shard [2]" does not hold the keyword "2"."""
    norm = keyword_norm(CITATION.sub(" ", answer or ""))
    kws = [keyword_norm(k) for k in keywords if k and keyword_norm(k)]
    return bool(kws) and all(k in norm for k in kws)


def answer_language(answer: str) -> str:
    """"zh" when Chinese characters carry the prose, else "en" (code and inline code ignored:
    an answer in Chinese quotes English identifiers)."""
    prose = _CODE.sub(" ", answer or "")
    cjk = len(_CJK.findall(prose))
    latin = len(_LATIN_WORD.findall(prose))
    # a Chinese character carries about half to one word's meaning: Chinese prose outweighs
    # the English terms it quotes, a stray Chinese word does not make English prose Chinese;
    # with no English word at all, a short "可以。[1]" is Chinese too
    return "zh" if (cjk >= max(3, latin) if latin else cjk > 0) else "en"


@dataclass(frozen=True)
class AnswerQuestion:
    id: str
    lang: str
    kind: str
    question: str
    source: str | None
    evidence: str | None
    keywords: tuple[str, ...] = ()
    source2: str | None = None
    evidence2: str | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.source and self.evidence)

    @property
    def evidences(self) -> list[str]:
        return [e for e in (self.evidence, self.evidence2) if e]


def load_questions(path: Path) -> list[AnswerQuestion]:
    from localrag.kb.evaluate import question_text, read_question_rows

    return read_question_rows(path, lambda n, d: AnswerQuestion(
        id=str(d.get("id", n)), lang=str(d.get("lang", "en")), kind=str(d.get("kind", "")),
        question=question_text(d), source=d.get("source"), evidence=d.get("evidence"),
        keywords=_keywords(d.get("answer_keywords")),
        source2=d.get("source2"), evidence2=d.get("evidence2"),
    ))


def _keywords(value) -> tuple[str, ...]:
    if value is None:
        return ()
    # A bare string would be read letter by letter: "19530" would make any answer with those digits correct.
    if not isinstance(value, list) or not all(isinstance(k, (str, int, float)) for k in value):
        raise ValueError(f"'answer_keywords' must be a list of strings, not {value!r}")
    return tuple(str(k) for k in value)


# --- one answer ---------------------------------------------------------------------------------


@dataclass
class AnswerScore:
    id: str
    lang: str
    kind: str
    question: str
    answer: str
    answerable: bool
    correct: bool | None  # None: unanswerable (nothing to be right about)
    cited: bool
    cited_evidence: bool
    supported_evidence: bool  # cited or matched source holds the evidence
    matched: bool  # sources attached by similarity (no [n] in the answer)
    evidence_packed: bool  # the evidence was in the prompt at all
    says_not_found: bool
    abstained: bool
    lang_ok: bool
    answer_lang: str
    ttft_s: float
    total_s: float
    prompt_tokens: int
    gen_tokens: int
    cited_sources: list[str] = field(default_factory=list)
    matched_sources: list[str] = field(default_factory=list)
    packed_sources: list[str] = field(default_factory=list)
    packed: list[dict] = field(default_factory=list)  # {"n", "source", "text"} as the model read them
    withheld: list[str] = field(default_factory=list)  # figures no source holds (their sentences left out)
    unfounded: bool = False  # asked for a quantity: no figure, nothing a source says; not shown
    repointed: list[list[int]] = field(default_factory=list)  # citations moved [from, to] (rag/attribution.py)
    added_citations: list[int] = field(default_factory=list)  # numbers put after copied sentences citing another or none
    searched_as: str = ""  # the question as also searched in the documents' language (cross-lingual)
    left_out: list[dict] = field(default_factory=list)  # {"source", "page", "heading", "reason"}: retrieved, not read
    figure_quotes: list[dict] = field(default_factory=list)  # each figure with the source line holding it
    error: str | None = None


def score_answer(q: AnswerQuestion, result, *, ttft_s: float = 0.0, total_s: float = 0.0) -> AnswerScore:
    """Score one ``AnswerResult`` (or anything with its fields) against its question."""
    answer = result.answer or ""
    cited_texts = [c.text for c in result.citations]
    matched = list(getattr(result, "matched", []) or [])
    matched_texts = [m.text for m in matched]
    packed_texts = [s.text for s in result.sources]

    def holds(texts: list[str]) -> bool:
        return any(contains_evidence(t, e) for t in texts for e in q.evidences)

    not_found = bool(result.not_found) or says_not_found(answer)
    lang = answer_language(answer)
    timings = result.timings
    return AnswerScore(
        id=q.id, lang=q.lang, kind=q.kind, question=q.question, answer=answer, answerable=q.answerable,
        correct=has_keywords(answer, q.keywords) if q.answerable and q.keywords else None,
        cited=bool(result.citations),
        cited_evidence=q.answerable and holds(cited_texts),
        supported_evidence=q.answerable and holds(cited_texts + matched_texts),
        matched=bool(matched) and not result.citations,
        evidence_packed=q.answerable and holds(packed_texts),
        says_not_found=not_found,
        abstained=(not q.answerable) and not_found and not result.citations,
        lang_ok=lang == ("zh" if q.lang == "zh" else "en"),
        answer_lang=lang,
        ttft_s=round(ttft_s or float(getattr(timings, "ttft_s", 0.0) or 0.0), 3),
        total_s=round(total_s or float(getattr(timings, "total_s", 0.0) or 0.0), 3),
        prompt_tokens=int(getattr(timings, "prompt_tokens", 0) or 0),
        gen_tokens=int(getattr(timings, "gen_tokens", 0) or 0),
        cited_sources=[c.source for c in result.citations],
        matched_sources=[m.source for m in matched],
        packed_sources=[s.source for s in result.sources],
        packed=[{"n": s.n, "source": s.source, "text": s.text} for s in result.sources],
        withheld=list(getattr(result, "withheld", []) or []),
        unfounded=bool(getattr(result, "unfounded", False)),
        repointed=[list(m) for m in getattr(result, "repointed", []) or []],
        added_citations=list(getattr(result, "added_citations", []) or []),
        left_out=[{"source": lo.source, "page": lo.page, "heading": lo.heading, "reason": lo.reason}
                  for lo in getattr(result, "left_out", []) or []],
        figure_quotes=[asdict(fq) for fq in getattr(result, "figure_quotes", []) or []],
    )


# --- the summary ----------------------------------------------------------------------------------


def _rate(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def summarise(scores: list[AnswerScore]) -> dict:
    """Rates per language, per kind and overall (each with its n)."""
    groups: dict[str, list[AnswerScore]] = {"all": list(scores)}
    for s in scores:
        groups.setdefault(f"lang:{s.lang}", []).append(s)
        groups.setdefault(f"kind:{s.kind}", []).append(s)
    out = {}
    for name, rows in groups.items():
        ok = [s for s in rows if s.error is None]
        # A question that failed counts as a miss on every rate (``run`` scores it so): left out,
        # three failures of four would read "correct 1.00".
        answerable = [s for s in rows if s.answerable]
        unanswerable = [s for s in rows if not s.answerable]
        graded = [s for s in answerable if s.correct is not None]
        timed = [s for s in ok if not (s.says_not_found and not s.prompt_tokens)]  # the gate's instant answers excluded
        out[name] = {
            "n": len(rows),
            "errors": len(rows) - len(ok),
            "answerable": len(answerable),
            "correct": _rate([bool(s.correct) for s in graded]),
            "cited": _rate([s.cited for s in answerable]),
            "cited_or_matched": _rate([s.cited or s.matched for s in answerable]),
            "cited_evidence": _rate([s.cited_evidence for s in answerable]),
            "supported_evidence": _rate([s.supported_evidence for s in answerable]),
            "evidence_packed": _rate([s.evidence_packed for s in answerable]),
            "false_not_found": _rate([s.says_not_found for s in answerable]),
            "unanswerable": len(unanswerable),
            "abstained": sum(s.abstained for s in unanswerable),
            "withheld": sum(bool(s.withheld) for s in ok),  # answers with a sentence left out for a figure
            "unfounded": sum(s.unfounded for s in ok),  # quantity answers with no figure nor source words
            "repointed": sum(bool(s.repointed) for s in ok),  # answers with a citation moved to its source
            "added_citations": sum(bool(s.added_citations) for s in ok),  # a number put after a copied sentence
            "lang_ok": _rate([s.lang_ok for s in rows]),
            "median_ttft_s": _median([s.ttft_s for s in timed]),
            "median_total_s": _median([s.total_s for s in timed]),
            "median_prompt_tokens": _median([float(s.prompt_tokens) for s in timed]),
            "median_gen_tokens": _median([float(s.gen_tokens) for s in timed]),
        }
    return out


# --- running ------------------------------------------------------------------------------------


def run(
    questions: list[AnswerQuestion],
    ask: Callable[[str], Iterator],
    *,
    progress: Callable[[int, int, AnswerScore], None] | None = None,
) -> list[AnswerScore]:
    """Ask each question through ``ask`` (an event stream as ``Conversation.ask`` yields) and
    score it. A failing question is recorded with its error; the run goes on."""
    scores = []
    for i, q in enumerate(questions, start=1):
        t0 = time.perf_counter()
        first = None
        result = None
        searched_as = ""
        try:
            for ev in ask(q.question):
                kind = getattr(ev, "kind", "")
                if kind in ("answer", "thinking") and first is None:
                    first = time.perf_counter() - t0
                elif kind == "retrieved":
                    searched_as = getattr(ev, "rendered", "") or ""
                elif kind == "done":
                    result = ev.result
            if result is None:
                raise RuntimeError("the answer stream ended without a result")
            total = time.perf_counter() - t0
            score = score_answer(q, result, ttft_s=first or total, total_s=total)
            score.searched_as = searched_as
        except Exception as exc:  # noqa: BLE001 - one broken question must not end a long run
            score = AnswerScore(
                id=q.id, lang=q.lang, kind=q.kind, question=q.question, answer="", answerable=q.answerable,
                correct=False if q.answerable and q.keywords else None, cited=False, cited_evidence=False,
                supported_evidence=False, matched=False, evidence_packed=False, says_not_found=False,
                abstained=False, lang_ok=False, answer_lang="", ttft_s=0.0, total_s=time.perf_counter() - t0,
                prompt_tokens=0, gen_tokens=0, searched_as=searched_as, error=f"{type(exc).__name__}: {exc}",
            )
        scores.append(score)
        if progress:
            progress(i, len(questions), score)
    return scores


def report(scores: list[AnswerScore], **meta) -> dict:
    """The per-question JSON report with its summary."""
    return {**meta, "summary": summarise(scores), "questions": [asdict(s) for s in scores]}
