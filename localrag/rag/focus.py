"""Which parts of a retrieved passage answer the question, for packing.

A passage is up to ~400 tokens and the prompt has room for a few; prompt.pack_sources keeps the
best-scoring sentences of a long passage with a neighbour on each side (prompt.focus_text). The
scores come from the sentence vectors ingest stored for every chunk, the same vectors
retrieval's sentence re-score uses, so focusing costs one query embedding and no model call.
"""

from __future__ import annotations

from typing import Callable

from localrag.kb.chunk import split_sentences
from localrag.rag import prompt

Scorer = Callable[[object, str], list[tuple[str, float]]]


def scorer(index, embedder, query: str) -> Scorer | None:
    """``score(hit, text)``: each unit of a source's text (prompt.split_units) with its score
    against ``query``. None when the KB has no sentence vectors (sources are then cut at their
    start) or the query cannot be embedded."""
    if index is None or embedder is None or not getattr(index, "has_sentences", False):
        return None
    import numpy as np

    try:
        q = np.asarray(embedder.embed_query(query), dtype=np.float32)
    except Exception:  # noqa: BLE001 - focusing is an improvement, never a failure
        return None

    def score(hit, text: str) -> list[tuple[str, float]]:
        table = _sentence_scores(index, list(getattr(hit, "chunk_ids", None) or [hit.chunk_id]), q)
        if not table:
            return []
        out = []
        for unit in prompt.split_units(text):
            key = " ".join(unit.split())
            value = table.get(key)
            if value is None and "\n" in unit.strip():  # a code block: its best line
                value = max((v for k, v in table.items() if k in key), default=0.0)
            out.append((unit, value or 0.0))
        return out

    return score


def _sentence_scores(index, ids: list[str], q) -> dict[str, float]:
    """Each stored sentence of the chunks ``ids`` (whitespace-normalised) → its best cosine to ``q``."""
    try:
        stored, texts = index.sentence_vectors(ids), index.texts(ids)
    except Exception:  # noqa: BLE001 - a KB without the vectors is packed unfocused
        return {}
    table: dict[str, float] = {}
    for cid in ids:
        m, t = stored.get(cid), texts.get(cid)
        if m is None or t is None:
            continue
        sentences = split_sentences(t)
        if len(sentences) != m.shape[0] or m.shape[1] != q.shape[0]:
            continue  # stored with another embedder or splitter: no reliable scores
        for sentence, value in zip(sentences, (m @ q).tolist()):
            key = " ".join(sentence.split())
            table[key] = max(table.get(key, -1.0), float(value))
    return table
