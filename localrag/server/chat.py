"""Chat completions: OpenAI messages in, ``LocalRAG`` events through the queue, OpenAI chunks out.

No retrieval or answer logic lives here: a ``kb:NAME`` request asks a ``Conversation`` (the
API's Session) and a bare-model request ``LocalRAG.chat``; this module only translates.

* Conversations: a follow-up from an OpenAI client repeats the whole history. A small LRU keeps
  the Session of each recent conversation under a digest of its messages, so the follow-up finds
  the Session whose history matches (its earlier turns exactly as the model read them, sources
  included) and the model's KV cache of that prefix is reused when the slot still holds it. A
  history the server has not seen (another server, an edited message) starts a Session from the
  messages as they are.
* Generation runs in its own thread pool (one thread per slot), never in the pool that serves
  searches and embeddings; events come back to the event loop through an asyncio queue. The
  thread checks a cancel flag after every token, so a client that leaves stops its generation
  within a token and its slot passes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict
from typing import AsyncIterator, Callable, Iterator

log = logging.getLogger("localrag.server")

STOP_REASONS = {"length": "length", "context": "length"}


# --- conversations ---------------------------------------------------------------------------


def conversation_key(kb: str, pairs: list[tuple[str, str]]) -> str:
    norm = [[" ".join(q.split()), " ".join(a.split())] for q, a in pairs]
    return hashlib.sha256(json.dumps([kb, norm], ensure_ascii=False).encode()).hexdigest()


class Conversations:
    """Recent KB conversations by the digest of their (question, answer) history."""

    def __init__(self, rag, size: int = 32):
        self.rag = rag
        self.size = size
        self._lru: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def take(self, kb: str, pairs: list[tuple[str, str]]):
        """The Session holding exactly this history (taken out: one request uses it at a time),
        or a new one continuing from the messages."""
        key = conversation_key(kb, pairs)
        with self._lock:
            session = self._lru.pop(key, None)
        if session is not None:
            self.hits += 1
            return session
        session = self.rag.conversation(kb)
        if pairs:
            session.load_history(pairs)
        return session

    def put(self, kb: str, pairs: list[tuple[str, str]], session) -> None:
        key = conversation_key(kb, pairs)
        with self._lock:
            self._lru[key] = session
            self._lru.move_to_end(key)
            while len(self._lru) > self.size:
                self._lru.popitem(last=False)


# --- running a generation in its thread --------------------------------------------------------


async def run_in_thread(make_events: Callable[[], Iterator], executor, cancel: threading.Event,
                        on_end: Callable[[object], None]) -> AsyncIterator:
    """Iterate ``make_events()`` in ``executor``; yield its events here. ``cancel`` stops it after
    the current event; ``on_end(last event or None when stopped early)`` runs on the event loop
    once the thread has let go."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    def send(item) -> None:
        try:
            loop.call_soon_threadsafe(inbox.put_nowait, item)
        except RuntimeError:
            pass  # the loop is gone (server stopping)

    def work() -> None:
        events = None
        last = None
        try:
            events = make_events()
            for event in events:
                if cancel.is_set():
                    last = None
                    break
                last = event
                send(("event", event))
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which answers it
            last = None
            send(("error", exc))
        finally:
            if events is not None and hasattr(events, "close"):
                try:
                    events.close()  # unwinds Session.ask and the engine's generator: KV stays consistent
                except Exception:  # noqa: BLE001
                    log.warning("closing a generation failed", exc_info=True)
            try:
                loop.call_soon_threadsafe(on_end, last)
            except RuntimeError:
                pass
            send(("end", None))

    loop.run_in_executor(executor, work)
    try:
        while True:
            kind, value = await inbox.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        cancel.set()


# --- OpenAI shapes -----------------------------------------------------------------------------


def source_dict(src, url: str | None, cited: set[int]) -> dict:
    return {"n": src.n, "source": src.source, "page": src.page, "heading": src.heading or "",
            "text": src.text, "url": url, "cited": src.n in cited}


def left_out_dict(lo) -> dict:
    return {"source": lo.source, "page": lo.page, "heading": lo.heading or "", "reason": lo.reason}


def sources_text(sources: list[dict]) -> str:
    """The plain "Sources:" list some clients want inside the content."""
    shown = [s for s in sources if s["cited"]] or sources
    if not shown:
        return ""
    lines = []
    for s in shown:
        where = s["source"] + (f", page {s['page']}" if s.get("page") else "")
        heading = f" - {s['heading']}" if s.get("heading") else ""
        lines.append(f"[{s['n']}] {where}{heading}")
    return "\n\nSources:\n" + "\n".join(lines)


def usage(result) -> dict:
    t = result.timings
    completion = t.gen_tokens
    return {"prompt_tokens": t.prompt_tokens, "completion_tokens": completion,
            "total_tokens": t.prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": t.thinking_tokens}}


def timings(result) -> dict:
    t = result.timings
    return {"retrieve_s": round(t.retrieve_s, 3), "ttft_s": round(t.ttft_s, 3), "prompt_tokens": t.prompt_tokens,
            "cached_tokens": t.cached_tokens, "thinking_tokens": t.thinking_tokens, "thinking_s": round(t.thinking_s, 3),
            "gen_tokens": t.gen_tokens, "total_s": round(t.total_s, 3)}


class Translator:
    """Turns one request's event stream into OpenAI chunks (and the final message)."""

    def __init__(self, model: str, link: Callable[[str], str | None], *, sources_in_content: bool,
                 model_loaded: bool = False, model_id: str | None = None):
        self.model_loaded = model_loaded  # a new conversation "loads" the pool's model in no time: not worth a stage
        self.model_id = model_id  # the model a "loading" stage names
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model
        self.link = link
        self.sources_in_content = sources_in_content
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.packed: list = []
        self.stage = ""
        self.result = None
        self.final_sources: list[dict] = []
        self.tail = ""

    def chunk(self, delta: dict | None = None, *, finish: str | None = None, **extra) -> dict:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
        out.update(extra)
        return out

    def stage_chunk(self, stage: str, **info) -> dict:
        self.stage = stage
        return self.chunk(localrag={"stage": stage, **info})

    def feed(self, event) -> list[dict]:
        """Chunks for one event (none for some)."""
        kind = event.kind
        if kind == "loading":
            return [] if self.model_loaded else [self.stage_chunk("loading", model=event.model or self.model_id or "")]
        if kind == "retrieved":
            self.packed = list(event.packing.sources)
            return [self.stage_chunk(
                "reading", prompt_tokens=event.prompt_tokens, prefill_s=round(event.prefill_s, 2),
                sources=[source_dict(s, self.link(s.source), set()) for s in self.packed],
                left_out=[left_out_dict(lo) for lo in event.packing.left_out],
                unmentioned=list(event.packing.unmentioned),
                rendered=event.rendered or None,
            )]
        if kind == "thinking":
            out = [] if self.stage == "thinking" else [self.stage_chunk("thinking")]
            self.reasoning.append(event.text)
            return out + [self.chunk({"reasoning_content": event.text})]
        if kind == "answer":
            out = [] if self.stage == "answering" else [self.stage_chunk("answering")]
            self.content.append(event.text)
            return out + [self.chunk({"content": event.text})]
        if kind == "done":
            self._finish(event.result)
        return []

    def _finish(self, result) -> None:
        self.result = result
        cited = {c.n for c in result.citations}
        sources = [source_dict(s, self.link(s.source), cited) for s in result.sources]
        have = {s["n"] for s in sources}
        for c in result.citations:  # cited from an earlier turn's sources
            if c.n not in have:
                sources.append({"n": c.n, "source": c.source, "page": c.page, "heading": c.heading or "",
                                "text": c.text, "url": self.link(c.source), "cited": True})
        self.final_sources = sources
        self.tail = sources_text(sources) if self.sources_in_content and not result.not_found else ""

    @property
    def finish_reason(self) -> str:
        reason = getattr(self.result, "stop_reason", None) or "stop"
        return STOP_REASONS.get(reason, "stop")

    def done_info(self) -> dict:
        r = self.result
        info = {"stage": "done", "citations": [c.n for c in r.citations], "not_found": bool(r.not_found),
                "timings": timings(r)}
        if r.repointed:
            info["repointed"] = [list(m) for m in r.repointed]
        if getattr(r, "added_citations", None):
            info["added_citations"] = list(r.added_citations)
        if getattr(r, "unfounded", False):
            info["unfounded"] = True
        if getattr(r, "figure_quotes", None):
            info["figure_quotes"] = [asdict(q) for q in r.figure_quotes]
        # The final answer can differ from the streamed text: numbers that match no source are
        # removed, and a bare "the documents do not say [5]" loses its "[5]". A reader that showed
        # the stream replaces it with this, so it never shows a citation the sources omit.
        streamed = "".join(self.content).strip()
        if self.content and r.answer.strip() != streamed:
            info["content"] = r.answer + self.tail
        return info

    def last_chunks(self) -> list[dict]:
        out = [self.chunk({"content": self.tail})] if self.tail else []
        out.append(self.chunk(finish=self.finish_reason, sources=self.final_sources, usage=usage(self.result),
                              localrag=self.done_info()))
        return out

    def streamed_content(self) -> str:
        return "".join(self.content) + self.tail

    def message_content(self) -> str:
        """Non-streaming content: the cleaned answer (invalid citation numbers removed)."""
        answer = self.result.answer if self.result is not None else "".join(self.content)
        return answer + self.tail

    def completion(self) -> dict:
        message = {"role": "assistant", "content": self.message_content(), "sources": self.final_sources}
        reasoning = self.result.thinking if self.result is not None else "".join(self.reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
                "usage": usage(self.result), "sources": self.final_sources, "localrag": self.done_info()}
