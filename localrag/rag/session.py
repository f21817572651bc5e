"""Retrieve -> pack sources -> R1 prompt -> stream -> citations, for one question or a conversation.

``Session`` holds the loaded model (an ``engine.Engine``) and the retriever so a conversation
pays the load once, and it keeps the conversation as a stable prompt prefix so the engine can
reuse the KV cache of earlier turns. It never prints: ``Session.ask`` yields typed events (``rag.results``) that a
view renders.

Decisions worth knowing:

* Not in the documents: when the best retrieval scores fall under the relevance gate
  (``rag/relevance.py``) the model is not asked at all.
* Follow-ups are searched together with the previous question (``rag/followup.py``).
* History holds each earlier user turn exactly as sent (sources included) and each answer
  without its reasoning, so the next prompt starts with the previous one token for token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from localrag.rag import answer_text, attribution, crosslingual, figure_quotes, figures, focus, prompt
from localrag.rag.coverage import unmentioned
from localrag.runtime.speed import PrefillMemory  # noqa: F401 - session.* is where callers find it
from localrag.rag.extractive import extractive_answer  # noqa: F401 - session.* is where callers find it
from localrag.rag.followup import is_followup, retrieval_query  # noqa: F401
from localrag.rag.relevance import DENSE_GATE, RERANK_GATE, not_found_message, relevant  # noqa: F401
from localrag.rag.results import (
    AnswerDelta, AnswerResult, AskEvent, Citation, Done, Loaded, Loading, ModelInfo, Retrieved, Thinking, Timings,
)
from localrag.errors import BadInput, LocalragError

Progress = Callable[[str], None]

STARTER_MAX_ANSWER_TOKENS = 384
STARTER_MAX_SOURCES = 2
TINY_PARAMS = 0.5e9  # below this a starter is a toy (SmolLM2-135M): the limits above apply
# DeepSeek's model card for the R1 distills: temperature 0.5-0.7 (0.6 recommended); outside it
# they repeat themselves or ramble. Other models get the usual OpenAI range.
R1_TEMPERATURE = (0.5, 0.7)
OTHER_TEMPERATURE = (0.0, 2.0)


@dataclass(frozen=True)
class Sampling:
    """One request's sampling wishes (None: the settings'), kept within the model card's limits
    by ``resolve``: a client cannot push an R1 distill outside the range it works in, nor past
    the configured answer length."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None  # answer tokens (the reasoning has its own budget)
    seed: int | None = None

    def resolve(self, gen, *, reasoning: bool, defaults=None) -> dict:
        """``defaults``: the catalogue's [defaults] (the model card's values), used when neither
        the request nor the settings say."""
        lo, hi = R1_TEMPERATURE if reasoning else OTHER_TEMPERATURE
        temperature = _first(self.temperature, gen.temperature, getattr(defaults, "temperature", None))
        top_p = _first(self.top_p, gen.top_p, getattr(defaults, "top_p", None))
        limit = gen.max_answer_tokens if self.max_tokens is None else min(self.max_tokens, gen.max_answer_tokens)
        # None stays None: the engine then uses the catalogue's [defaults] (the model card's own)
        return {
            "temperature": None if temperature is None else min(hi, max(lo, float(temperature))),
            "top_p": None if top_p is None else min(1.0, max(0.01, float(top_p))),
            "max_tokens": max(1, int(limit)),
            "seed": self.seed,
        }


@dataclass
class _Generation:
    """What one generation produced, filled in as it streams."""

    shown: answer_text.CitationStream  # the answer as the reader sees it stream
    thinking: list = field(default_factory=list)
    answer: list = field(default_factory=list)
    stats: object = None
    start: float = 0.0
    end: float = 0.0
    first_token_at: float | None = None
    first_answer_at: float | None = None
    thinking_tokens: int = 0


@dataclass
class _Final:
    answer: str
    cited: list[int]
    dropped: list[int]
    withheld: list[str]
    repointed: list[tuple[int, int]]
    added: list[int]
    extra: str  # text added after the model's (the tiny starter's quotes), to stream too
    figure_quotes: list = field(default_factory=list)
    unfounded: bool = False


def _first(*values):
    return next((v for v in values if v is not None), None)


@dataclass
class Turn:
    question: str
    query: str
    followup: bool
    user_content: str  # exactly as sent
    answer: str  # exactly as sent back next time (no reasoning)
    sources: list[prompt.Source]


# --- the session -----------------------------------------------------------------------------


class Session:
    """A loaded model + a knowledge base + the conversation so far."""

    def __init__(self, settings, kb: str, *, model: str | None = None, progress: Progress | None = None,
                 engine=None, info: ModelInfo | None = None, retriever=None, pool=None,
                 open_retriever: Callable[[str], object] | None = None, memory: PrefillMemory | None = None):
        """``pool`` (runtime.pool.ModelPool) owns the loaded model; ``open_retriever(kb)`` gives
        a knowledge base's retriever (the facade shares one per KB); ``memory`` remembers the
        measured prompt speed (in memory only when not given). ``engine``/``info``: a model the
        caller loaded itself (tests, benchmarks)."""
        self.settings = settings
        self.kb = kb
        self.model_spec = model if model is not None else settings.model
        self.progress = progress
        self.engine = engine
        self.info = info
        self.retriever = retriever
        self.pool = pool
        self._open_retriever = open_retriever
        self.memory = memory if memory is not None else PrefillMemory()
        self._owns_pool = False
        self._speed = 0.0
        self.turns: list[Turn] = []
        self.last: AnswerResult | None = None
        self.next_n = 1
        self.sampling = Sampling()

    # -- lifecycle ------------------------------------------------------------------------

    def _retriever_for(self, kb: str):
        if self._open_retriever is not None:
            return self._open_retriever(kb)
        from localrag.kb.retrieve import Retriever

        return Retriever(self.settings, kb)

    def _pool(self):
        if self.pool is None:
            from localrag.models import hardware
            from localrag.models.catalogue import load_catalogue
            from localrag.runtime.pool import ModelPool

            catalogue = load_catalogue(self.settings.catalogue_path)
            self.pool = ModelPool(self.settings, catalogue, hardware.detect(self.settings.models_dir))
            self._owns_pool = True
        return self.pool

    def ensure_loaded(self, *, model: bool = True) -> None:
        if self.retriever is None:
            self.retriever = self._retriever_for(self.kb)
        if model and self.engine is None:
            self.engine, self.info = self._pool().engine(self.model_spec, self.progress)

    def close(self) -> None:
        """Let go of what this session opened itself (a shared retriever or pool stays open)."""
        if self._open_retriever is None and self.retriever is not None and hasattr(self.retriever, "close"):
            self.retriever.close()
        self.retriever = None
        if self._owns_pool and self.pool is not None:
            self.pool.close()  # this session loaded the model itself: unload it
            self.pool = None
        self.engine = None

    def reset(self) -> None:
        self.turns.clear()
        self.last = None
        self.next_n = 1

    def load_history(self, pairs: list[tuple[str, str]]) -> None:
        """Continue a conversation kept by someone else (an API client's earlier messages): each
        (question, answer) becomes a turn without sources, as the model will read it."""
        self.reset()
        self.turns.extend(Turn(q, q, False, q, a, []) for q, a in pairs)

    def switch_kb(self, kb: str) -> None:
        retriever = self._retriever_for(kb)  # fails before we let go
        if self._open_retriever is None and self.retriever is not None and hasattr(self.retriever, "close"):
            self.retriever.close()
        self.retriever, self.kb = retriever, kb
        self.reset()  # earlier sources belong to the other knowledge base

    def switch_model(self, spec: str) -> None:
        """Load another model. The old one is let go first (the pool holds one at a time). If the
        new one cannot be loaded, the old one comes back and the error is raised."""
        old_spec = self.model_spec
        self.engine = None
        try:
            self.engine, self.info = self._pool().engine(spec, self.progress)
            self.model_spec = spec
        except LocalragError:
            self.engine, self.info = self._pool().engine(old_spec, self.progress)
            raise
        # The conversation stays: the new model reads it as a fresh prefix.

    @property
    def embedder_id(self) -> str | None:
        return getattr(getattr(self.retriever, "embedder", None), "id", None)

    # -- the table of sources the model can see ---------------------------------------------

    def visible_sources(self) -> dict[int, prompt.Source]:
        return {s.n: s for t in self.turns for s in t.sources}

    def _shown(self, packing: prompt.Packing) -> dict[int, str]:
        """Every source the model has been shown in this conversation, this turn's included, by number."""
        return {n: s.text for n, s in {**self.visible_sources(), **{s.n: s for s in packing.sources}}.items()}

    def _grounds(self, question: str, packing: prompt.Packing) -> list[str]:
        """Where a figure in the answer may come from: this and earlier questions, and every
        source the model has been shown in this conversation."""
        return [question, *(t.question for t in self.turns), *self._shown(packing).values()]

    def _load(self) -> Iterator[AskEvent]:
        if self.engine is None:
            yield Loading(self.model_spec or "")
            self.ensure_loaded()
            yield Loaded(self.info)

    def _other_language(self, question: str) -> str | None:
        """The language to search in as well: the KB's main one, when the question is not in it."""
        if not self.settings.retrieval.cross_lingual:
            return None
        share = self.retriever.cjk_share() if hasattr(self.retriever, "cjk_share") else 0.0
        return crosslingual.target_language(prompt.question_language(question), share)

    def _render(self, question: str, target: str, timings: Timings) -> str | None:
        """The question in the ``target`` language, written by the loaded model (greedy, no
        reasoning: a translation needs none), or None when the reply is not a question."""
        if self._tiny:  # a 135M model's "translation" would only add noise to the search
            return None
        t = time.perf_counter()
        reply = [ev.text for ev in self.engine.stream(
            crosslingual.messages(question, target), max_tokens=crosslingual.MAX_TOKENS, reasoning_budget=0,
            temperature=0.0, top_p=1.0, seed=0) if ev.kind == "answer"]
        timings.render_s = time.perf_counter() - t
        return crosslingual.clean("".join(reply), question, target)

    # -- asking ---------------------------------------------------------------------------

    def ask(self, question: str, *, sampling: Sampling | None = None) -> Iterator[AskEvent]:
        """``sampling``: this question's temperature/top_p/max_tokens/seed (see ``Sampling``)."""
        self.sampling = sampling or Sampling()
        question = question.strip()
        if not question:
            raise BadInput("the question is empty")
        # The model is loaded only once a question passed the relevance gate: `ask` about
        # something the documents do not cover answers at once, without touching the model.
        self.ensure_loaded(model=False)
        gen = self.settings.generation
        t0 = time.perf_counter()
        timings = Timings()

        query, followup, hits, rendered = yield from self._search(question, timings)
        if not relevant(hits, self.embedder_id):
            yield from self._not_found(question, query, timings, t0, rendered or "")
            return

        yield from self._load()
        engine, info = self.engine, self.info
        reasoning_budget = gen.reasoning_budget if info.reasoning else 0
        packing, turn_text = self._pack(question, hits, followup, reasoning_budget)
        valid = set(self.visible_sources()) | {s.n for s in packing.sources}
        new_tokens = engine.count_tokens(turn_text) + (engine.count_tokens(self.turns[-1].answer) if self.turns else 0)
        yield Retrieved(packing, frozenset(valid), new_tokens, new_tokens / self._speed if self._speed else 0.0,
                        rendered or "")

        history = [(t.user_content, t.answer) for t in self.turns]
        messages = prompt.messages_for(history, turn_text)
        run = _Generation(shown=answer_text.CitationStream(valid))
        yield from self._generate(engine, info, messages, reasoning_budget, run)
        stats, end = run.stats, run.end
        thinking = "".join(run.thinking).strip()
        raw_answer = "".join(run.answer).strip()
        final = self._final(question, raw_answer, valid, packing)
        if final.extra:
            yield AnswerDelta(final.extra)
        answer, cited = final.answer, final.cited

        self._fill_timings(timings, stats, run.start, run.first_token_at, run.first_answer_at, end, run.thinking_tokens)
        timings.total_s = end - t0
        if timings.prompt_tokens - timings.cached_tokens >= 64 and timings.prompt_tok_s > 0:
            self.memory.put(info, timings.prompt_tok_s)

        self.turns.append(Turn(question, query, followup, turn_text, raw_answer or answer, packing.sources))
        self.next_n += len(packing.sources)
        citations = citations_for(cited, self.visible_sources())
        matched = [] if cited or self._tiny else self._match(answer, packing.sources)
        result = AnswerResult(
            question, query, answer, thinking, citations, final.dropped, packing.sources, packing.left_out,
            False, getattr(stats, "stop_reason", None), timings, info, matched, final.withheld, final.repointed,
            final.added, final.figure_quotes, final.unfounded,
        )
        self.last = result
        yield Done(result)

    # -- internals --------------------------------------------------------------------------

    def _search(self, question: str, timings: Timings):
        """What to search for and what it finds: ``(query, followup, hits, rendered)``. A
        generator (``yield from``): rendering the question in the KB's language loads the model."""
        t0 = time.perf_counter()
        query, followup = retrieval_query(question, self.turns)
        hits = self.retriever.search(query, k=self.settings.retrieval.top_k)
        timings.retrieve_s = time.perf_counter() - t0
        target = None if followup else self._other_language(question)
        rendered = None
        if target is not None:
            yield from self._load()
            rendered = self._render(question, target, timings)
            if rendered:
                # one search with both wordings: the question's own words keep its own-language
                # passages, the rendering reaches the others (BENCHMARKS §11)
                query = f"{query}\n{rendered}"
                t1 = time.perf_counter()
                hits = self.retriever.search(query, k=self.settings.retrieval.top_k)
                timings.retrieve_s += time.perf_counter() - t1
        return query, followup, hits, rendered

    def _final(self, question: str, raw: str, valid: set[int], packing: prompt.Packing) -> "_Final":
        """What the reader is shown of what the model wrote, in order: the unmentioned-names note
        taken out if the model copied it; numbers that match no source removed; sentences stating
        a figure no source holds left out; an answer to a quantity question with no figure and
        no sentence a source holds replaced by "the documents do not say"; a citation moved to
        the source holding its sentence's words, and the number of the source a sentence was
        copied from put after it where the model cited another (the sentence's or its
        paragraph's marker); a bare "the documents do not say" uncited; and, from the 135M
        starter, the question's best source sentences quoted after it."""
        lang = prompt.question_language(question)
        raw = answer_text.drop_note_echo(raw, packing.unmentioned, lang)
        answer, cited, dropped = answer_text.clean_citations(raw, valid)
        asks_figure = figures.asks_for_figure(question)
        answer, withheld = figures.withhold(answer, self._grounds(question, packing), lang, asks_figure=asks_figure)
        shown = self._shown(packing)
        # not for the 135M starter: its best source sentences are quoted after whatever it wrote
        unfounded = asks_figure and not withheld and not self._tiny and attribution.unfounded(answer, shown, question)
        if unfounded:
            answer = figures.NO_FIGURE[lang]
        answer, repointed = attribution.repoint(answer, shown, question)
        answer, added = attribution.cite_copied(answer, shown, question)
        if repointed or withheld or added or unfounded:
            answer, cited, _ = answer_text.clean_citations(answer, valid)
        uncited = answer_text.uncite_abstention(answer) if cited else None
        if uncited is not None:
            answer, cited = uncited, []
        repointed = [move for move in repointed if move[1] in cited]  # only moves the reader still sees
        added = [n for n in added if n in cited]
        # before the tiny starter's quotes are added: they are the sources' words already
        figure_lines = figure_quotes.quotes(answer, shown, question, current=[s.n for s in packing.sources])
        extra = ""
        if self._tiny and not cited and packing.sources:
            quoted = extractive_answer(question, packing.sources)
            if quoted:
                extra = ("\n\n" if answer else "") + "From the documents: " + quoted
                answer, cited, dropped = answer_text.clean_citations(answer + extra, valid)
        return _Final(answer, cited, dropped, withheld, repointed, added, extra, figure_lines, unfounded)

    def _not_found(self, question: str, query: str, timings: Timings, t0: float, rendered: str = "") -> Iterator[AskEvent]:
        """The honest answer when nothing retrieved is close to the question (no model asked)."""
        yield Retrieved(prompt.Packing(), rendered=rendered)
        answer = not_found_message(self.kb)
        timings.total_s = time.perf_counter() - t0
        result = AnswerResult(question, query, answer, "", [], [], [], [], True, None, timings, self.info)
        self.last = result
        yield AnswerDelta(answer)
        yield Done(result)

    def _generate(self, engine, info, messages: list[dict], reasoning_budget: int, run: "_Generation"):
        """Stream the model's reply as Thinking/AnswerDelta events, recording it in ``run``."""
        picked = self.sampling.resolve(self.settings.generation, reasoning=info.reasoning, defaults=self._defaults())
        run.start = time.perf_counter()
        for ev in engine.stream(
            messages,
            max_tokens=self._max_answer_tokens(),
            reasoning_budget=reasoning_budget if info.reasoning else None,
            temperature=picked["temperature"],
            top_p=picked["top_p"],
            seed=picked["seed"],
        ):
            now = time.perf_counter()
            if ev.kind == "thinking":
                run.first_token_at = run.first_token_at or now
                run.thinking_tokens += 1
                run.thinking.append(ev.text)
                yield Thinking(ev.text, run.thinking_tokens)
            elif ev.kind == "answer":
                run.first_token_at = run.first_token_at or now
                run.first_answer_at = run.first_answer_at or now
                run.answer.append(ev.text)
                shown = run.shown.feed(ev.text)
                if shown:
                    yield AnswerDelta(shown)
            elif ev.kind == "done":
                run.stats = ev.stats
        run.end = time.perf_counter()
        rest = run.shown.flush()
        if rest:
            yield AnswerDelta(rest)

    @property
    def _tiny(self) -> bool:
        """A toy-size model (the 135M SmolLM2 starter): short answers, two sources, a quoted
        fallback. The real 1.5B starter is not tiny and gets the full treatment."""
        return bool(self.info and self.info.starter and self.info.params < TINY_PARAMS)

    def _defaults(self):
        """The catalogue's [defaults] when this session has a pool that read it."""
        return getattr(getattr(self.pool, "catalogue", None), "defaults", None)

    def _max_answer_tokens(self) -> int:
        # The 135M starter tends to loop once it has said its piece; a short cap keeps a CPU
        # user from waiting minutes for repetition.
        limit = self.sampling.resolve(self.settings.generation, reasoning=False)["max_tokens"]
        return min(limit, STARTER_MAX_ANSWER_TOKENS) if self._tiny else limit

    def _pack(self, question: str, hits: list, followup: bool, reasoning_budget: int):
        """Fit history + new sources in the window and the new part in the prefill-time budget."""
        engine, info, gen = self.engine, self.info, self.settings.generation
        has_history = bool(self.turns)
        while True:
            history = [(t.user_content, t.answer) for t in self.turns]
            skeleton = prompt.user_turn(question, prompt.Packing(), followup=has_history)
            used = len(engine.format_prompt(prompt.messages_for(history, skeleton)))
            room = info.n_ctx - used - reasoning_budget - self._max_answer_tokens()
            if room >= prompt.MIN_SOURCE_TOKENS or not self.turns:
                break
            # The window is full: forget the oldest turn (its sources go with it). The prefix
            # changes once here; later turns are stable again.
            self.turns.pop(0)
            has_history = bool(self.turns)
        speed = self.memory.get(info) or prompt.estimate_prefill_tok_s(
            params=info.params,
            cores=info.cores,
            gpu=info.n_gpu_layers > 0,
        )
        self._speed = speed
        # The window must keep room for the reasoning and the answer; within it, the sources get
        # the configured token budget (a measured trade of waiting for correctness, see
        # GenerationSettings.source_tokens), whatever the machine's speed: the view says what
        # the wait buys before it starts.
        room = prompt.prompt_token_budget(
            n_ctx=info.n_ctx,
            used_tokens=used,
            reasoning_budget=reasoning_budget,
            max_answer_tokens=self._max_answer_tokens(),
            prefill_tok_s=None,
        )
        budget = min(room, max(prompt.MIN_SOURCE_TOKENS, int(gen.source_tokens)))
        # Measured on the sample: with 5 sources (~900 tokens) the 135M starter loses the
        # question and answers nothing useful; with 2 it answers from them.
        cap = STARTER_MAX_SOURCES if self._tiny else None
        per_source = max(prompt.MIN_FOCUS_TOKENS, budget // 3)
        packing = prompt.pack_sources(
            hits, engine.count_tokens, budget, first_n=self.next_n,
            max_source_tokens=per_source, focus=self._focus(question),
            earlier=[s for t in self.turns for s in t.sources], max_sources=cap,
            limit_reason=f"the starter model reads only the best {STARTER_MAX_SOURCES}",
        )
        packing.unmentioned = self._unmentioned(question)
        return packing, prompt.user_turn(question, packing, followup=has_history)

    def _unmentioned(self, question: str) -> list[str]:
        """The question's names that no document of the KB holds (see rag/coverage.py)."""
        index = getattr(self.retriever, "index", None)
        if index is None or not hasattr(index, "mentions"):
            return []
        return unmentioned(question, index.mentions)

    def _match(self, answer: str, sources: list[prompt.Source]) -> list[Citation]:
        gate = attribution.MATCH_GATE.get((self.embedder_id or "").lower())
        embedder = getattr(self.retriever, "embedder", None)
        if gate is None or embedder is None:
            return []
        return citations_for(attribution.match(answer, sources, embedder, gate), {s.n: s for s in sources})

    def _focus(self, query: str):
        return focus.scorer(getattr(self.retriever, "index", None), getattr(self.retriever, "embedder", None), query)

    @staticmethod
    def _fill_timings(t: Timings, stats, gen_start, first_token_at, first_answer_at, end, thinking_tokens):
        if stats is not None:
            t.prompt_tokens = int(getattr(stats, "prompt_tokens", 0) or 0)
            t.cached_tokens = int(getattr(stats, "cached_tokens", 0) or 0)
            t.prompt_s = float(getattr(stats, "prompt_s", 0.0) or 0.0)
            t.ttft_s = float(getattr(stats, "ttft_s", 0.0) or 0.0)
            t.gen_tokens = int(getattr(stats, "gen_tokens", 0) or 0)
            t.gen_s = float(getattr(stats, "gen_s", 0.0) or 0.0)
            t.thinking_tokens = int(getattr(stats, "reasoning_tokens", 0) or 0)
        if not t.ttft_s and first_token_at:
            t.ttft_s = first_token_at - gen_start
        if not t.thinking_tokens:
            t.thinking_tokens = thinking_tokens
        new = t.prompt_tokens - t.cached_tokens
        if t.prompt_s > 0 and new > 0:
            t.prompt_tok_s = new / t.prompt_s
        if first_token_at:
            t.thinking_s = (first_answer_at or end) - first_token_at if t.thinking_tokens else 0.0
            t.answer_s = end - first_answer_at if first_answer_at else 0.0
        if not t.gen_s and first_token_at:
            t.gen_s = end - first_token_at
        if t.gen_s > 0 and t.gen_tokens:
            t.gen_tok_s = t.gen_tokens / t.gen_s


def citations_for(cited: list[int], table: dict[int, prompt.Source]) -> list[Citation]:
    """The sources behind the numbers an answer cites, in the order it cites them."""
    return [Citation(n, table[n].source, table[n].page, table[n].heading, table[n].text) for n in cited if n in table]


