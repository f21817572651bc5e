"""What asking yields: typed results and the typed event stream of ``Session.ask``.

Every event is a frozen dataclass with a ``kind`` literal, so a front door can ``match`` on the
class or compare ``event.kind``; the stream is, in order:
``[Loading, Loaded,] Retrieved, (Thinking | AnswerDelta)*, Done``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Union

from localrag.rag import prompt
from localrag.rag.figure_quotes import FigureQuote
from localrag.runtime.pool import ModelInfo


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    n: int
    source: str
    page: int | None
    heading: str
    text: str


@dataclass
class Timings:
    retrieve_s: float = 0.0
    render_s: float = 0.0  # writing the question in the documents' language (rag/crosslingual.py)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prompt_s: float = 0.0
    prompt_tok_s: float = 0.0
    ttft_s: float = 0.0  # from the start of generation to the first token (thinking or answer)
    thinking_tokens: int = 0
    thinking_s: float = 0.0
    gen_tokens: int = 0
    gen_s: float = 0.0
    gen_tok_s: float = 0.0
    answer_s: float = 0.0
    total_s: float = 0.0


@dataclass
class AnswerResult:
    question: str
    query: str  # what was searched (the question, or it with the previous one for a follow-up)
    answer: str  # invalid citation numbers removed
    thinking: str
    citations: list[Citation]
    dropped_citations: list[int]
    sources: list[prompt.Source]
    left_out: list[prompt.LeftOut]
    not_found: bool
    stop_reason: str | None
    timings: Timings
    model: ModelInfo | None = None
    # Sources attached by sentence similarity when the answer wrote no [n] marker: shown as
    # "matched", never as "cited" (the model did not say it used them).
    matched: list[Citation] = field(default_factory=list)
    # Figures the model stated that occur in no source nor the question: the sentences stating
    # them were withheld from ``answer`` (rag/figures.py).
    withheld: list[str] = field(default_factory=list)
    # Citations moved (from, to) because the source the model cited does not hold the sentence's
    # words and another one does (rag/attribution.py); ``answer`` carries the moved numbers.
    repointed: list[tuple[int, int]] = field(default_factory=list)
    # Numbers added after sentences copied from that source while the model cited another (beside
    # the sentence's own number, or the paragraph's closing one) (rag/attribution.py cite_copied).
    added_citations: list[int] = field(default_factory=list)
    # Each figure of the answer with the line of the source that holds it (rag/figure_quotes.py),
    # so a number taken from another context shows its context.
    figure_quotes: list[FigureQuote] = field(default_factory=list)
    # Asked for a quantity, the model gave none and said nothing a source says; ``answer`` is
    # "the documents do not say" in its place (rag/attribution.py ``unfounded``).
    unfounded: bool = False

    def to_json(self) -> dict:
        m = self.model
        t = self.timings
        return {
            "question": self.question,
            "query": self.query,
            "answer": self.answer,
            "thinking": self.thinking,
            "not_found": self.not_found,
            "citations": [asdict(c) for c in self.citations],
            "matched": [asdict(c) for c in self.matched],
            "dropped_citations": self.dropped_citations,
            "withheld": self.withheld,
            "unfounded": self.unfounded,
            "repointed": [list(m) for m in self.repointed],
            "added_citations": self.added_citations,
            "figure_quotes": [asdict(q) for q in self.figure_quotes],
            "sources": [
                {"n": s.n, "source": s.source, "page": s.page, "heading": s.heading, "score": s.score, "cut": s.cut}
                for s in self.sources
            ],
            "left_out": [asdict(lo) for lo in self.left_out],
            "model": m.id if m else None,
            "quant": m.quant if m else None,
            "starter": bool(m and m.starter),
            "stop_reason": self.stop_reason,
            "ttft_s": round(t.ttft_s, 3),
            "prompt_tokens": t.prompt_tokens,
            "cached_tokens": t.cached_tokens,
            "prompt_tok_s": round(t.prompt_tok_s, 1),
            "gen_tokens": t.gen_tokens,
            "gen_tok_s": round(t.gen_tok_s, 1),
            "thinking_tokens": t.thinking_tokens,
            "timings": {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(t).items()},
        }


# --- the event stream --------------------------------------------------------------------------


@dataclass(frozen=True)
class Loading:
    """The model is being loaded (only before the first answer that needs it)."""

    model: str = ""
    kind: Literal["loading"] = "loading"


@dataclass(frozen=True)
class Loaded:
    info: ModelInfo
    kind: Literal["loaded"] = "loaded"


@dataclass(frozen=True)
class Retrieved:
    """Sources are chosen and packed; the model now reads the prompt.

    ``valid``: the source numbers the answer may cite. ``prompt_tokens`` / ``prefill_s`` are the
    new tokens the model must read and the expected time for it at this machine's measured (or
    estimated) prompt speed, so a front door can say what the wait is for.
    """

    packing: prompt.Packing
    valid: frozenset[int] = frozenset()
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    rendered: str = ""  # the question as also searched in the documents' language (rag/crosslingual.py)
    kind: Literal["retrieved"] = "retrieved"


@dataclass(frozen=True)
class Thinking:
    text: str
    tokens: int = 0  # running count of reasoning tokens
    kind: Literal["thinking"] = "thinking"


@dataclass(frozen=True)
class AnswerDelta:
    text: str
    kind: Literal["answer"] = "answer"


@dataclass(frozen=True)
class Done:
    result: AnswerResult
    kind: Literal["done"] = "done"


AskEvent = Union[Loading, Loaded, Retrieved, Thinking, AnswerDelta, Done]
