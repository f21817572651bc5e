"""The OpenAI-compatible endpoints: /v1/models, /v1/chat/completions, /v1/embeddings.

Models: ``kb:NAME`` answers from that knowledge base (retrieval, citations, sources); the bare
model id chats with the model alone. Sampling fields are honoured within the model card's limits
(``rag.session.Sampling``): for the R1 distills temperature is kept in 0.5-0.7 (0.6 by default),
and ``max_tokens`` bounds the answer, up to the server's ``max_answer_tokens`` (the reasoning
has its own budget, ``reasoning_budget``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import struct
import threading
import time
from typing import Any, Literal, Optional, Union

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from localrag.errors import LocalragError
from localrag.server import http
from localrag.server.auth import need, principal
from localrag.server.chat import Translator, run_in_thread
from localrag.server.http import ApiError
from localrag.server.queue import QueueFull

log = logging.getLogger("localrag.server")
router = APIRouter()

MAX_MESSAGES = 256
MAX_CHARS = 200_000
MAX_QUESTION_CHARS = 8_000  # a KB question; its sources and answer must fit the context beside it
MAX_EMBED_INPUTS = 256
MAX_EMBED_CHARS = 32_000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: Optional[str] = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    seed: Optional[int] = Field(None, ge=0, le=2**32 - 1)
    n: Optional[int] = Field(1, ge=1, le=1)
    sources_in_content: Optional[bool] = None


class EmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    input: Union[str, list[str]]
    encoding_format: Literal["float", "base64"] = "float"


async def in_pool(request: Request, fn, *args, **kwargs):
    """Run a blocking call in the work pool (not the generation threads)."""
    state = request.app.state.localrag
    return await asyncio.get_running_loop().run_in_executor(state.work_pool, functools.partial(fn, *args, **kwargs))


def bare_model_id(state) -> str | None:
    """The id of the model plain chat uses (the configured or the machine's choice), if installed."""
    if not hasattr(state, "model_id"):
        try:
            state.model_id = state.rag.pool.resolve(state.rag.settings.model).spec.id
        except LocalragError:
            state.model_id = None
    return state.model_id


def visible_kbs(state, who) -> list[str]:
    return [kb for kb in state.rag.knowledge_bases() if who.role(kb) is not None]


@router.get("/v1/models")
async def models(request: Request, who=Depends(principal)):
    state = request.app.state.localrag
    kbs = await in_pool(request, visible_kbs, state, who)
    created = int(state.metrics.started)
    data = [{"id": f"kb:{kb}", "object": "model", "created": created, "owned_by": "localrag",
             "localrag": {"kb": kb, "role": who.role(kb)}} for kb in kbs]
    bare = await in_pool(request, bare_model_id, state)
    if bare:
        data.append({"id": bare, "object": "model", "created": created, "owned_by": "localrag", "localrag": {"kb": None}})
    return {"object": "list", "data": data}


def _text(msg: Message) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    parts = []
    for part in msg.content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"only text content is supported (got a '{part.type}' part)", "unsupported_content")
        parts.append(part.text)
    return "\n".join(parts)


def _messages(body: ChatRequest) -> list[dict]:
    msgs = [{"role": "system" if m.role == "developer" else m.role, "content": _text(m)} for m in body.messages]
    if sum(len(m["content"]) for m in msgs) > MAX_CHARS:
        raise ApiError(413, f"the messages are over {MAX_CHARS} characters; start a new conversation", "too_long")
    if msgs[-1]["role"] != "user" or not msgs[-1]["content"].strip():
        raise ApiError(400, "the last message must be a non-empty user message", "invalid_messages")
    return msgs


def history_pairs(msgs: list[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs before the last user message; system messages are not used for
    knowledge-base chat (localrag's prompt frames the sources itself)."""
    pairs, pending = [], []
    for m in msgs[:-1]:
        if m["role"] == "user":
            pending.append(m["content"])
        elif m["role"] == "assistant" and pending:
            pairs.append(("\n".join(pending), m["content"]))
            pending = []
    return pairs


def _resolve_model(state, who, model: str) -> str | None:
    """The KB a ``kb:NAME`` model names (checked for read access), or None for the bare model."""
    if model.startswith("kb:"):
        kb = model[3:]
        need(who, kb, "read")
        return kb
    bare = bare_model_id(state)
    if bare is not None and model in (bare, state.rag.settings.model or bare):
        return None
    raise ApiError(404, f"model '{model}' does not exist (GET /v1/models lists them)", "model_not_found")


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, body: ChatRequest, who=Depends(principal)):
    from localrag.rag.session import Sampling

    state = request.app.state.localrag
    kb = await in_pool(request, _resolve_model, state, who, body.model)
    msgs = _messages(body)
    question = msgs[-1]["content"]
    if kb and len(question) > MAX_QUESTION_CHARS:
        raise ApiError(413, f"the question is over {MAX_QUESTION_CHARS} characters; ask it shorter", "too_long")
    sampling = Sampling(body.temperature, body.top_p, body.max_completion_tokens or body.max_tokens, body.seed)
    in_content = state.config.sources_in_content if body.sources_in_content is None else body.sources_in_content
    base = str(request.base_url)
    link = (lambda source: state.signer.url(base, who.key_id, kb, source)) if kb else (lambda source: None)
    translator = Translator(body.model, link, sources_in_content=in_content,
                            model_loaded=state.rag.pool.loaded is not None,
                            model_id=await in_pool(request, bare_model_id, state))
    pairs = history_pairs(msgs) if kb else []
    if kb:
        session = await in_pool(request, state.conversations.take, kb, pairs)
        make = lambda: session.ask(question, sampling=sampling)  # noqa: E731
    else:
        session = None
        make = lambda: state.rag.chat(msgs, sampling=sampling)  # noqa: E731
    try:
        ticket = state.queue.enter()
    except QueueFull as full:
        state.metrics.rejected += 1
        raise ApiError(503, f"the server is busy: {state.queue.active} answering, {state.queue.waiting} waiting; "
                       f"retry in {full.retry_after} s", "queue_full", {"Retry-After": str(full.retry_after)}) from None
    run = Run(state, ticket, translator, make, kb, pairs, question, session)
    if body.stream:
        from sse_starlette.sse import EventSourceResponse

        return EventSourceResponse(run.sse(), ping=15)
    return await run.whole(request)


class Run:
    """One chat completion from its queue ticket to its last chunk."""

    def __init__(self, state, ticket, translator: Translator, make, kb, pairs, question, session):
        self.state, self.ticket, self.tr, self.make = state, ticket, translator, make
        self.kb, self.pairs, self.question, self.session = kb, pairs, question, session
        self.cancel = threading.Event()
        state.running.add(self.cancel)
        self.started = False
        self.entered = time.monotonic()
        self.waited = 0.0

    def _ended(self, last) -> None:
        self.state.queue.release(self.ticket)
        self.state.running.discard(self.cancel)
        r = last.result if getattr(last, "kind", None) == "done" else None  # None: stopped early
        t = r.timings if r is not None else None
        self.state.metrics.generation(
            tokens=t.gen_tokens if t else 0, seconds=t.gen_s if t else 0.0, prompt_tokens=t.prompt_tokens if t else 0,
            waited=self.waited, cancelled=r is None,
        )

    def _events(self):
        self.started = True
        self.waited = time.monotonic() - self.entered
        return run_in_thread(self.make, self.state.generation_pool, self.cancel, self._ended)

    def _remember(self, content: str) -> None:
        if self.kb and self.tr.result is not None:
            self.state.conversations.put(self.kb, self.pairs + [(self.question, content)], self.session)

    def _cleanup(self) -> None:
        self.cancel.set()
        if not self.started:
            self.state.queue.release(self.ticket)  # left while waiting: out of the line
            self.state.running.discard(self.cancel)

    async def sse(self):
        import json

        def data(obj) -> dict:
            return {"data": json.dumps(obj, ensure_ascii=False)}

        try:
            last = None
            while not self.ticket.granted.done():
                pos = self.state.queue.position(self.ticket)
                if pos != last:
                    last = pos
                    yield data(self.tr.stage_chunk("queued", position=pos))
                await asyncio.wait({self.ticket.granted}, timeout=1.0)
            yield data(self.tr.chunk({"role": "assistant", "content": ""}))
            if self.kb:
                yield data(self.tr.stage_chunk("retrieving"))
            async for event in self._events():
                for chunk in self.tr.feed(event):
                    yield data(chunk)
            if self.tr.result is not None:
                for chunk in self.tr.last_chunks():
                    yield data(chunk)
                self._remember(self.tr.streamed_content())
            yield {"data": "[DONE]"}
        except LocalragError as exc:
            err = http.from_localrag(exc)
            yield data(http.body(err.status, err.message, err.code))
            yield {"data": "[DONE]"}
        except Exception as exc:  # noqa: BLE001 - the stream has started: say it in the stream
            log.error("chat stream failed", exc_info=exc)
            yield data(http.body(500, "internal server error (see the server's log)", "internal_error"))
            yield {"data": "[DONE]"}
        finally:
            self._cleanup()

    async def whole(self, request: Request):
        watch = asyncio.create_task(_watch_disconnect(request, self.cancel))
        try:
            done, _ = await asyncio.wait({self.ticket.granted, watch}, return_when=asyncio.FIRST_COMPLETED)
            if self.cancel.is_set():
                return JSONResponse(http.body(499, "client closed the request"), status_code=499)
            async for event in self._events():
                self.tr.feed(event)
            if self.tr.result is None:
                return JSONResponse(http.body(499, "client closed the request"), status_code=499)
            payload = self.tr.completion()
            self._remember(payload["choices"][0]["message"]["content"])
            return payload
        finally:
            watch.cancel()
            self._cleanup()


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    while not cancel.is_set():
        if await request.is_disconnected():
            cancel.set()
            return
        await asyncio.sleep(0.25)


# --- embeddings ----------------------------------------------------------------------------------


@router.post("/v1/embeddings")
async def embeddings(request: Request, body: EmbeddingsRequest, who=Depends(principal)):
    if not body.model.startswith("kb:"):
        raise ApiError(404, f"model '{body.model}' does not exist: embeddings use a knowledge base's embedder, "
                       "model 'kb:NAME'", "model_not_found")
    kb = body.model[3:]
    need(who, kb, "read")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts or len(texts) > MAX_EMBED_INPUTS:
        raise ApiError(400, f"input must hold 1 to {MAX_EMBED_INPUTS} texts", "invalid_input")
    if any(not t.strip() for t in texts) or any(len(t) > MAX_EMBED_CHARS for t in texts):
        raise ApiError(400, f"every input must be non-empty text of at most {MAX_EMBED_CHARS} characters", "invalid_input")
    vectors = await in_pool(request, request.app.state.localrag.rag.embed, texts, kb=kb)
    data = []
    for i, vec in enumerate(vectors):
        value: Any = vec
        if body.encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(len(t.split()) for t in texts)
    return {"object": "list", "data": data, "model": body.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
