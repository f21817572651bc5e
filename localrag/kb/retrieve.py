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

import fnmatch
import re
import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from localrag.kb.chunk import split_sentences
from localrag.errors import BadInput, LocalragError
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
        import os

        # must be set before transformers/huggingface_hub are first imported
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from localrag.runtime.embedder import _quiet_libraries

        _quiet_libraries()
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
    from localrag.cli.console import stderr

    stderr().print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)  # one line, even in a log


def find_reranker(settings, device: str = "cpu") -> Reranker | None:
    """The installed cross-encoder retrieval should use, loaded; None when reranking is off or none
    is installed. A reranker that fails to load costs a one-line warning, not the search."""
    r = settings.retrieval
    if not r.rerank or r.rerank_pool <= 0:
        return None
    from localrag.models import catalogue as catalogue_mod
    from localrag.models import store as modelstore

    catalogue = catalogue_mod.load_catalogue(settings.catalogue_path)
    item = modelstore.chosen_reranker(settings, catalogue)  # an unknown configured id is a LocalragError
    if item is None:
        if r.reranker:
            _warn(f"reranker {r.reranker} is not installed; searching without it (`localrag models pull {r.reranker}`)")
        return None
    try:
        return Reranker.load(item.spec.id, item.path, device=device, max_tokens=item.spec.max_tokens)
    except Exception as exc:  # noqa: BLE001 - a broken download shows up as any of several library errors
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        _warn(
            f"cannot load reranker {item.spec.id} from {item.path} ({why}); searching without it "
            f"(fix: `localrag models rm {item.spec.id}`, then pull or import it again)"
        )
        return None


class Retriever:
    """Search one KB. Holds the open index and the loaded embedder; call ``close()`` when done."""

    def __init__(self, settings, kb: str, *, embedder=None, reranker=None):
        self.settings = settings
        self.kb = kb
        self.index = Index.open(settings, kb)
        try:
            record = self.index.record
            from localrag.runtime import embedder as embed_mod

            if settings.embedder and embed_mod.canonical_id(settings, settings.embedder) != record.embedder:
                raise LocalragError(
                    f"knowledge base '{kb}' was built with embedder '{record.embedder}', not '{settings.embedder}'",
                    hint="A query must be embedded by the KB's own embedder; drop --embedder/LOCALRAG_EMBEDDER, "
                    "or re-ingest into a new KB with the embedder you want.",
                )
            if embedder is not None and embedder.id != record.embedder:
                raise LocalragError(
                    f"knowledge base '{kb}' was built with embedder '{record.embedder}', not '{embedder.id}'",
                    hint="Load the KB's own embedder for queries.",
                )
            device = "cpu"
            if embedder is None:
                from localrag.kb.ingest import _device

                device = _device(settings)
                embedder = embed_mod.load_for(settings, record.embedder, device)
            self.embedder = embedder
            self.reranker = reranker if reranker is not None else find_reranker(settings, device)
        except BaseException:
            self.index.close()
            raise
        self.last_timings = Timings()
        self._executor = None
        self._files_cache: dict | None = None
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
        self.index.close()

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
        query = (query or "").strip()
        if not query:
            raise BadInput("the query is empty")
        r = self.settings.retrieval
        t = Timings()
        expr = self._filter_expr(glob, filetypes)
        if expr is None:
            self.last_timings = t
            return []
        n = max(r.candidates, k)
        cjk_query = is_cjk(query)
        # With windows, a hit's own row comes back with its neighbours, and stored sentence
        # vectors make the candidates' text unnecessary for the re-score: the searches fetch
        # only where each candidate lies (plus the text a Chinese question's language list needs).
        slim = self.index.has_sentences and r.window_tokens > 0 and self.reranker is None
        fields = (Index.LOCATE_FIELDS + (["text"] if cjk_query else [])) if slim else None
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
        if cjk_query:
            # A Chinese question is best answered by Chinese text, but English terms in it
            # ("Milvus", "HNSW") pull English chunks up in BM25; the same-language BM25 hits
            # count once more. (English questions need no such help: the corpus' Chinese
            # pages rarely match English queries anyway.)
            lists.append([c for c, _, _ in sparse if is_cjk(entities[c]["text"])])
            weights.append(r.sparse_weight)
        fused = rrf(lists, weights, r.rrf_k)
        order = sorted(fused, key=lambda c: (-fused[c], c))
        if r.sentence_pool > 0 and r.sentence_weight > 0 and len(order) > 1:
            pool = order[: r.sentence_pool]
            best = self._sentence_scores(qvec, [(c, entities[c].get("text", "")) for c in pool])
            if best:
                lists.append(sorted(best, key=lambda c: (-best[c], c)))
                weights.append(r.sentence_weight)
                fused = rrf(lists, weights, r.rrf_k)
                order = sorted(fused, key=lambda c: (-fused[c], c))
        t.fuse = time.perf_counter() - t0

        rerank_scores: dict[str, float] = {}
        if self.reranker is not None and order and r.rerank and r.rerank_pool > 0:
            t0 = time.perf_counter()
            # at least k, so every hit returned was judged by the same scorer
            pool = order[: max(r.rerank_pool, k)]
            scores = self.reranker.predict([(query, entities[c]["text"]) for c in pool])
            rerank_scores = {c: float(s) for c, s in zip(pool, scores)}
            order = sorted(pool, key=lambda c: -rerank_scores[c]) + order[len(pool) :]  # stable: ties keep RRF order
            t.rerank = time.perf_counter() - t0
        self.last_timings = t

        t0 = time.perf_counter()
        # Cosine of the BM25-only hits that make the cut, so every hit carries both signals
        # (fetching vectors for all BM25 candidates would cost more than the search); their
        # vectors come with the window lookup.
        vectors: dict[str, object] = {}
        if r.window_tokens > 0:
            windows = self._windows(order, k, entities, vectors, need_vectors=dense_scores)
        else:
            windows = [[entities[c] | {"id": c}] for c in order[:k]]
        missing = [w[0]["id"] for w in windows if w[0]["id"] not in dense_scores and w[0]["id"] not in vectors]
        if missing:
            vectors.update(self.index.vectors(missing))
        for w in windows:
            cid = w[0]["id"]
            if cid not in dense_scores and cid in vectors:
                dense_scores[cid] = float(sum(a * b for a, b in zip(qvec, vectors[cid])))
        t.search += time.perf_counter() - t0

        hits = []
        for rank, members in enumerate(windows, start=1):
            e = members[0]  # the chunk that matched; the others are its context
            cid = e["id"]
            span = sorted(members, key=lambda m: int(m.get("char_start", 0)))
            page = int(e.get("page", -1))
            hits.append(
                Hit(
                    rank=rank,
                    score=rerank_scores.get(cid, fused[cid]),
                    text=merge_window(span),
                    source=e["source"],
                    page=page if page >= 0 else None,
                    heading=e.get("heading", ""),
                    chunk_id=cid,
                    filetype=e.get("filetype", ""),
                    char_start=int(span[0].get("char_start", 0)),
                    char_end=max(int(m.get("char_end", 0)) for m in span),
                    dense_score=dense_scores.get(cid),
                    sparse_score=sparse_scores.get(cid),
                    rerank_score=rerank_scores.get(cid),
                    path=e.get("path", ""),
                    chunk_ids=[m["id"] for m in span],
                )
            )
        return hits

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
