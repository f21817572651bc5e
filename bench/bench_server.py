"""`localrag serve` under concurrent clients, and its overhead on one request against in-process ask.

A real server subprocess on loopback over the shipped sample (MiniLM) answering with the offline
starter (SmolLM2-135M; no R1 distill can be downloaded here, and the queue's behaviour does not
depend on the model), answers capped at 64 tokens. N = 1, 4, 16 clients stream chat completions
at once, each sending ``--requests`` questions one after another; the server runs with its
defaults (1 slot, 8 waiting), so beyond 9 clients some get a 503. Per request: queue wait (send
-> the server's first non-queued chunk), time to first token (send -> first reasoning/answer
delta), tokens from ``usage``. Then the same questions in-process through ``LocalRAG.ask`` (the
server stopped first: it holds the KB), for the server's overhead on one request.

    .venv/bin/python bench/bench_server.py [--quick] [--requests N] [--json]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO_ROOT, bench_args, load_check, percentile, report, stats  # noqa: E402

QUESTIONS = [
    "How does localrag pick a model for my machine?",
    "How do I import a model on an air-gapped machine?",
    "Which commands does the chat understand?",
    "How do I add documents to a knowledge base?",
    "How does localrag download a model?",
    "What does localrag do without a network connection?",
]
CONFIG = "[retrieval]\ntop_k = 3\n\n[generation]\nmax_answer_tokens = 64\n"


def _env(home: Path) -> dict:
    return {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(REPO_ROOT)}


def _setup(home: Path) -> str:
    home.mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG, encoding="utf-8")
    code = ("from localrag.api import LocalRAG, sample_dir\n"
            "with LocalRAG() as rag: rag.ingest([sample_dir()], kb='docs', embedder='all-minilm-l6-v2')")
    subprocess.run([sys.executable, "-c", code], env=_env(home), check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "localrag", "keys", "create", "bench", "--admin"], env=_env(home),
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(home: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "localrag", "serve", "--port", str(port)], env=_env(home),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def _one(url: str, key: str, question: str) -> dict:
    """One streamed chat completion: timings from the client's side."""
    import httpx

    body = {"model": "kb:docs", "stream": True, "messages": [{"role": "user", "content": question}]}
    t0 = time.perf_counter()
    out = {"status": None, "wait_s": None, "ttft_s": None, "total_s": None, "tokens": 0}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600,
                      headers={"Authorization": f"Bearer {key}"}) as resp:
        out["status"] = resp.status_code
        if resp.status_code != 200:
            resp.read()
            return out
        for line in resp.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter() - t0
            event = json.loads(line[6:])
            stage = (event.get("localrag") or {}).get("stage")
            if out["wait_s"] is None and stage != "queued":
                out["wait_s"] = now
            delta = (event.get("choices") or [{}])[0].get("delta") or {}
            if out["ttft_s"] is None and (delta.get("content") or delta.get("reasoning_content")):
                out["ttft_s"] = now
            if event.get("usage"):
                out["tokens"] = event["usage"]["completion_tokens"]
    out["total_s"] = time.perf_counter() - t0
    return out


def _round(url: str, key: str, clients: int, requests: int) -> dict:
    results: list[dict] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for r in range(requests):
            res = _one(url, key, QUESTIONS[(i + r) % len(QUESTIONS)])
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]

    def pct(key: str, q: float) -> float | None:
        values = [r[key] for r in ok if r[key] is not None]
        return round(percentile(values, q), 3) if values else None

    tokens = sum(r["tokens"] for r in ok)
    return {
        "clients": clients, "sent": len(results), "completed": len(ok),
        "rejected_503": sum(1 for r in results if r["status"] == 503),
        "ttft_p50_s": pct("ttft_s", 50), "ttft_p95_s": pct("ttft_s", 95),
        "wait_p50_s": pct("wait_s", 50), "wait_p95_s": pct("wait_s", 95),
        "total_p50_s": pct("total_s", 50), "tokens": tokens, "wall_s": round(wall, 2),
        "tok_per_s": round(tokens / wall, 1) if wall else 0.0,
    }


def _in_process(home: Path, runs: int) -> dict:
    """The same questions through LocalRAG.ask in this process: TTFT and total per question."""
    os.environ.update(LOCALRAG_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    from localrag import process
    from localrag.api import LocalRAG

    process.setup()
    ttft, total = [], []
    with LocalRAG() as rag:
        list(rag.ask(QUESTIONS[0], kb="docs"))  # load the model and the retriever, as the server's warm-up did
        for i in range(runs):
            t0 = time.perf_counter()
            first = None
            for event in rag.ask(QUESTIONS[i % len(QUESTIONS)], kb="docs"):
                if first is None and event.kind in ("thinking", "answer"):
                    first = time.perf_counter() - t0
            ttft.append(first or 0.0)
            total.append(time.perf_counter() - t0)
    return {"ttft": stats(ttft), "total": stats(total)}


def main() -> None:
    args = bench_args("localrag serve: concurrent clients, queue, overhead vs in-process",
                      runs=6, quick_runs=2, extra=lambda p: p.add_argument("--requests", type=int, default=None))
    per_client = args.requests or (1 if args.quick else 2)
    levels = (1, 4) if args.quick else (1, 4, 16)
    load = load_check("server")
    tmp = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        home = tmp / "home"
        key = _setup(home)
        proc, url = _start(home)
        try:
            _one(url, key, QUESTIONS[0])  # warm-up: model, embedder, retriever loaded
            single = [_one(url, key, QUESTIONS[i % len(QUESTIONS)]) for i in range(args.runs)]
            rows = [_round(url, key, n, per_client if n > 1 else max(per_client, 3)) for n in levels]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        local = _in_process(home, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    served_ttft = stats([r["ttft_s"] for r in single if r["ttft_s"] is not None])
    served_total = stats([r["total_s"] for r in single])
    overhead = {
        "served_ttft_s": served_ttft, "in_process_ttft_s": local["ttft"],
        "served_total_s": served_total, "in_process_total_s": local["total"],
        "ttft_overhead_ms": round((served_ttft.median - local["ttft"].median) * 1000, 1),
        "total_overhead_ms": round((served_total.median - local["total"].median) * 1000, 1),
    }
    report("bench_server", rows, args=args, load=load, extra={"overhead": overhead, "questions": QUESTIONS},
           columns=["clients", "sent", "completed", "rejected_503", "wait_p50_s", "wait_p95_s", "ttft_p50_s",
                    "ttft_p95_s", "total_p50_s", "tokens", "wall_s", "tok_per_s"],
           title="localrag serve, SmolLM2-135M starter, answers <= 64 tokens, 1 slot, 8 waiting")
    if not args.json:
        print(f"one request, median of {args.runs}: TTFT served {served_ttft.fmt(3)} s vs in-process "
              f"{local['ttft'].fmt(3)} s; total served {served_total.fmt(3)} s vs in-process {local['total'].fmt(3)} s "
              f"(overhead {overhead['ttft_overhead_ms']} ms TTFT, {overhead['total_overhead_ms']} ms total)")


if __name__ == "__main__":
    main()
