"""Hybrid retrieval: dense cosine + BM25, fused by weighted reciprocal rank, optional rerank.

The fused list gets a third ranking from the best query-sentence cosine inside each of the top
candidates, and each hit comes back as a window: its chunk plus same-section neighbours
(``RetrievalSettings.window_tokens``), so a hit next to the answer still carries it and the
overlapping pieces of one passage do not fill several slots.

When a cross-encoder reranker is installed (``localrag models pull ms-marco-minilm-l6-v2``), it
re-scores the best ``RetrievalSettings.rerank_pool`` fused candidates and their order becomes its
order; the rest keep the fused order.

Fusion is done here rather than by Milvus' ranker so each hit keeps both raw scores: the answer
stage uses the dense cosine and the BM25 score to decide that a question is not covered by the
documents at all.
"""

from __future__ import annotations

import logging

import fnmatch
import re
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath

from localrag.kb.chunk import split_sentences
from localrag.lang import is_cjk
from localrag.errors import BadInput
from localrag.kb.index import Index

_FILETYPE_RE = re.compile(r"^[A-Za-z0-9_+.-]{1,32}$")


@dataclass
class Hit:
    rank: int
    score: float  # fused (RRF) score, or the reranker's when one ran
    text: str
    source: str  # relative to the folder it was ingested from
    page: int | None
    heading: str
    chunk_id: str
    filetype: str
    char_start: int
    char_end: int
    dense_score: float | None  # cosine similarity to the query
    sparse_score: float | None  # BM25 score; None when BM25 did not retrieve it
    rerank_score: float | None = None
    path: str = ""  # absolute path of the file (extra to the contract)
    chunk_ids: list[str] = field(default_factory=list)  # the chunks ``text`` spans, in order (extra)

    def to_dict(self) -> dict:
        return {
            "rank": self.rank,
            "score": self.score,
            "text": self.text,
            "source": self.source,
            "path": self.path,
            "page": self.page,
            "heading": self.heading,
            "chunk_id": self.chunk_id,
            "filetype": self.filetype,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "dense_score": self.dense_score,
            "sparse_score": self.sparse_score,
            "rerank_score": self.rerank_score,
            "chunk_ids": list(self.chunk_ids),
        }


@dataclass
class Timings:
    embed: float = 0.0
    search: float = 0.0
    fuse: float = 0.0
    rerank: float = 0.0

    @property
    def total(self) -> float:
        return self.embed + self.search + self.fuse + self.rerank


def rrf(ranked_lists: list[list[str]], weights: list[float], k: int) -> dict[str, float]:
    """Weighted reciprocal-rank fusion: sum of w / (k + rank), rank from 1."""
    scores: dict[str, float] = {}
    for ids, w in zip(ranked_lists, weights):
        if w <= 0:
            continue
        for rank, cid in enumerate(ids, start=1):
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
    return scores


def merge_window(chunks: list[dict]) -> str:
    """The text of consecutive chunks (sorted by ``char_start``) as one span of the document.
    Overlapping chunks share text, which appears once; between chunks that do not touch the
    document had only whitespace (chunks are trimmed), which becomes one blank line or a space."""
    out: list[str] = []
    end = None
    for c in chunks:
        text, start = c["text"], int(c.get("char_start", 0))
        if end is None:
            out.append(text)
        elif start < end:
            out.append(text[end - start :])
        else:
            out.append(("\n\n" if start - end >= 2 else " ") + text)
        end = max(end or 0, int(c.get("char_end", start + len(text))))
    return "".join(out)


def canonical_filetypes(types: list[str]) -> list[str]:
    """``--type md`` means the stored ``markdown``: extensions and their names both work."""
    from localrag.kb.files import FILETYPES

    out = []
    for t in types:
        t = t.strip().lower().lstrip(".")
        out.append(FILETYPES.get("." + t, t))
    return list(dict.fromkeys(out))


class Reranker:
    """An installed cross-encoder: ``predict`` scores (query, passage) pairs, higher = more relevant."""

    def __init__(self, reranker_id: str, model):
        self.id = reranker_id
        self._model = model

    @classmethod
    def load(cls, reranker_id: str, path, *, device: str = "cpu", max_tokens: int | None = None) -> "Reranker":
        import torch
        from sentence_transformers import CrossEncoder

        # Raw logits, not sigmoid probabilities: RERANK_GATE in answer.py is a logit, and
        # sentence-transformers picks the activation per model config (ms-marco: none, bge: sigmoid).
        model = CrossEncoder(
            str(path), device=device, local_files_only=True, max_length=max_tokens, activation_fn=torch.nn.Identity()
        )
        return cls(reranker_id, model)

    def predict(self, pairs: list[tuple[str, str]]):
        return self._model.predict(pairs, batch_size=16, show_progress_bar=False, convert_to_numpy=True)


def _warn(message: str) -> None:
    # Through logging, so each front door shows it its own way (the CLI: one yellow line).
    logging.getLogger("localrag").warning(message)


def find_reranker(settings, device: str = "cpu", catalogue=None) -> Reranker | None:
    """The installed cross-encoder retrieval should use, loaded; None when reranking is off or none
    is installed. A reranker that fails to load costs a one-line warning, not the search."""
    r = settings.retrieval
    if not r.rerank or r.rerank_pool <= 0:
        return None
    from localrag.models.catalogue import load_catalogue
    from localrag.models.resolve import chosen_reranker

    catalogue = catalogue or load_catalogue(settings.catalogue_path)
    item = chosen_reranker(settings, catalogue)  # an unknown configured id is a LocalragError
    if item is None:
        if r.reranker:
            _warn(f"reranker {r.reranker} is not installed; searching without it until it is downloaded or imported")
        return None
    try:
        return Reranker.load(item.spec.id, item.path, device=device, max_tokens=item.spec.max_tokens)
    except Exception as exc:  # noqa: BLE001 - a broken download shows up as any of several library errors
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        _warn(
            f"cannot load reranker {item.spec.id} from {item.path} ({why}); searching without it "
            "(fix: remove it from the model store, then download or import it again)"
        )
        return None


@dataclass
class _Candidates:
    """One search's candidates: their rows and every score they got."""

    entities: dict[str, dict] = field(default_factory=dict)
    dense_scores: dict[str, float] = field(default_factory=dict)
    sparse_scores: dict[str, float] = field(default_factory=dict)
    rerank_scores: dict[str, float] = field(default_factory=dict)
    dense_order: list[str] = field(default_factory=list)
    sparse_order: list[str] = field(default_factory=list)

    @classmethod
    def collect(cls, dense, sparse) -> "_Candidates":
        c = cls()
        for cid, score, ent in dense:
            c.entities[cid] = ent
            c.dense_scores[cid] = score
            c.dense_order.append(cid)
        for cid, score, ent in sparse:
            c.sparse_scores[cid] = score
            c.entities.setdefault(cid, ent)
            c.sparse_order.append(cid)
        return c


class Retriever:
    """Search one KB. Holds the open index and the loaded embedder; call ``close()`` when done."""

    def __init__(self, settings, kb: str, *, embedder=None, reranker=None, index: Index | None = None,
                 load_embedder=None, device: str | None = None, catalogue=None):
        """``index``: an already open ``Index`` of ``kb`` to share (a long-lived process that also
        ingests into it: one process may hold a Milvus Lite KB only once); it stays open on
        ``close()``. ``load_embedder(id, device)``: how to get the KB's embedder (a model pool's);
        ``device`` and ``catalogue``: what a long-lived caller already knows."""
        self.settings = settings
        self.kb = kb
        self._owns_index = index is None
        self.index = index if index is not None else Index.open(settings, kb)
        try:
            record = self.index.record
            from localrag.runtime import embedder as embed_mod

            if settings.embedder:
                self.index.require_embedder(embed_mod.canonical_id(settings, settings.embedder, catalogue))
            if embedder is not None:
                self.index.require_embedder(embedder.id)
            if embedder is None:
                if device is None:
                    from localrag.kb.ingest import _device

                    device = _device(settings, catalogue)
                embedder = (load_embedder or partial(embed_mod.load_for, settings))(record.embedder, device)
            self.embedder = embedder
            self.reranker = reranker if reranker is not None else find_reranker(settings, device or "cpu", catalogue)
        except BaseException:
            if self._owns_index:
                self.index.close()
            raise
        self.last_timings = Timings()
        self._executor = None
        self._files_cache: dict | None = None
        self._cjk_share: float | None = None
        self._sentence_cache: dict[str, object] = {}

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localrag-bm25")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._owns_index:
            self.index.close()

    def refresh(self) -> None:
        """Forget what was cached about the KB's files (call after an ingest into it)."""
        self._files_cache = None
        self._cjk_share = None
        self._sentence_cache.clear()

    def cjk_share(self) -> float:
        """The share of the KB's files written mostly in CJK (``Index.cjk_share``), asked once per
        open KB: every conversation's first question would otherwise query it again."""
        if self._cjk_share is None:
            self._cjk_share = self.index.cjk_share()
        return self._cjk_share

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _filter_expr(self, glob: str | None, filetypes: list[str] | None) -> str | None:
        """A Milvus expression for the filters; None when nothing can match."""
        parts = []
        if filetypes:
            types = canonical_filetypes(filetypes)
            types += [f"{t}+ocr" for t in types if "+" not in t]  # OCR'd pages are still that type
            bad = [t for t in types if not _FILETYPE_RE.match(t)]
            if bad:
                raise BadInput(f"invalid file type: {bad[0]!r}")
            parts.append("filetype in [" + ", ".join(f'"{t}"' for t in types) + "]")
        if glob:
            if self._files_cache is None:
                self._files_cache = self.index.files()
            ids = [
                _file_id(path)
                for path, rec in self._files_cache.items()
                if glob_match(rec.source, glob) or glob_match(path, glob)
            ]
            if not ids:
                return None
            parts.append("file_id in [" + ", ".join(map(str, ids)) + "]")
        return " and ".join(parts)

    def search(self, query: str, k: int = 5, glob: str | None = None, filetypes: list[str] | None = None) -> list[Hit]:
        """The best ``k`` windows for ``query``: dense + BM25 candidates fused by weighted RRF,
        re-ranked by their best sentence (and a cross-encoder when one is installed)."""
        query = (query or "").strip()
        if not query:
            raise BadInput("the query is empty")
        t = Timings()
        expr = self._filter_expr(glob, filetypes)
        if expr is None:
            self.last_timings = t
            return []
        qvec, dense, sparse = self._candidates(query, k, expr, t)
        t0 = time.perf_counter()
        c = _Candidates.collect(dense, sparse)
        fused, order = self._fuse(query, qvec, c)
        t.fuse = time.perf_counter() - t0
        order = self._rerank(query, order, k, c, t)
        self.last_timings = t
        t0 = time.perf_counter()
        windows = self._windows_with_cosines(order, k, qvec, c)
        t.search += time.perf_counter() - t0
        return [self._hit(rank, members, c, fused) for rank, members in enumerate(windows, start=1)]

    def _candidates(self, query: str, k: int, expr: str, t: Timings):
        """(query vector, dense hits, BM25 hits), each hit (id, score, entity)."""
        r = self.settings.retrieval
        n = max(r.candidates, k)
        # With windows, a hit's own row comes back with its neighbours, and stored sentence
        # vectors make the candidates' text unnecessary for the re-score: the searches fetch
        # only where each candidate lies (plus the text a Chinese question's language list needs).
        slim = self.index.has_sentences and r.window_tokens > 0 and self.reranker is None
        fields = (Index.LOCATE_FIELDS + (["text"] if is_cjk(query) else [])) if slim else None
        # BM25 needs no vector: it runs while the query is embedded (torch releases the GIL,
        # Milvus Lite's in-process server takes it), so the embedding costs little wall time.
        t0 = time.perf_counter()
        sparse_job = (
            self._pool().submit(self.index.search_sparse, query, n, expr, fields=fields) if r.sparse_weight > 0 else None
        )
        try:
            qvec = self.embedder.embed_query(query)
            t.embed = time.perf_counter() - t0
            t1 = time.perf_counter()
            dense = self.index.search_dense(qvec, n, expr, fields=fields) if r.dense_weight > 0 else []
        finally:
            sparse = sparse_job.result() if sparse_job is not None else []
        t.search = time.perf_counter() - t1
        return qvec, dense, sparse

    def _fuse(self, query: str, qvec, c: "_Candidates") -> tuple[dict[str, float], list[str]]:
        """Weighted RRF over the dense, BM25 (and same-language, and best-sentence) lists."""
        r = self.settings.retrieval
        lists, weights = [c.dense_order, c.sparse_order], [r.dense_weight, r.sparse_weight]
        if is_cjk(query):
            # A Chinese question is best answered by Chinese text, but English terms in it
            # ("Milvus", "HNSW") pull English chunks up in BM25; the same-language BM25 hits
            # count once more. (English questions need no such help: the corpus' Chinese
            # pages rarely match English queries anyway.)
            lists.append([cid for cid in c.sparse_order if is_cjk(c.entities[cid]["text"])])
            weights.append(r.sparse_weight)
        fused = rrf(lists, weights, r.rrf_k)
        order = sorted(fused, key=lambda cid: (-fused[cid], cid))
        if r.sentence_pool > 0 and r.sentence_weight > 0 and len(order) > 1:
            pool = order[: r.sentence_pool]
            best = self._sentence_scores(qvec, [(cid, c.entities[cid].get("text", "")) for cid in pool])
            if best:
                lists.append(sorted(best, key=lambda cid: (-best[cid], cid)))
                weights.append(r.sentence_weight)
                fused = rrf(lists, weights, r.rrf_k)
                order = sorted(fused, key=lambda cid: (-fused[cid], cid))
        return fused, order

    def _rerank(self, query: str, order: list[str], k: int, c: "_Candidates", t: Timings) -> list[str]:
        r = self.settings.retrieval
        if self.reranker is None or not order or not r.rerank or r.rerank_pool <= 0:
            return order
        t0 = time.perf_counter()
        # at least k, so every hit returned was judged by the same scorer
        pool = order[: max(r.rerank_pool, k)]
        scores = self.reranker.predict([(query, c.entities[cid]["text"]) for cid in pool])
        c.rerank_scores = {cid: float(s) for cid, s in zip(pool, scores)}
        t.rerank = time.perf_counter() - t0
        return sorted(pool, key=lambda cid: -c.rerank_scores[cid]) + order[len(pool) :]  # stable: ties keep RRF order

    def _windows_with_cosines(self, order: list[str], k: int, qvec, c: "_Candidates") -> list[list[dict]]:
        """The hits' windows. The cosine of the BM25-only hits that make the cut is filled in, so
        every hit carries both signals (fetching vectors for all BM25 candidates would cost more
        than the search); their vectors come with the window lookup."""
        vectors: dict[str, object] = {}
        if self.settings.retrieval.window_tokens > 0:
            windows = self._windows(order, k, c.entities, vectors, need_vectors=c.dense_scores)
        else:
            windows = [[c.entities[cid] | {"id": cid}] for cid in order[:k]]
        missing = [w[0]["id"] for w in windows if w[0]["id"] not in c.dense_scores and w[0]["id"] not in vectors]
        if missing:
            vectors.update(self.index.vectors(missing))
        for w in windows:
            cid = w[0]["id"]
            if cid not in c.dense_scores and cid in vectors:
                c.dense_scores[cid] = float(sum(a * b for a, b in zip(qvec, vectors[cid])))
        return windows

    @staticmethod
    def _hit(rank: int, members: list[dict], c: "_Candidates", fused: dict[str, float]) -> Hit:
        e = members[0]  # the chunk that matched; the others are its context
        cid = e["id"]
        span = sorted(members, key=lambda m: int(m.get("char_start", 0)))
        page = int(e.get("page", -1))
        return Hit(
            rank=rank,
            score=c.rerank_scores.get(cid, fused[cid]),
            text=merge_window(span),
            source=e["source"],
            page=page if page >= 0 else None,
            heading=e.get("heading", ""),
            chunk_id=cid,
            filetype=e.get("filetype", ""),
            char_start=int(span[0].get("char_start", 0)),
            char_end=max(int(m.get("char_end", 0)) for m in span),
            dense_score=c.dense_scores.get(cid),
            sparse_score=c.sparse_scores.get(cid),
            rerank_score=c.rerank_scores.get(cid),
            path=e.get("path", ""),
            chunk_ids=[m["id"] for m in span],
        )

    def _sentence_scores(self, qvec, chunks: list[tuple[str, str]]) -> dict[str, float]:
        """Each chunk's best cosine between the query and one of its sentences. The sentences'
        vectors come from the KB (made at ingest); a KB built before they were stored gets them
        embedded here, once per sentence per session."""
        import numpy as np

        q = np.asarray(qvec, dtype=np.float32)
        out: dict[str, float] = {}
        try:
            stored = self.index.sentence_vectors([cid for cid, _ in chunks])
        except Exception:
            stored = {}  # a failed lookup costs the query-time path, not the search
        for cid, m in stored.items():
            if m.shape[1] == q.shape[0]:
                out[cid] = float((m @ q).max())
        rest = [(cid, text) for cid, text in chunks if cid not in out]
        embed = getattr(self.embedder, "embed_passages", None)
        if not rest or embed is None:
            return out
        untexted = [cid for cid, text in rest if not text]  # a slim search brought no text
        if untexted:
            try:
                texts = self.index.texts(untexted)
            except Exception:
                texts = {}
            rest = [(cid, text or texts.get(cid, "")) for cid, text in rest]
        per_chunk = {cid: split_sentences(text) for cid, text in rest}
        wrap = getattr(self.embedder, "passage_text", lambda x: x)
        new = sorted({s for ss in per_chunk.values() for s in ss if s not in self._sentence_cache})
        if new:
            for s, v in zip(new, embed([wrap(s) for s in new])):
                self._sentence_cache[s] = np.asarray(v, dtype=np.float32)
            if len(self._sentence_cache) > 50_000:  # a long chat session: keep memory bounded
                self._sentence_cache = {s: self._sentence_cache[s] for ss in per_chunk.values() for s in ss}
        out.update({cid: max(float(self._sentence_cache[s] @ q) for s in ss) for cid, ss in per_chunk.items() if ss})
        return out

    def _windows(
        self, order: list[str], k: int, entities: dict[str, dict], vectors: dict | None = None, need_vectors=None
    ) -> list[list[dict]]:
        """The top ``k`` hits as windows: [matched chunk, neighbours...]. A chunk already inside a
        better hit's window is not a hit of its own (it would repeat that text in another slot),
        and a window never grows into another window's chunks. The dense vectors of seeds not in
        ``need_vectors`` are fetched with the neighbours, into ``vectors``."""
        budget = self.settings.retrieval.window_tokens
        # the chunker merges sections below a quarter of max_tokens, so a window of ``budget``
        # tokens rarely spans more chunks than this on either side
        reach = max(1, min(8, budget // max(16, self.settings.chunk.max_tokens // 4)))
        taken: set[str] = set()
        windows: list[list[dict]] = []
        pos = 0
        while len(windows) < k and pos < len(order):
            batch = [c for c in order[pos : pos + 2 * k] if c not in taken]
            pos += 2 * k
            spans = []
            for c in batch:
                e = entities[c]
                o = int(e.get("ordinal", 0))
                spans.append((str(e.get("path", "")), str(e.get("file_hash", "")), o - reach, o + reach))
            with_vectors = [c for c in batch if need_vectors is not None and c not in need_vectors]
            by_pos: dict[tuple[int, int], dict] = {}
            try:
                rows = self.index.neighbours(spans, with_vectors=with_vectors)
            except Exception:
                if any("text" not in entities[c] for c in batch):
                    raise  # a slim search brought only places: without the rows there is nothing to show
                rows = []  # windows are an improvement; a failed lookup leaves plain chunks
            for row in rows:
                if "dense" in row:
                    if vectors is not None:
                        vectors[row["id"]] = row["dense"]
                    del row["dense"]
                by_pos[(int(row["file_id"]), int(row["ordinal"]))] = row
            for c in batch:
                if len(windows) >= k:
                    break
                if c in taken:
                    continue
                e = entities[c]
                row = by_pos.get((int(e.get("file_id", 0)), int(e.get("ordinal", 0))))
                if row is not None and row["id"] == c:
                    entities[c] = e = e | row  # the whole row: a slim search brought only its place
                if "text" not in e:
                    continue  # deleted between the search and the lookup (another writer on a server)
                seed = e | {"id": c}
                members = self._grow(seed, by_pos, taken, budget)
                taken.update(m["id"] for m in members)
                windows.append(members)
        return windows

    def _grow(self, seed: dict, by_pos: dict, taken: set[str], budget: int) -> list[dict]:
        """Add the same section's neighbours, nearest first and alternating sides, while the
        merged text stays within ``budget`` embedder tokens."""
        fid, o = int(seed.get("file_id", 0)), int(seed.get("ordinal", 0))
        members = [seed]
        lo = hi = o
        count = getattr(self.embedder, "count_tokens", None)
        if count is None:
            return members

        def fits(row: dict) -> bool:
            return (
                row["id"] not in taken
                and row.get("heading", "") == seed.get("heading", "")
                and row.get("source") == seed.get("source")  # a mail's attachments are sources of their own
                and int(row.get("page", -1)) == int(seed.get("page", -1))
            )

        open_sides = {1, -1}
        while open_sides:
            for side in (1, -1):
                if side not in open_sides:
                    continue
                row = by_pos.get((fid, (hi + 1) if side > 0 else (lo - 1)))
                if row is None or not fits(row):
                    open_sides.discard(side)
                    continue
                trial = sorted(members + [row], key=lambda m: int(m.get("char_start", 0)))
                if count(merge_window(trial)) > budget:
                    open_sides.discard(side)
                    continue
                members.append(row)
                if side > 0:
                    hi += 1
                else:
                    lo -= 1
        return members


def _file_id(path: str) -> int:
    from localrag.kb.index import file_id

    return file_id(path)


def glob_match(path: str, pattern: str) -> bool:
    """Shell-style match where ``**`` spans folders and a pattern without '/' matches the name."""
    p = PurePosixPath(path.replace("\\", "/"))
    if "/" not in pattern:
        return fnmatch.fnmatch(p.name, pattern)
    regex = _glob_regex(pattern)
    return re.fullmatch(regex, str(p)) is not None


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)
