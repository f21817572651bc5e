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

The modules, imports pointing one way: ``remote_http.py`` is the HTTP client (requests, errors),
``remote_stream.py`` turns a streamed reply into ``StreamEvent``s; this module holds
``RemoteEngine``: connecting, counting tokens, the prompt it sends and the errors it raises.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Iterator

from localrag.errors import BadConfig, LocalragError, NotInstalled
from localrag.runtime.engine import GenerationStats, StreamEvent
from localrag.runtime.reasoning import strip_thinking
from localrag.runtime.remote_http import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, Client, HTTPStatus
from localrag.runtime.remote_stream import read_stream

# what callers imported from here before the HTTP client and the stream reader moved out
__all__ = [
    "CONNECT_TIMEOUT_S", "DEFAULT_CTX", "MESSAGE_OVERHEAD", "READ_TIMEOUT_S", "HTTPStatus", "RemoteEngine",
    "estimate_tokens", "looks_like_r1",
]

DEFAULT_CTX = 4096
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message (ChatML: ~5)

_R1 = re.compile(r"deepseek[-_ .]?r1|r1[-_ .]distill|reasoner", re.IGNORECASE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def looks_like_r1(model_id: str) -> bool:
    """Whether a served model's id names an R1 distill (or DeepSeek's reasoner)."""
    return bool(_R1.search(model_id or ""))


def estimate_tokens(text: str) -> int:
    """Token count for a server that cannot tokenize: erring high (see the module docstring)."""
    cjk = len(_CJK.findall(text))
    return cjk + -(-(len(text) - cjk) // 3)


class RemoteEngine:
    """The ``Engine`` interface over an OpenAI-compatible server. Build it with ``connect``."""

    n_gpu_layers = 0
    template = "remote"

    def __init__(self, client: Client, model: str, *, n_ctx: int, reasoning: bool, tokenize: str | None):
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
        client = Client(url, api_key)
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
    def _models(client: Client, model: str | None) -> list:
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
            yield from read_stream(resp, GenerationStats(prompt_tokens=prompt_tokens), t_call, max_tokens,
                                   starts_thinking=self._reasoning, url=self.url)
        finally:
            conn.close()  # an abandoned iterator lands here at once: the server sees the hang-up

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


def _auth_error(client: Client, exc: HTTPStatus) -> BadConfig:
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


def _ctx_from_props(client: Client) -> int | None:
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
