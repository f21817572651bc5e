"""Generation on an OpenAI-compatible inference server instead of the in-process model.

``RemoteEngine`` has the ``Engine`` interface the rag layer uses (``n_ctx``, ``reasoning``,
``count_tokens``, ``format_prompt``, ``stream``, ``close``) and streams from
``URL/v1/chat/completions`` (server-sent events). It works with llama.cpp's llama-server,
llama-cpp-python's server, vLLM, the DeepSeek API and another machine's localrag. The standard
library's http.client is enough for this and keeps the dependency list as it is.

What the server is asked, and what is guessed when it does not say:

* Model: ``llm_model`` (or the spec the caller names) checked against ``GET /v1/models``; none
  given: the first model the server lists.
* Context: ``GET /props`` (llama-server), ``max_model_len`` in ``/v1/models`` (vLLM), else
  ``llm_ctx`` (default 4096); ``llm_ctx`` also caps what the server reports.
* Token counts: ``POST /tokenize`` (llama-server, vLLM) or ``POST /extras/tokenize``
  (llama-cpp-python). A server with neither gets an estimate that errs high: one token per CJK
  character plus one per three other characters (English averages about four per token), so the
  prompt packing leaves room rather than overflow. ``format_prompt`` cannot see the server's chat
  template: it counts each message's text plus what the template adds to a one-message prompt,
  measured at connect time by a one-token completion (SmolLM2's template adds a default system
  prompt: 30 tokens, not the 5 of its role markers), plus ``MESSAGE_OVERHEAD`` per further message.
* Reasoning: ``reasoning_content`` deltas (DeepSeek API, llama-server ``--reasoning-format``,
  vLLM) are the thinking; otherwise, for a model whose id names an R1 distill, the text goes
  through the same ``<think>`` splitter as the local engine. A chat API cannot be told to close
  the thinking mid-reply the way the local engine does, so the reasoning budget becomes part of
  the server's ``max_tokens`` (budget + answer); a reply that ends while still thinking has its
  thinking sent as the answer, as the engine does.
* Sampling: temperature, top_p, seed and max_tokens are sent; top_k/min_p are not (OpenAI
  rejects unknown fields; llama.cpp servers default to the engine's 40 / 0.05 anyway).

Stopping the iterator early (the client went away, Ctrl-C) closes the HTTP connection at once,
which is how these servers learn to stop generating. Every stream has its own connection, so
concurrent streams are fine.
"""

from __future__ import annotations

import functools
import http.client
import json
import re
import socket
import ssl
import time
import urllib.parse
from typing import Iterator

from localrag.errors import BadConfig, LocalragError, NotInstalled
from localrag.runtime.engine import STOP_EOS, STOP_LENGTH, GenerationStats, StreamEvent
from localrag.runtime.reasoning import ANSWER, THINKING, ReasoningSplitter, strip_thinking

DEFAULT_CTX = 4096
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message (ChatML: ~5)
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0  # a CPU server may read a long prompt for minutes before the first token

_R1 = re.compile(r"deepseek[-_ .]?r1|r1[-_ .]distill|reasoner", re.IGNORECASE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def looks_like_r1(model_id: str) -> bool:
    """Whether a served model's id names an R1 distill (or DeepSeek's reasoner)."""
    return bool(_R1.search(model_id or ""))


def estimate_tokens(text: str) -> int:
    """Token count for a server that cannot tokenize: erring high (see the module docstring)."""
    cjk = len(_CJK.findall(text))
    return cjk + -(-(len(text) - cjk) // 3)


class _Client:
    """A few JSON requests and one SSE stream over http.client; errors become LocalragErrors."""

    def __init__(self, url: str, api_key: str | None = None):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadConfig(
                f"bad inference server URL {url!r}: expected http://HOST:PORT",
                hint="set llm_url (LOCALRAG_LLM_URL, --llm-url) to the server's address, e.g. http://127.0.0.1:8080",
            )
        self.url = url.strip().rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port
        except ValueError:
            raise BadConfig(f"bad port in inference server URL {url!r}") from None
        # Accept the base URL with or without the /v1 that OpenAI clients are usually given.
        self.prefix = re.sub(r"/v1$", "", parts.path.rstrip("/"))
        self.api_key = api_key

    def _connect(self) -> http.client.HTTPConnection:
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as exc:
            conn.close()
            raise BadConfig(
                f"cannot reach the inference server at {self.url}: {_reason(exc)}",
                hint="check llm_url (LOCALRAG_LLM_URL, --llm-url) and that the server is running",
            ) from None
        conn.sock.settimeout(READ_TIMEOUT_S)
        return conn

    def open(self, method: str, path: str, body: dict | None = None, *, stream: bool = False):
        """(connection, response) with a 2xx status; the caller closes the connection."""
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = self._connect()
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LocalragError(f"the inference server at {self.url} dropped the request: {_reason(exc)}",
                                hint="see the server's log") from None
        if resp.status >= 300:
            try:
                text = resp.read(65536)
            except (OSError, http.client.HTTPException):
                text = b""
            conn.close()
            raise HTTPStatus(resp.status, _server_message(text))
        return conn, resp

    def json(self, method: str, path: str, body: dict | None = None) -> dict:
        conn, resp = self.open(method, path, body)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LocalragError(f"the inference server at {self.url} dropped the reply: {_reason(exc)}") from None
        finally:
            conn.close()
        try:
            return json.loads(raw)
        except ValueError:
            raise BadConfig(f"{self.url}{path} did not answer JSON: is it an OpenAI-compatible server?") from None


class HTTPStatus(Exception):
    """A non-2xx answer; ``RemoteEngine`` turns it into the LocalragError that fits."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def _server_message(raw: bytes) -> str:
    """The server's own words from an error body (OpenAI, FastAPI and llama-server shapes)."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "no message"
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err:
            return str(err)[:300]
    return text[:300]


class RemoteEngine:
    """The ``Engine`` interface over an OpenAI-compatible server. Build it with ``connect``."""

    n_gpu_layers = 0
    template = "remote"

    def __init__(self, client: _Client, model: str, *, n_ctx: int, reasoning: bool, tokenize: str | None):
        self.client = client
        self.url = client.url
        self.model = model
        self.n_ctx = n_ctx
        self._reasoning = reasoning
        self._tokenize_path = tokenize  # "/tokenize", "/extras/tokenize" or None (estimate)
        self._bos_tokens = 0  # tokens the server's tokenizer adds to any text (a BOS)
        self._template_tokens = 2 * MESSAGE_OVERHEAD  # the template around one user message
        self.count_tokens = functools.lru_cache(maxsize=4096)(self._count_tokens)

    # --- connecting --------------------------------------------------------------------------

    @classmethod
    def connect(cls, url: str, *, model: str | None = None, api_key: str | None = None,
                ctx: int | None = None) -> "RemoteEngine":
        """Ask the server which models it serves, its context and whether it tokenizes."""
        client = _Client(url, api_key)
        listed = cls._models(client, model)
        ids = [m.get("id") for m in listed if isinstance(m, dict) and m.get("id")]
        chosen = _pick(ids, model, client.url)
        entry = next((m for m in listed if isinstance(m, dict) and m.get("id") == chosen), {})
        served_ctx = _ctx_from_model(entry) or _ctx_from_props(client)
        n_ctx = min(filter(None, (served_ctx, ctx))) if (served_ctx or ctx) else DEFAULT_CTX
        engine = cls(client, chosen, n_ctx=n_ctx, reasoning=looks_like_r1(chosen), tokenize=None)
        engine._probe_tokenizer()
        engine._measure_template()
        return engine

    @staticmethod
    def _models(client: _Client, model: str | None) -> list:
        try:
            data = client.json("GET", "/v1/models")
        except HTTPStatus as exc:
            if exc.status in (401, 403):
                raise _auth_error(client, exc) from None
            if exc.status == 404 and model:
                return []  # no model list: trust the name we were given
            raise BadConfig(
                f"{client.url} is not an OpenAI-compatible server (GET /v1/models: HTTP {exc.status} {exc.message})",
                hint="llm_url must be the server's base address, e.g. http://127.0.0.1:8080",
            ) from None
        listed = data.get("data") if isinstance(data, dict) else None
        return listed if isinstance(listed, list) else []

    def _probe_tokenizer(self) -> None:
        for path in ("/tokenize", "/extras/tokenize"):
            try:
                empty = self._server_tokens("", path)
            except (HTTPStatus, LocalragError):
                continue
            if empty is not None:
                self._tokenize_path = path
                self._bos_tokens = empty
                return

    def _measure_template(self) -> None:
        """What the chat template adds to one user message, from the server's own usage count.
        Also the first real request: a wrong model or key fails here, before any retrieval."""
        probe = "Hi"
        body = {"model": self.model, "messages": [{"role": "user", "content": probe}], "max_tokens": 1,
                "temperature": 0.0, "stream": False}
        try:
            data = self.client.json("POST", "/v1/chat/completions", body)
        except HTTPStatus as exc:
            raise self._error(exc) from None
        usage = data.get("usage") if isinstance(data, dict) else None
        used = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        if isinstance(used, int) and used > 0:
            self._template_tokens = max(0, used - self.count_tokens(probe))

    def _server_tokens(self, text: str, path: str) -> int | None:
        if path == "/tokenize":
            # llama-server reads "content", vLLM "prompt" and "model"; each ignores the others.
            body = {"content": text, "prompt": text, "model": self.model, "add_special": False,
                    "add_special_tokens": False}
        else:
            body = {"input": text, "model": self.model}
        data = self.client.json("POST", path, body)
        if isinstance(data, dict):
            if isinstance(data.get("tokens"), list):
                return len(data["tokens"])
            if isinstance(data.get("count"), int):
                return data["count"]
        return None

    # --- the Engine interface ----------------------------------------------------------------

    @property
    def reasoning(self) -> bool:
        return self._reasoning

    @property
    def tokenizes(self) -> bool:
        """True when counts come from the server's tokenizer, False when they are estimates."""
        return self._tokenize_path is not None

    def _count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenize_path is not None:
            try:
                n = self._server_tokens(text, self._tokenize_path)
            except HTTPStatus as exc:
                raise self._error(exc) from None
            if n is not None:
                return max(0, n - self._bos_tokens)
        return estimate_tokens(text)

    def format_prompt(self, messages: list[dict]) -> list[int]:
        """Placeholders, one per prompt token: the server applies the chat template, so only the
        length (the messages' text plus the template's share, see the module docstring) means
        anything here."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("messages must end with a user turn")
        wire = self._wire_messages(messages)
        n = self._template_tokens + MESSAGE_OVERHEAD * (len(wire) - 1)
        n += sum(self.count_tokens(m["content"]) for m in wire)
        return [0] * n

    def _wire_messages(self, messages: list[dict]) -> list[dict]:
        out: list[dict] = []
        pending_system = ""
        for msg in messages:
            role, content = msg.get("role"), msg.get("content") or ""
            if role == "system" and self._reasoning:
                # The R1 distills were not trained with a system prompt (as the local engine does).
                pending_system += content.strip() + "\n\n"
                continue
            if role == "user" and pending_system:
                content, pending_system = pending_system + content, ""
            elif role == "assistant":
                content = strip_thinking(content)
            elif role not in ("system", "user"):
                raise ValueError(f"unknown role {role!r}")
            out.append({"role": role, "content": content})
        return out

    def close(self) -> None:
        self.count_tokens.cache_clear()

    def __enter__(self) -> "RemoteEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- generation ----------------------------------------------------------------------------

    def stream(self, messages: list[dict], *, max_tokens: int, reasoning_budget: int | None,
               temperature: float | None = None, top_p: float | None = None, seed: int | None = None, top_k: int = 40, min_p: float = 0.05) -> Iterator[StreamEvent]:
        """Stream the reply as thinking/answer events, then one "done" event with the stats."""
        t_call = time.perf_counter()
        prompt_tokens = len(self.format_prompt(messages))
        room = self.n_ctx - prompt_tokens
        if room < 2:
            raise LocalragError(
                f"the prompt has about {prompt_tokens} tokens but the server's context holds {self.n_ctx}",
                hint="ask a shorter question or use fewer sources (-k)",
            )
        think_room = (reasoning_budget if reasoning_budget is not None else room) if self._reasoning else 0
        body = {
            "model": self.model,
            "messages": self._wire_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max(1, min(max_tokens + max(think_room, 0), room - 1)),
        }
        # None: the server's own default (llama-cpp-python's server refuses an explicit null)
        for name, value in (("temperature", temperature), ("top_p", top_p), ("seed", seed)):
            if value is not None:
                body[name] = value
        try:
            conn, resp = self.client.open("POST", "/v1/chat/completions", body, stream=True)
        except HTTPStatus as exc:
            raise self._error(exc) from None
        try:
            yield from self._read(resp, GenerationStats(prompt_tokens=prompt_tokens), t_call, max_tokens)
        finally:
            conn.close()  # an abandoned iterator lands here at once: the server sees the hang-up

    def _read(self, resp, stats: GenerationStats, t_call: float, max_tokens: int) -> Iterator[StreamEvent]:
        splitter = ReasoningSplitter(started_in_thinking=self._reasoning)
        server_splits = False  # the server sends the thinking as reasoning_content
        fed_content = False
        thought: list[str] = []
        answered = False
        answer_chunks = 0
        t_first = t_last = 0.0
        usage: dict = {}
        timings: dict = {}
        for chunk in self._events(resp):
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
        _apply_usage(stats, usage, timings)
        yield StreamEvent("done", stats=stats)

    def _events(self, resp) -> Iterator[dict]:
        """The JSON objects of an SSE stream, up to ``data: [DONE]``."""
        while True:
            try:
                line = resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise LocalragError(f"the inference server at {self.url} dropped the stream: {_reason(exc)}") from None
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
                raise LocalragError(f"the inference server at {self.url} failed: {_server_message(data)}",
                                    hint="see the server's log")
            yield obj

    def _error(self, exc: HTTPStatus) -> LocalragError:
        if exc.status in (401, 403):
            return _auth_error(self.client, exc)
        if exc.status == 404:
            return NotInstalled(f"the inference server at {self.url} has no model '{self.model}': {exc.message}",
                                hint="set llm_model (--llm-model) to a model the server lists at /v1/models")
        if exc.status >= 500:
            return LocalragError(f"the inference server at {self.url} failed (HTTP {exc.status}): {exc.message}",
                                 hint="see the server's log")
        return LocalragError(f"the inference server at {self.url} refused the request (HTTP {exc.status}): {exc.message}")


def _auth_error(client: _Client, exc: HTTPStatus) -> BadConfig:
    which = "was refused" if client.api_key else "needs an API key"
    return BadConfig(f"the inference server at {client.url} {which} (HTTP {exc.status}): {exc.message}",
                     hint="set llm_api_key in config.toml or LOCALRAG_LLM_API_KEY")


def _pick(ids: list[str], wanted: str | None, url: str) -> str:
    if not wanted:
        if not ids:
            raise BadConfig(f"the inference server at {url} lists no models",
                            hint="name one with llm_model (--llm-model)")
        return ids[0]
    if not ids or wanted in ids:
        return wanted
    # llama-cpp-python lists the model file's path: accept its file name, with or without .gguf.
    low = wanted.lower()
    for i in ids:
        name = i.replace("\\", "/").rsplit("/", 1)[-1].lower()
        if low in (i.lower(), name, name.removesuffix(".gguf")):
            return i
    raise NotInstalled(f"the inference server at {url} has no model '{wanted}' (it serves: {', '.join(ids)})",
                       hint="set llm_model (--llm-model) to one of those")


def _ctx_from_model(entry: dict) -> int | None:
    value = entry.get("max_model_len")  # vLLM
    return value if isinstance(value, int) and value > 0 else None


def _ctx_from_props(client: _Client) -> int | None:
    """llama-server's GET /props: the slot context it actually runs with."""
    try:
        props = client.json("GET", "/props")
    except (HTTPStatus, LocalragError):
        return None
    if not isinstance(props, dict):
        return None
    settings = props.get("default_generation_settings")
    for value in (props.get("n_ctx"), settings.get("n_ctx") if isinstance(settings, dict) else None):
        if isinstance(value, int) and value > 0:
            return value
    return None


def _apply_usage(stats: GenerationStats, usage: dict, timings: dict) -> None:
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
