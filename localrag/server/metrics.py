"""Counters for ``/metrics`` in Prometheus' text format (no client library: a handful of numbers)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.errors: dict[int, int] = defaultdict(int)
        self.generations = 0
        self.cancelled = 0
        self.rejected = 0  # 503: queue full
        self.gen_tokens = 0
        self.gen_seconds = 0.0
        self.prompt_tokens = 0
        self.last_tok_s = 0.0
        self.queue_wait_seconds = 0.0

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            if status >= 400:
                self.errors[status] += 1

    def generation(self, *, tokens: int, seconds: float, prompt_tokens: int, waited: float, cancelled: bool) -> None:
        with self._lock:
            self.generations += 1
            self.cancelled += int(cancelled)
            self.gen_tokens += tokens
            self.gen_seconds += seconds
            self.prompt_tokens += prompt_tokens
            self.queue_wait_seconds += waited
            if seconds > 0 and tokens > 1:
                self.last_tok_s = tokens / seconds

    def render(self, *, queue_waiting: int, queue_active: int, slots: int, threads: int | None, jobs_running: int,
               conversations_reused: int = 0) -> str:
        lines = []

        def metric(name, kind, help_, samples):
            lines.append(f"# HELP localrag_{name} {help_}")
            lines.append(f"# TYPE localrag_{name} {kind}")
            for labels, value in samples:
                lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
                lines.append(f"localrag_{name}{{{lab}}} {value}" if lab else f"localrag_{name} {value}")

        with self._lock:
            metric("requests_total", "counter", "HTTP requests by route and status.",
                   [({"method": m, "route": r, "status": str(s)}, n) for (m, r, s), n in sorted(self.requests.items())])
            metric("errors_total", "counter", "HTTP responses with status >= 400.",
                   [({"status": str(s)}, n) for s, n in sorted(self.errors.items())])
            metric("queue_waiting", "gauge", "Chat requests waiting for a generation slot.", [({}, queue_waiting)])
            metric("queue_active", "gauge", "Generations running now.", [({}, queue_active)])
            metric("queue_slots", "gauge", "Generation slots.", [({}, slots)])
            metric("queue_rejected_total", "counter", "Chat requests refused with 503 (queue full).", [({}, self.rejected)])
            metric("queue_wait_seconds_total", "counter", "Time chat requests waited for a slot.",
                   [({}, round(self.queue_wait_seconds, 3))])
            metric("generations_total", "counter", "Generations finished (cancelled included).", [({}, self.generations)])
            metric("generations_cancelled_total", "counter", "Generations stopped because the client left.",
                   [({}, self.cancelled)])
            metric("generated_tokens_total", "counter", "Tokens generated (reasoning included).", [({}, self.gen_tokens)])
            metric("prompt_tokens_total", "counter", "Prompt tokens of generations.", [({}, self.prompt_tokens)])
            metric("generation_seconds_total", "counter", "Time spent generating tokens.", [({}, round(self.gen_seconds, 3))])
            overall = self.gen_tokens / self.gen_seconds if self.gen_seconds > 0 else 0.0
            metric("tokens_per_second", "gauge", "Generated tokens per second: overall and the last generation.",
                   [({"window": "overall"}, round(overall, 2)), ({"window": "last"}, round(self.last_tok_s, 2))])
            metric("conversations_reused_total", "counter",
                   "Follow-ups that found their conversation's Session (KV cache reuse possible).", [({}, conversations_reused)])
            metric("llama_threads", "gauge", "llama.cpp threads chosen at server start.", [({}, threads or 0)])
            metric("ingest_jobs_running", "gauge", "Ingest jobs queued or running.", [({}, jobs_running)])
            metric("uptime_seconds", "gauge", "Seconds since the server started.", [({}, round(time.time() - self.started, 1))])
        return "\n".join(lines) + "\n"


def _esc(value) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
