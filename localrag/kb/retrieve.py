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

The modules, imports pointing one way: ``filters.py`` turns ``--glob``/``--type`` into a Milvus
expression, ``rerank.py`` finds and loads the cross-encoder, ``windows.py`` grows hits into
windows; this module holds ``Retriever`` (search, fusion, the sentence re-score) and ``Hit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from localrag.kb.chunk import split_sentences
from localrag.lang import is_cjk
from localrag.errors import BadInput
from localrag.kb.filters import canonical_filetypes, filter_expr, glob_match
from localrag.kb.index import Index
from localrag.kb.rerank import Reranker, find_reranker
from localrag.kb.windows import build_windows, merge_window

# what callers imported from here before the filters, reranker and windows moved out; they keep working
__all__ = [
    "Hit", "Reranker", "Retriever", "Timings", "canonical_filetypes", "find_reranker", "glob_match",
    "merge_window", "rrf", "split_sentences",
]


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
        return filter_expr(glob, filetypes, self._files)

    def _files(self) -> dict:
        if self._files_cache is None:
            self._files_cache = self.index.files()
        return self._files_cache

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
            windows = build_windows(
                self.index, order, k, c.entities, budget=self.settings.retrieval.window_tokens,
                max_chunk_tokens=self.settings.chunk.max_tokens, count_tokens=getattr(self.embedder, "count_tokens", None),
                vectors=vectors, need_vectors=c.dense_scores,
            )
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
