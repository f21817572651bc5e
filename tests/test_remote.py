"""Generation on an OpenAI-compatible server (``--llm-url``), against a real one: llama-cpp-python's
own server (``python -m llama_cpp.server``) serving the SmolLM2 starter GGUF on loopback.

What such a server cannot be made to send (an R1 distill's ``<think>`` text, DeepSeek-style
``reasoning_content`` deltas, a 401, a 500 mid-stream, a slow stream to hang up on) comes from a
tiny local HTTP server in this file that replays scripted server-sent events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from localrag.errors import BadConfig, LocalragError, NotInstalled
from localrag.runtime.remote import RemoteEngine, estimate_tokens
from tests.kb_helpers import free_port, install_minilm, minilm_dir, run_cli, settings_for  # noqa: F401

GEN = dict(temperature=0.0, top_p=1.0, seed=7)
QUESTION = [{"role": "user", "content": "Say hello in one short sentence."}]


# --- a real server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_server(smollm2_gguf, tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server on a free loopback port, for this module."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _collect(events):
    thinking, answer, stats = [], [], None
    for ev in events:
        if ev.kind == "thinking":
            thinking.append(ev.text)
        elif ev.kind == "answer":
            answer.append(ev.text)
        else:
            stats = ev.stats
    return "".join(thinking), "".join(answer), stats


def test_remote_engine_streams_an_answer_from_a_real_server(llama_server, smollm2_gguf):
    engine = RemoteEngine.connect(llama_server, ctx=2048)
    assert engine.model.endswith(smollm2_gguf.name)  # llama-cpp-python lists the model's path
    assert engine.n_ctx == 2048  # this server does not say its context: the setting is used
    assert engine.tokenizes and not engine.reasoning
    # The server's own tokenizer, without the BOS it adds to every text.
    assert engine.count_tokens("hello") == 1
    assert 0 < engine.count_tokens("Milvus is a vector database.") < estimate_tokens("Milvus is a vector database.")

    thinking, answer, stats = _collect(engine.stream(QUESTION, max_tokens=12, reasoning_budget=None, **GEN))
    assert answer.strip() and not thinking
    assert 0 < stats.gen_tokens <= 12
    assert stats.stop_reason in ("eos", "length")
    assert stats.ttft_s > 0 and stats.prompt_s > 0

    # The server's own count of this prompt (its usage; this server sends none in a stream).
    measured = engine.client.json("POST", "/v1/chat/completions", {"messages": QUESTION, "max_tokens": 1})
    assert len(engine.format_prompt(QUESTION)) == measured["usage"]["prompt_tokens"]


def test_abandoning_the_stream_frees_the_real_server_at_once(llama_server):
    """A client gone mid-answer must not leave the server generating 1500 tokens for nobody
    (this server runs one generation at a time: the next request would wait behind it)."""
    engine = RemoteEngine.connect(llama_server)
    long = [{"role": "user", "content": "Write a very long story about a lighthouse keeper."}]
    stream = engine.stream(long, max_tokens=1500, reasoning_budget=None, temperature=0.8, top_p=0.95)
    first = next(stream)
    assert first.kind == "answer"
    stream.close()
    started = time.perf_counter()
    _, answer, _ = _collect(engine.stream(QUESTION, max_tokens=4, reasoning_budget=None, **GEN))
    assert answer
    assert time.perf_counter() - started < 8  # 1500 tokens of SmolLM2 on one thread take far longer


@pytest.fixture(scope="module")
def remote_home(tmp_path_factory, minilm_dir):  # noqa: F811
    """A data dir with the sample documents ingested by the real embedder, and short answers."""
    from localrag import LocalRAG, sample_dir

    home = tmp_path_factory.mktemp("remote") / "home"
    home.mkdir()
    install_minilm(home, minilm_dir)
    (home / "config.toml").write_text("[generation]\nmax_answer_tokens = 24\n", encoding="utf-8")
    with LocalRAG(settings_for(home)) as rag:
        rag.ingest([sample_dir()], kb="docs", embedder="all-minilm-l6-v2")
    return home


def test_localrag_answers_over_a_kb_with_generation_on_the_server(llama_server, remote_home):
    from localrag import Done, LocalRAG, Retrieved

    settings = settings_for(remote_home, llm_url=llama_server)
    with LocalRAG(settings) as rag:
        events = list(rag.ask("How does localrag pick a model?", kb="docs"))
        engine, info = rag.pool.engine(None)
    retrieved = next(e for e in events if isinstance(e, Retrieved))
    result = next(e for e in events if isinstance(e, Done)).result
    assert type(engine).__name__ == "RemoteEngine"
    assert info.quant == "remote" and not info.starter and info.n_gpu_layers == 0
    assert info.note == f"generation on {llama_server}"
    assert result.model is info and result.answer.strip()
    # The packing ran on the server's token counts: each source's size is what the server counts.
    assert retrieved.packing.sources and retrieved.prompt_tokens > 0
    from localrag.rag.prompt import render_source

    for src in retrieved.packing.sources:
        assert src.tokens == engine.count_tokens(render_source(src)) + 2
    assert retrieved.packing.tokens == sum(s.tokens for s in retrieved.packing.sources)
    assert 0 < result.timings.prompt_tokens <= info.n_ctx
    assert set(c.n for c in result.citations) <= {s.n for s in result.sources}
    assert 0 < result.timings.gen_tokens <= 24


def test_cli_ask_with_llm_url_json(llama_server, remote_home):
    out = run_cli(["ask", "How does localrag pick a model?", "--kb", "docs", "--json", "--llm-url", llama_server],
                  remote_home, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["quant"] == "remote" and data["model"].endswith(".gguf")
    assert data["note"] == f"generation on {llama_server}"
    assert data["answer"].strip() and data["sources"]
    assert 0 < data["gen_tokens"] <= 24


def test_serve_with_llm_url_answers_through_the_inference_server(llama_server, remote_home):
    """`localrag serve --llm-url`: the team server keeps the knowledge bases and retrieval, the
    inference server generates (how a team scales generation across GPUs)."""
    import openai
    from tests.server_helpers import Server, make_key

    key = make_key(remote_home, "remote-reader", "--kb", "docs:read")
    server = Server(remote_home, "--kb", "docs", "--llm-url", llama_server).start()
    try:
        assert f"generation on {llama_server}" in server.log()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        resp = client.chat.completions.create(
            model="kb:docs", messages=[{"role": "user", "content": "How does localrag pick a model?"}])
        message = resp.choices[0].message
        assert message.content.strip()
        assert resp.model_extra.get("sources") or (message.model_extra or {}).get("sources")
        assert resp.usage.completion_tokens > 0
    finally:
        server.stop()


def test_cli_ask_with_an_unreachable_url_says_so(remote_home):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    out = run_cli(["ask", "How does localrag pick a model?", "--kb", "docs", "--llm-url", url], remote_home)
    assert out.returncode == 2, out.stderr  # BadConfig: the configuration is wrong
    assert f"cannot reach the inference server at {url}: connection refused" in out.stderr
    assert "Traceback" not in out.stderr


# --- a scripted server ---------------------------------------------------------------------------


class Scripted:
    """A local HTTP server that answers like an OpenAI-compatible one from a script:
    ``models`` for /v1/models, ``chunks`` (delta dicts) replayed as SSE by /v1/chat/completions,
    or ``status``/``error`` to fail. It records each request body and whether the client hung up."""

    def __init__(self, *, models=("deepseek-r1-distill-qwen-1.5b",), chunks=(), status=200, error="",
                 delay=0.0, usage=None, key=None):
        self.models, self.chunks, self.status, self.error = list(models), list(chunks), status, error
        self.delay, self.usage, self.key = delay, usage, key
        self.bodies: list[dict] = []
        self.hung_up = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, payload):
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _authorised(self):
                if outer.key and self.headers.get("Authorization") != f"Bearer {outer.key}":
                    self._send(401, {"error": {"message": "Invalid API key", "type": "auth"}})
                    return False
                return True

            def do_GET(self):
                if not self._authorised():
                    return
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in outer.models]})
                else:
                    self._send(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self._authorised():
                    return
                if self.path != "/v1/chat/completions":
                    self._send(404, {"detail": "Not Found"})
                    return
                outer.bodies.append(body)
                if outer.status != 200:
                    self._send(outer.status, {"error": {"message": outer.error, "code": outer.status}})
                    return
                if not body.get("stream"):  # the one-token probe RemoteEngine.connect sends
                    self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                                  "finish_reason": "length"}],
                                     "usage": {"prompt_tokens": 12, "completion_tokens": 1}})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in outer.chunks]
                events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if outer.usage:
                    events.append({"choices": [], "usage": outer.usage})
                try:
                    for ev in events:
                        self.wfile.write(b": keep-alive\n\ndata: " + json.dumps(ev).encode() + b"\n\n")
                        self.wfile.flush()
                        time.sleep(outer.delay)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    outer.hung_up.set()
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    servers = []

    def make(**kw):
        servers.append(Scripted(**kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _pieces(text: str, size: int = 3) -> list[dict]:
    """``text`` as content deltas of a few characters: tags arrive split across chunks."""
    return [{"content": text[i : i + size]} for i in range(0, len(text), size)]


def test_r1_think_tags_in_the_content_are_split(scripted):
    srv = scripted(chunks=_pieces("<think>\nThe docs say 42.\n</think>\n\nThe answer is 42 [1]."),
                   usage={"prompt_tokens": 55, "completion_tokens": 21})
    engine = RemoteEngine.connect(srv.url)
    assert engine.reasoning and engine.model == "deepseek-r1-distill-qwen-1.5b"
    assert not engine.tokenizes  # this server has no tokenize endpoint: estimates
    # The template's share comes from the probe's usage (12 tokens for "Hi", 1 of them the text).
    assert len(engine.format_prompt(QUESTION)) == 11 + estimate_tokens(QUESTION[0]["content"])
    messages = [{"role": "system", "content": "Cite sources."}, {"role": "user", "content": "What is it?"}]
    thinking, answer, stats = _collect(engine.stream(messages, max_tokens=50, reasoning_budget=100, **GEN))
    assert thinking == "The docs say 42."
    assert answer == "The answer is 42 [1]."
    assert stats.thinking_closed_by == "model" and stats.reasoning_tokens > 0
    assert (stats.prompt_tokens, stats.gen_tokens) == (55, 21)  # the server's usage wins
    body = srv.bodies[-1]
    # An R1 distill gets no system prompt: it is folded into the user turn, as the local engine does.
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert body["messages"][0]["content"].startswith("Cite sources.")
    assert body["max_tokens"] == 150  # answer + reasoning budget: the server cannot close thinking
    assert (body["temperature"], body["top_p"], body["seed"], body["stream"]) == (0.0, 1.0, 7, True)


def test_r1_reply_without_the_opening_tag_starts_in_thinking(scripted):
    # Newer R1 chat templates end the prompt with "<think>\n": the reply has only the closing tag.
    srv = scripted(chunks=_pieces("Let me see.</think>Paris."))
    thinking, answer, _ = _collect(RemoteEngine.connect(srv.url).stream(QUESTION, max_tokens=20, reasoning_budget=None, **GEN))
    assert (thinking, answer) == ("Let me see.", "Paris.")


def test_reasoning_content_deltas_are_the_thinking(scripted):
    chunks = [{"role": "assistant", "content": ""}, {"reasoning_content": "\nUser wants "}, {"reasoning_content": "a city."},
              {"content": "\n\nParis"}, {"content": " is the capital."}]
    srv = scripted(models=["deepseek-reasoner"], chunks=chunks)
    thinking, answer, stats = _collect(RemoteEngine.connect(srv.url).stream(QUESTION, max_tokens=20, reasoning_budget=None, **GEN))
    assert thinking == "User wants a city."
    assert answer == "Paris is the capital."
    assert stats.reasoning_tokens == 2 and stats.thinking_closed_by == "model"


def test_a_reply_that_ends_while_thinking_is_the_answer(scripted):
    srv = scripted(chunks=_pieces("<think>It is Paris, obviously."))
    thinking, answer, stats = _collect(RemoteEngine.connect(srv.url).stream(QUESTION, max_tokens=20, reasoning_budget=None, **GEN))
    assert answer == "It is Paris, obviously." and stats.answer_from_thinking and stats.thinking_closed_by == "end"


def test_plain_model_text_is_all_answer_and_max_tokens_holds(scripted):
    srv = scripted(models=["smollm2"], chunks=[{"content": f"w{i} "} for i in range(30)])
    engine = RemoteEngine.connect(srv.url)
    assert not engine.reasoning
    _, answer, stats = _collect(engine.stream(QUESTION, max_tokens=5, reasoning_budget=None, **GEN))
    assert answer == "w0 w1 w2 w3 w4" and stats.stop_reason == "length"
    assert srv.bodies[-1]["max_tokens"] == 5


def test_abandoning_the_stream_hangs_up_at_once(scripted):
    srv = scripted(models=["plain"], chunks=[{"content": "tick "}] * 200, delay=0.05)
    stream = RemoteEngine.connect(srv.url).stream(QUESTION, max_tokens=500, reasoning_budget=None, **GEN)
    assert next(stream).kind == "answer"
    stream.close()
    assert srv.hung_up.wait(5)  # the server's next write failed: the socket is gone


def test_server_errors_are_clear(scripted):
    with pytest.raises(BadConfig, match="needs an API key .*Invalid API key"):
        RemoteEngine.connect(scripted(key="sekret").url)
    ok = scripted(key="sekret", models=["a"], chunks=[{"content": "hi"}])
    assert _collect(RemoteEngine.connect(ok.url + "/v1/", api_key="sekret").stream(
        QUESTION, max_tokens=5, reasoning_budget=None, **GEN))[1] == "hi"

    with pytest.raises(NotInstalled, match=r"has no model 'b' \(it serves: a\)"):
        RemoteEngine.connect(ok.url, model="b", api_key="sekret")

    broken = scripted(status=500, error="CUDA out of memory")
    with pytest.raises(LocalragError, match=r"failed \(HTTP 500\): CUDA out of memory"):
        list(RemoteEngine.connect(broken.url).stream(QUESTION, max_tokens=5, reasoning_budget=None, **GEN))

    for bad in ("ftp://example/", "localhost:8080", "http://host:port"):
        with pytest.raises(BadConfig, match="bad (port in )?inference server URL"):
            RemoteEngine.connect(bad)
    with pytest.raises(BadConfig, match="cannot reach .* connection refused"):
        RemoteEngine.connect(f"http://127.0.0.1:{free_port()}")


def test_settings_take_the_llm_fields_from_the_environment(home, monkeypatch):
    from localrag.settings import load_settings

    monkeypatch.setenv("LOCALRAG_LLM_URL", "http://gpu-box:8080")
    monkeypatch.setenv("LOCALRAG_LLM_API_KEY", "k")
    monkeypatch.setenv("LOCALRAG_LLM_CTX", "8192")
    s = load_settings(llm_model="m")
    assert (s.llm_url, s.llm_api_key, s.llm_ctx, s.llm_model) == ("http://gpu-box:8080", "k", 8192, "m")
    monkeypatch.setenv("LOCALRAG_LLM_CTX", "lots")
    with pytest.raises(ValueError, match="LOCALRAG_LLM_CTX"):
        load_settings()


def test_estimate_errs_high():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdef") == 2 and estimate_tokens("向量数据库") == 5
