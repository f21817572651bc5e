"""Hybrid retrieval: dense cosine + BM25, fused by weighted reciprocal rank, optional rerank.

Fusion is done here rather than by Milvus' ranker so each hit keeps both raw scores: the answer
stage uses the dense cosine and the BM25 score to decide that a question is not covered by the
documents at all.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from localrag.console import UserError
from localrag.index import Index

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


def find_reranker(settings):
    """A locally installed cross-encoder, or None. None ships with localrag; when the catalogue
    names one and the store has it, it is used, otherwise retrieval silently stays hybrid-only."""
    if not settings.retrieval.rerank:
        return None
    try:
        from localrag import catalogue as catalogue_mod
        from localrag import modelstore

        catalogue = catalogue_mod.load_catalogue(settings.catalogue_path)
        rerankers = getattr(catalogue, "rerankers", None) or {}
        resolve = getattr(modelstore, "resolve_reranker", None)
        if not rerankers or resolve is None:
            return None
        for rid in rerankers:
            try:
                path = resolve(settings, catalogue, rid)
            except UserError:
                continue
            from sentence_transformers import CrossEncoder

            return CrossEncoder(str(path), device="cpu")
    except Exception:
        return None
    return None


class Retriever:
    """Search one KB. Holds the open index and the loaded embedder; call ``close()`` when done."""

    def __init__(self, settings, kb: str, *, embedder=None, reranker=None):
        self.settings = settings
        self.kb = kb
        self.index = Index.open(settings, kb)
        try:
            record = self.index.record
            from localrag import embed as embed_mod

            if settings.embedder and embed_mod.canonical_id(settings, settings.embedder) != record.embedder:
                raise UserError(
                    f"knowledge base '{kb}' was built with embedder '{record.embedder}', not '{settings.embedder}'",
                    hint="A query must be embedded by the KB's own embedder; drop --embedder/LOCALRAG_EMBEDDER, "
                    "or re-ingest into a new KB with the embedder you want.",
                )
            if embedder is not None and embedder.id != record.embedder:
                raise UserError(
                    f"knowledge base '{kb}' was built with embedder '{record.embedder}', not '{embedder.id}'",
                    hint="Load the KB's own embedder for queries.",
                )
            if embedder is None:
                from localrag.ingest import _device

                embedder = embed_mod.load_for(settings, record.embedder, _device(settings))
            self.embedder = embedder
            self.reranker = reranker if reranker is not None else find_reranker(settings)
        except BaseException:
            self.index.close()
            raise
        self.last_timings = Timings()
        self._files_cache: dict | None = None

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Retriever":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _filter_expr(self, glob: str | None, filetypes: list[str] | None) -> str | None:
        """A Milvus expression for the filters; None when nothing can match."""
        parts = []
        if filetypes:
            types = [t.lower().lstrip(".") for t in filetypes]
            bad = [t for t in types if not _FILETYPE_RE.match(t)]
            if bad:
                raise UserError(f"invalid file type: {bad[0]!r}", exit_code=2)
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
        query = (query or "").strip()
        if not query:
            raise UserError("the query is empty", exit_code=2)
        r = self.settings.retrieval
        t = Timings()
        expr = self._filter_expr(glob, filetypes)
        if expr is None:
            self.last_timings = t
            return []
        n = max(r.candidates, k)
        t0 = time.perf_counter()
        qvec = self.embedder.embed_query(query)
        t.embed = time.perf_counter() - t0

        t0 = time.perf_counter()
        dense = self.index.search_dense(qvec, n, expr) if r.dense_weight > 0 else []
        sparse = self.index.search_sparse(query, n, expr) if r.sparse_weight > 0 else []
        t.search = time.perf_counter() - t0

        t0 = time.perf_counter()
        entities: dict[str, dict] = {}
        dense_scores: dict[str, float] = {}
        sparse_scores: dict[str, float] = {}
        for cid, score, ent in dense:
            entities[cid] = ent
            dense_scores[cid] = score
        for cid, score, ent in sparse:
            sparse_scores[cid] = score
            entities.setdefault(cid, ent)
        lists = [[c for c, _, _ in dense], [c for c, _, _ in sparse]]
        weights = [r.dense_weight, r.sparse_weight]
        if is_cjk(query):
            # A Chinese question is best answered by Chinese text, but English terms in it
            # ("Milvus", "HNSW") pull English chunks up in BM25; the same-language BM25 hits
            # count once more. (English questions need no such help: the corpus' Chinese
            # pages rarely match English queries anyway.)
            lists.append([c for c, _, _ in sparse if is_cjk(entities[c]["text"])])
            weights.append(r.sparse_weight)
        fused = rrf(lists, weights, r.rrf_k)
        order = sorted(fused, key=lambda c: (-fused[c], c))
        t.fuse = time.perf_counter() - t0

        rerank_scores: dict[str, float] = {}
        if self.reranker is not None and order:
            t0 = time.perf_counter()
            pool = order[: max(k * 4, 20)]
            scores = self.reranker.predict([(query, entities[c]["text"]) for c in pool])
            rerank_scores = {c: float(s) for c, s in zip(pool, scores)}
            order = sorted(pool, key=lambda c: -rerank_scores[c]) + order[len(pool) :]
            t.rerank = time.perf_counter() - t0
        self.last_timings = t

        # Cosine of the BM25-only hits that made the cut, so every hit carries both signals
        # (fetching vectors for all BM25 candidates would cost more than the search).
        missing = [c for c in order[:k] if c not in dense_scores]
        if missing:
            t0 = time.perf_counter()
            for cid, vec in self.index.vectors(missing).items():
                dense_scores[cid] = float(sum(a * b for a, b in zip(qvec, vec)))
            t.search += time.perf_counter() - t0

        hits = []
        for rank, cid in enumerate(order[:k], start=1):
            e = entities[cid]
            page = int(e.get("page", -1))
            hits.append(
                Hit(
                    rank=rank,
                    score=rerank_scores.get(cid, fused[cid]),
                    text=e["text"],
                    source=e["source"],
                    page=page if page >= 0 else None,
                    heading=e.get("heading", ""),
                    chunk_id=cid,
                    filetype=e.get("filetype", ""),
                    char_start=int(e.get("char_start", 0)),
                    char_end=int(e.get("char_end", 0)),
                    dense_score=dense_scores.get(cid),
                    sparse_score=sparse_scores.get(cid),
                    rerank_score=rerank_scores.get(cid),
                    path=e.get("path", ""),
                )
            )
        return hits


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_WORDISH = re.compile(r"[^\W\d_]")


def is_cjk(text: str, threshold: float = 0.3) -> bool:
    """Mostly CJK text, counting a CJK character like a word and four other letters as one
    (so a Chinese page full of English identifiers still counts as Chinese)."""
    sample = text[:2000]
    cjk = len(_CJK.findall(sample))
    other = len(_WORDISH.findall(sample)) - cjk
    return cjk > 0 and cjk / (cjk + other / 4) >= threshold


def _file_id(path: str) -> int:
    from localrag.index import file_id

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
