"""A plain conversation with the language model: no knowledge base, no retrieval, no citations.

The server offers the bare model beside the ``kb:NAME`` ones (an OpenAI client lists it as a
model and may just chat). It yields the same typed events as ``Session.ask`` so a front door
renders both one way: ``[Loading, Loaded,] (Thinking | AnswerDelta)*, Done``. The messages go to
the engine as they are (OpenAI roles); the engine folds a system message into the first user
turn for the R1 distills, which were trained without one, and strips earlier reasoning.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from localrag.errors import BadInput
from localrag.rag.results import AnswerDelta, AnswerResult, AskEvent, Done, Loaded, Loading, Thinking, Timings
from localrag.rag.session import Sampling

ROLES = ("system", "user", "assistant")


def plain_chat(pool, settings, messages: list[dict], *, model: str | None = None,
               sampling: Sampling | None = None, progress: Callable[[str], None] | None = None) -> Iterator[AskEvent]:
    """Stream the model's reply to ``messages`` (dicts with ``role`` and ``content``; the last
    one is the user's)."""
    if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content") or "").strip():
        raise BadInput("the last message must be a non-empty user message")
    if any(m.get("role") not in ROLES for m in messages):
        raise BadInput(f"message roles must be one of {', '.join(ROLES)}")
    spec = model if model is not None else settings.model
    t0 = time.perf_counter()
    loading = pool.loaded is None
    if loading:
        yield Loading(spec or "")
    engine, info = pool.engine(spec, progress)
    if loading:
        yield Loaded(info)
    gen = settings.generation
    chat = [{"role": m["role"], "content": str(m.get("content") or "")} for m in messages]
    need = len(engine.format_prompt(chat)) + (gen.reasoning_budget if info.reasoning else 0) + 16
    if need > info.n_ctx:
        raise BadInput(f"the conversation needs ~{need} tokens but the model's context holds {info.n_ctx}",
                       hint="Start a new conversation, or send fewer earlier messages.")
    picked = (sampling or Sampling()).resolve(gen, reasoning=info.reasoning, defaults=pool.catalogue.defaults)
    thinking, answer, stats = [], [], None
    for ev in engine.stream(
        chat,
        max_tokens=picked["max_tokens"], reasoning_budget=gen.reasoning_budget if info.reasoning else None,
        temperature=picked["temperature"], top_p=picked["top_p"], seed=picked["seed"],
    ):
        if ev.kind == "thinking":
            thinking.append(ev.text)
            yield Thinking(ev.text, len(thinking))
        elif ev.kind == "answer":
            answer.append(ev.text)
            yield AnswerDelta(ev.text)
        elif ev.kind == "done":
            stats = ev.stats
    end = time.perf_counter()
    t = Timings(total_s=end - t0)
    if stats is not None:
        t.prompt_tokens, t.cached_tokens = stats.prompt_tokens, stats.cached_tokens
        t.prompt_s, t.ttft_s, t.gen_s = stats.prompt_s, stats.ttft_s, stats.gen_s
        t.gen_tokens, t.thinking_tokens = stats.gen_tokens, stats.reasoning_tokens
        t.gen_tok_s = stats.decode_tps
    question = str(messages[-1]["content"])
    result = AnswerResult(question, "", "".join(answer).strip(), "".join(thinking).strip(), [], [], [], [],
                          False, getattr(stats, "stop_reason", None), t, info)
    yield Done(result)
