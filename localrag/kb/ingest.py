"""files -> parse -> chunk -> embed -> index, incremental and crash-safe.

Incremental: a file whose size and mtime match its manifest row is unchanged without being
read; otherwise its content hash decides. A file read by an older version of its type's reader
(``parse.reader_version``) is read again either way. Changed files have their chunks replaced;
a changed file that now yields no text (or cannot be read: emptied, too large, not what its name
says) and files gone from a pruned folder have them removed. Chunk ids are a function of (path, content hash,
ordinal), so re-ingesting can never duplicate a chunk.

Crash safety (kill -9 at any point) rests on one ordering rule: a file's manifest row is set to
``pending`` (naming both the old and the new version) before any of its chunks are touched, and
back to ``ok`` only after they are written. Every run first rolls back whatever is still pending
(deleting the chunks of both versions and the row), so the next run re-ingests those files from
scratch and converges to exactly what a clean run builds.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from localrag.errors import BadInput
from localrag.kb.index import ChunkRow, FileRecord, Index, chunk_id, file_id, pack_vectors
from localrag.kb.parse import reader_version

# Embedding is batched across files: small files alone would make tiny, slow batches.
_FLUSH_CHUNKS = 512


@dataclass
class FileOutcome:
    source: str
    status: str  # added | updated | unchanged | removed | skipped
    reason: str = ""
    chunks: int = 0


@dataclass
class IngestProgress:
    phase: str  # scan | ingest | prune | done
    files_done: int
    files_total: int
    chunks: int
    chunks_per_s: float
    current: str = ""


@dataclass
class IngestReport:
    kb: str
    embedder: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    note: str | None = None  # e.g. an embedder fallback the user should know about
    recovered: int = 0  # files rolled back from an interrupted earlier run
    unread_pages: int = 0  # scanned pages / images left unread: OCR (localrag[ocr]) is not installed

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def chunks_written(self) -> int:
        return sum(o.chunks for o in self.outcomes if o.status in ("added", "updated"))

    def summary(self) -> dict[str, int]:
        return {s: self.count(s) for s in ("added", "updated", "unchanged", "removed", "skipped")}


def content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recover(index: Index, manifest: dict[str, FileRecord]) -> int:
    """Roll back files an interrupted run left pending (removing them from ``manifest`` too)."""
    pending = [r for r in manifest.values() if r.status != "ok"]
    for record in pending:
        index.delete_file_versions(record)
        del manifest[record.path]
    index.drop_files([r.path for r in pending])
    return len(pending)


@dataclass
class _Work:
    entry: object  # files.FileEntry
    path: str
    size: int
    mtime_ns: int
    hash: str
    previous: FileRecord | None


@dataclass
class _Prepared:
    work: _Work
    filetype: str
    chunks: list  # chunk.Chunk


class _Run:
    def __init__(self, settings, index: Index, report: IngestReport, get_embedder, progress):
        self.settings = settings
        self.index = index
        self.report = report
        self.get_embedder = get_embedder
        self.progress = progress
        self.t = {"scan": 0.0, "parse": 0.0, "chunk": 0.0, "embed": 0.0, "index": 0.0}
        self.chunks_done = 0
        self.files_done = 0
        self.files_total = 0
        self.started = time.perf_counter()

    def tick(self, phase: str, current: str = "") -> None:
        if self.progress:
            elapsed = max(time.perf_counter() - self.started, 1e-6)
            self.progress(
                IngestProgress(phase, self.files_done, self.files_total, self.chunks_done, self.chunks_done / elapsed, current)
            )

    def prepare(self, work: _Work) -> _Prepared | None:
        from localrag.kb import chunk as chunk_mod
        from localrag.kb import parse as parse_mod

        source = work.entry.rel
        t0 = time.perf_counter()
        try:
            doc = parse_mod.parse_file(work.entry.path)
        except parse_mod.ParseError as exc:
            self.report.unread_pages += getattr(exc, "pages", 0)
            self.skip(work, str(exc) or "could not be parsed")
            return None
        except Exception as exc:  # a parser bug on one hostile file must not stop the run
            self.skip(work, f"parser failed: {type(exc).__name__}: {exc}"[:200])
            return None
        finally:
            self.t["parse"] += time.perf_counter() - t0
        self.report.unread_pages += doc.unread_pages
        t0 = time.perf_counter()
        embedder = self.get_embedder()
        try:
            chunks = chunk_mod.chunk_all(
                doc, source, embedder.count_tokens, self._max_tokens(embedder), self.settings.chunk.overlap_tokens
            )
        except Exception as exc:
            self.skip(work, f"chunking failed: {type(exc).__name__}: {exc}"[:200])
            return None
        finally:
            self.t["chunk"] += time.perf_counter() - t0
        chunks = [c for c in chunks if c.text.strip()]
        if not chunks:
            self.skip(work, "no text found")
            return None
        return _Prepared(work, doc.filetype, chunks)

    def _max_tokens(self, embedder) -> int:
        return max(32, min(self.settings.chunk.max_tokens, embedder.chunk_budget))

    def skip(self, work: _Work, reason: str) -> None:
        """A file that yields nothing now. If the KB holds an earlier version of it, that version
        goes: answers citing it would send a reader to a file that no longer says so. A file
        read again only because its reader changed keeps the earlier reading of the same bytes."""
        source, prev = work.entry.rel, work.previous
        if prev is not None and prev.hash != work.hash:
            reason += self.drop_earlier(prev)
        elif prev is not None:
            reason += "; its earlier reading is kept"
        self.report.outcomes.append(FileOutcome(source, "skipped", reason))
        self.files_done += 1
        self.tick("ingest", source)

    def drop_earlier(self, prev: FileRecord) -> str:
        """Take a file's earlier version out of the KB (crash-safe: ``Index.remove_files``);
        what to add to the reason it was skipped."""
        t0 = time.perf_counter()
        self.index.remove_files([prev])
        self.t["index"] += time.perf_counter() - t0
        return f"; its earlier version ({prev.chunks} chunk{'s' if prev.chunks != 1 else ''}) was taken out of the KB"

    def flush(self, batch: list[_Prepared]) -> None:
        if not batch:
            return
        vectors, per_chunk = self._embed(batch)
        t0 = time.perf_counter()
        self._write(batch, vectors, per_chunk)
        self.t["index"] += time.perf_counter() - t0
        for p in batch:
            status = "updated" if p.work.previous else "added"
            self.report.outcomes.append(FileOutcome(p.work.entry.rel, status, chunks=len(p.chunks)))
            self.files_done += 1
        self.tick("ingest", batch[-1].work.entry.rel)

    def _embed(self, batch: list[_Prepared]):
        """Vectors for every chunk of the batch, then for their sentences; and, per chunk, the
        rows of its sentences' vectors (empty when sentence vectors are off)."""
        embedder = self.get_embedder()
        texts = [embedder.passage_text(_embed_text(c)) for p in batch for c in p.chunks]
        n_chunks = len(texts)
        # Each chunk's sentences get vectors of their own for retrieval's sentence-level
        # re-score; made here, in the same encode call, they cost a query nothing.
        per_chunk: list[list[int]] = []
        if self.index.has_sentences and self.settings.chunk.sentence_vectors and self.settings.retrieval.sentence_pool > 0:
            from localrag.kb.chunk import split_sentences

            where: dict[str, int] = {}
            for p in batch:
                for c in p.chunks:
                    slots = []
                    for sentence in split_sentences(c.text):
                        if sentence not in where:
                            where[sentence] = len(texts)
                            texts.append(embedder.passage_text(sentence))
                        slots.append(where[sentence])
                    per_chunk.append(slots)
        t0 = time.perf_counter()
        base = self.chunks_done

        def on_embedded(n: int) -> None:
            # progress in chunks: sentences are short, so count texts in proportion
            self.chunks_done = base + min(n_chunks, n * n_chunks // len(texts))
            self.tick("ingest", batch[-1].work.entry.rel)

        vectors = embedder.embed_passages(texts, progress=on_embedded)
        self.chunks_done = base + n_chunks
        self.t["embed"] += time.perf_counter() - t0
        return vectors, per_chunk

    def _write(self, batch: list[_Prepared], vectors, per_chunk: list[list[int]]) -> None:
        """The crash-safety rule: each file is marked pending (with the version it replaces)
        before any of its chunks change, and ok only after all of them are written."""
        records = [_pending_record(p) for p in batch]
        self.index.put_files(records)
        old_ids = [chunk_id(r.path, r.old_hash, i) for r in records if r.old_hash for i in range(r.old_chunks)]
        self.index.delete_chunks(old_ids)
        rows, i = [], 0
        for p in batch:
            for c in p.chunks:
                rows.append(_chunk_row(p, c, vectors[i], pack_vectors(vectors[per_chunk[i]]) if per_chunk else ""))
                i += 1
        self.index.put_chunks(rows)
        for r in records:
            r.status, r.old_hash, r.old_chunks = "ok", "", 0
        self.index.put_files(records)


def _pending_record(p: _Prepared) -> FileRecord:
    w, prev = p.work, p.work.previous
    return FileRecord(
        path=w.path, source=w.entry.rel, root=str(w.entry.root), hash=w.hash, chunks=len(p.chunks), size=w.size,
        mtime_ns=w.mtime_ns, filetype=p.filetype, status="pending",
        old_hash=prev.hash if prev else "", old_chunks=prev.chunks if prev else 0,
        reader=reader_version(p.filetype),
    )


def _chunk_row(p: _Prepared, c, vector, sentences: str) -> ChunkRow:
    w = p.work
    return ChunkRow(
        id=chunk_id(w.path, w.hash, c.ordinal), file_id=file_id(w.path), path=w.path,
        source=c.source,  # an attachment's chunks: "mail.eml › file.pdf"
        filetype=c.filetype or p.filetype, page=c.page if c.page is not None else -1, heading=c.heading or "", ordinal=c.ordinal,
        char_start=c.char_start, char_end=c.char_end, file_hash=w.hash, text=c.text, vector=vector,
        search_text=_embed_text(c), sentences=sentences,
    )


def ingest(
    settings,
    paths: list[Path],
    *,
    kb: str = "default",
    prune: bool = False,
    embedder=None,
    embedder_id: str | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
    index: Index | None = None,
    load_embedder: Callable[[str, str], object] | None = None,
    device: str | None = None,
    catalogue=None,
    hardware=None,
) -> IngestReport:
    """Bring KB ``kb`` up to date with ``paths``.

    ``embedder``: an already loaded ``embed.Embedder`` (tests, benchmarks, long-lived callers);
    otherwise one is chosen (``embedder_id`` / settings / hardware plan, see ``embed.choose``)
    and loaded only if some file actually needs embedding. ``index``: an already open
    ``Index.open(settings, kb, create=True)`` to write through (kept open afterwards).
    ``load_embedder(id, device)``: how to get an embedder when one is needed (a model pool's).
    ``device`` / ``catalogue`` / ``hardware``: what a long-lived caller already knows (else
    planned, read and detected here).
    """
    started = time.perf_counter()
    roots = [Path(p).expanduser() for p in paths]
    missing = [p for p in roots if not p.exists() and not p.is_symlink()]
    if missing and len(missing) == len(roots) and not prune:
        raise BadInput(f"no such file or directory: {', '.join(map(str, missing))}")

    owns_index = index is None
    if index is None:
        index = Index.open(settings, kb, create=True)
    try:
        load = load_embedder or partial(_load_embedder, settings)
        embedder, note = _settle_embedder(settings, index, embedder, embedder_id, load, catalogue, hardware)
        record = index.record
        report = IngestReport(kb=kb, embedder=record.embedder, note=note)
        loaded = {"e": embedder}

        def get_embedder():  # loaded only once some file needs embedding
            if loaded["e"] is None:
                loaded["e"] = load(record.embedder, device or _device(settings, catalogue, hardware))
            return loaded["e"]

        run = _Run(settings, index, report, get_embedder, progress)
        manifest = index.files()
        report.recovered = recover(index, manifest)
        todo, seen = _scan(run, manifest, roots, [p for p in roots if p not in missing])
        _process(run, todo)
        if prune:
            t0 = time.perf_counter()
            gone = _pruned(manifest, roots, seen)
            index.remove_files(gone)
            report.outcomes.extend(FileOutcome(r.source, "removed", chunks=r.chunks) for r in gone)
            run.t["index"] += time.perf_counter() - t0
        report.timings = {k: round(v, 3) for k, v in run.t.items()}
        report.elapsed = time.perf_counter() - started
        run.tick("done")
        return report
    finally:
        if owns_index:
            index.close()


def _load_embedder(settings, embedder_id: str, device: str):
    from localrag.runtime import embedder as embed_mod

    return embed_mod.load_for(settings, embedder_id, device)


def _settle_embedder(settings, index: Index, embedder, embedder_id: str | None, load, catalogue=None, hardware=None):
    """A new KB gets its embedder now (chosen, loaded, recorded); an existing one keeps its own,
    and asking for another is refused. Returns (embedder or None, a note for the user)."""
    if index.record is None:
        note = None
        if embedder is None:
            from localrag.runtime import embedder as embed_mod

            choice = embed_mod.choose(settings, embedder_id, hardware=hardware, catalogue=catalogue)
            note = choice.note
            embedder = load(choice.id, choice.device)
        chunking = {"max_tokens": settings.chunk.max_tokens, "overlap": settings.chunk.overlap_tokens}
        index.initialise(embedder.id, embedder.dim, chunking)
        return embedder, note
    wanted = embedder.id if embedder is not None else embedder_id
    if wanted:
        from localrag.runtime.embedder import canonical_id

        wanted = canonical_id(settings, wanted, catalogue)
    index.require_embedder(wanted)
    return embedder, None


def _scan(run: _Run, manifest: dict[str, FileRecord], roots: list[Path], present: list[Path]):
    """What changed, without reading files whose size and mtime still match: (work, seen paths)."""
    from localrag.kb import files as files_mod

    report, index = run.report, run.index
    t0 = time.perf_counter()
    todo: list[_Work] = []
    seen: set[str] = set()
    for item in files_mod.discover(present):
        if isinstance(item, files_mod.Skipped):
            path = _resolved(item.path)
            prev = manifest.get(path) if item.content else None  # emptied, grown too large, ...
            reason = item.reason + (run.drop_earlier(prev) if prev is not None else "")
            report.outcomes.append(FileOutcome(_display(item.path, roots), "skipped", reason))
            seen.add(path)
            continue
        path = str(Path(item.path).resolve())
        if path in seen:
            continue  # the same file reached twice (two PATHs, a symlink)
        seen.add(path)
        try:
            st = os.stat(path)
            prev = manifest.get(path)
            # False when an older reader of its type read it: then it is read again, changed or not
            current = prev is not None and prev.reader >= reader_version(prev.filetype)
            if current and prev.size == st.st_size and prev.mtime_ns == st.st_mtime_ns:
                report.outcomes.append(FileOutcome(prev.source, "unchanged", chunks=prev.chunks))
                continue
            digest = content_hash(Path(path))
        except OSError as exc:
            report.outcomes.append(FileOutcome(item.rel, "skipped", f"cannot read: {exc.strerror}"))
            continue
        if current and prev.hash == digest:
            prev.size, prev.mtime_ns = st.st_size, st.st_mtime_ns
            index.put_files([prev])  # touched but identical: remember the new mtime
            report.outcomes.append(FileOutcome(prev.source, "unchanged", chunks=prev.chunks))
            continue
        todo.append(_Work(item, path, st.st_size, st.st_mtime_ns, digest, prev))
    run.t["scan"] += time.perf_counter() - t0
    run.files_total = len(todo)
    run.tick("ingest")
    return todo, seen


def _process(run: _Run, todo: list[_Work]) -> None:
    """Parse and chunk each file, embedding and writing in batches of about _FLUSH_CHUNKS."""
    batch: list[_Prepared] = []
    pending_chunks = 0
    for work in todo:
        prepared = run.prepare(work)
        if prepared is None:
            continue
        batch.append(prepared)
        pending_chunks += len(prepared.chunks)
        if pending_chunks >= _FLUSH_CHUNKS:
            run.flush(batch)
            batch, pending_chunks = [], 0
    run.flush(batch)


def _display(path: str, roots: list[Path]) -> str:
    """A skipped file as the summary shows it: relative to the PATH it was found under."""
    p = Path(path)
    for root in roots:
        try:
            rel = p.relative_to(root)
        except ValueError:
            continue
        return rel.as_posix() if str(rel) != "." else p.name
    return str(path)


def _embed_text(chunk) -> str:
    return getattr(chunk, "embed_text", None) or chunk.text


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return str(path)


def _pruned(manifest: dict[str, FileRecord], roots: list[Path], seen: set[str]) -> list[FileRecord]:
    """Manifest entries under a pruned PATH that this scan did not find."""
    gone = []
    bases = []
    for root in roots:
        try:
            bases.append(root.resolve())
        except (OSError, RuntimeError):
            continue
    for path, record in manifest.items():
        if path in seen:
            continue
        p = Path(path)
        if any(p == b or b in p.parents for b in bases) and not p.exists():
            gone.append(record)
    return gone


def _device(settings, catalogue=None, hardware=None) -> str:
    """The device the hardware plan gives the embedder (the caller's catalogue and hardware when
    it has them, else read and detected here)."""
    try:
        from localrag.models import fit
        from localrag.models import hardware as hw
        from localrag.models.catalogue import load_catalogue

        plan = fit.plan(catalogue or load_catalogue(settings.catalogue_path), hardware or hw.detect(settings.models_dir))
        return plan.embedder_device or "cpu"
    except Exception:  # probing must never block ingest; CPU always works
        return "cpu"
