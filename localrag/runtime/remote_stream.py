"""Reading a ``/v1/chat/completions`` server-sent-event stream into the engine's ``StreamEvent``s.

Thinking arrives either as ``reasoning_content`` deltas or inside the content, split by the same
``<think>`` splitter as the local engine; a reply that ends while still thinking has its thinking
sent as the answer (``remote.py``'s docstring has the whole story). The server's own token counts
and timings, where it sends them, replace the client's.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Iterator

from localrag.errors import LocalragError
from localrag.runtime.engine import STOP_EOS, STOP_LENGTH, GenerationStats, StreamEvent
from localrag.runtime.reasoning import ANSWER, THINKING, ReasoningSplitter
from localrag.runtime.remote_http import error_reason, server_message


def read_stream(resp, stats: GenerationStats, t_call: float, max_tokens: int, *, starts_thinking: bool,
                url: str) -> Iterator[StreamEvent]:
    """The events of one streamed reply, then "done" with ``stats`` filled in. ``starts_thinking``:
    a reasoning model, whose reply starts inside its thinking; ``url``: the server, for errors."""
    splitter = ReasoningSplitter(started_in_thinking=starts_thinking)
    server_splits = False  # the server sends the thinking as reasoning_content
    fed_content = False
    thought: list[str] = []
    answered = False
    answer_chunks = 0
    t_first = t_last = 0.0
    usage: dict = {}
    timings: dict = {}
    for chunk in sse_events(resp, url):
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            content = delta.get("content")
            pieces = []
            if reasoning:
                if not server_splits and not fed_content:
                    server_splits = True
                    splitter = ReasoningSplitter(started_in_thinking=False)
                pieces.append((THINKING, reasoning.lstrip() if not thought else reasoning))
                stats.reasoning_tokens += 1
            if content:
                fed_content = True
                was_thinking = splitter.in_thinking
                pieces += [(p.kind, p.text) for p in splitter.feed(content)]
                if was_thinking:
                    stats.reasoning_tokens += 1
                    if not splitter.in_thinking:
                        stats.thinking_closed_by = "model"
                else:
                    answer_chunks += 1
            if reasoning or content:
                t_last = time.perf_counter()
                if not t_first:
                    t_first = t_last
                    stats.ttft_s = t_first - t_call
                stats.gen_tokens += 1
            for kind, text in pieces:
                if not text:
                    continue
                if kind == THINKING:
                    thought.append(text)
                else:
                    answered = True
                    if server_splits and stats.thinking_closed_by is None:
                        stats.thinking_closed_by = "model"
                yield StreamEvent(kind, text)
            finish = choice.get("finish_reason")
            if finish:
                stats.stop_reason = STOP_LENGTH if finish == "length" else STOP_EOS
        if answer_chunks >= max_tokens:
            stats.stop_reason = STOP_LENGTH
            break
    for p in splitter.finish():
        if p.kind == THINKING:
            thought.append(p.text)
        else:
            answered = True
        yield StreamEvent(p.kind, p.text)
    if not answered and "".join(thought).strip() and stats.thinking_closed_by is None:
        stats.thinking_closed_by = "end"
        stats.answer_from_thinking = True
        yield StreamEvent(ANSWER, "".join(thought).strip())
    stats.stop_reason = stats.stop_reason or STOP_EOS
    stats.gen_s = t_last - t_first if t_first else 0.0
    apply_usage(stats, usage, timings)
    yield StreamEvent("done", stats=stats)


def sse_events(resp, url: str) -> Iterator[dict]:
    """The JSON objects of an SSE stream, up to ``data: [DONE]``."""
    while True:
        try:
            line = resp.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise LocalragError(f"the inference server at {url} dropped the stream: {error_reason(exc)}") from None
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data:"):
            continue  # blank separators, ": keep-alive" comments, event:/id: fields
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        try:
            obj = json.loads(data)
        except ValueError:
            continue
        if not isinstance(obj, dict):
            continue
        if obj.get("error"):
            raise LocalragError(f"the inference server at {url} failed: {server_message(data)}",
                                hint="see the server's log")
        yield obj


def apply_usage(stats: GenerationStats, usage: dict, timings: dict) -> None:
    """The server's own counts and timings, where it sent them, replace the client's."""
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int) and usage["prompt_tokens"] > 0:
            stats.prompt_tokens = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int) and usage["completion_tokens"] > 0:
            stats.gen_tokens = usage["completion_tokens"]
        details = usage.get("prompt_tokens_details") or {}
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            stats.cached_tokens = details["cached_tokens"]
        details = usage.get("completion_tokens_details") or {}
        if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int) and details["reasoning_tokens"]:
            stats.reasoning_tokens = details["reasoning_tokens"]
    if isinstance(timings, dict):  # llama-server
        if isinstance(timings.get("cache_n"), int):
            stats.cached_tokens = timings["cache_n"]
        if isinstance(timings.get("prompt_ms"), (int, float)):
            stats.prompt_s = timings["prompt_ms"] / 1000
    if not stats.prompt_s:
        stats.prompt_s = stats.ttft_s  # the best this side can tell: network + prefill + first token
