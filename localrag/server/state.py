"""What one server process holds: the ``LocalRAG``, keys, the generation queue, jobs, metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from localrag.server.chat import Conversations
from localrag.server.jobs import Jobs
from localrag.server.keys import KeyStore
from localrag.server.links import Signer, load_secret
from localrag.server.metrics import Metrics
from localrag.server.queue import GenerationQueue

MIB = 2**20


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    kbs: list[str] = field(default_factory=list)  # opened at start (others on first use)
    slots: int = 1  # generations in flight; one model answers one at a time on a CPU
    max_waiting: int = 8  # beyond the slots, then 503
    max_upload_bytes: int = 200 * MIB
    sources_in_content: bool = False  # append a plain "Sources:" list to content by default
    link_ttl_s: int = 3600
    conversations: int = 32  # remembered conversations (LRU) for KV reuse
    threads: int | None = None  # llama.cpp threads, as decided at start
    threads_why: str = ""


class ServerState:
    def __init__(self, rag, config: ServeConfig):
        home = rag.settings.home
        self.rag = rag
        self.config = config
        self.keys = KeyStore(home)
        self.queue = GenerationQueue(config.slots, config.max_waiting)
        self.jobs = Jobs(rag, home)
        self.metrics = Metrics()
        self.signer = Signer(load_secret(home), config.link_ttl_s)
        self.conversations = Conversations(rag, config.conversations)
        # Generation has its own threads; searches, embeddings and KB reads use another pool, so
        # they answer while a long generation runs.
        self.generation_pool = ThreadPoolExecutor(config.slots, thread_name_prefix="localrag-gen")
        self.work_pool = ThreadPoolExecutor(8, thread_name_prefix="localrag-work")
        self.running: set = set()  # cancel events of the generations in flight
        self._closed = False

    def close(self) -> None:
        """Stop generations (each within a token) and wait for their threads, so the model is
        never freed under one; a running ingest job is left to be resumed at the next start."""
        if self._closed:
            return
        self._closed = True
        self.jobs.stop()
        for cancel in list(self.running):
            cancel.set()
        self.generation_pool.shutdown(wait=True, cancel_futures=True)
        self.work_pool.shutdown(wait=False, cancel_futures=True)
