"""The relevance gate: is the best hit close enough to the question to be worth the model's time?

A small distill handed irrelevant sources tends to answer from its own memory; not asking it is
both honest and instant. Above the gate the prompt still tells the model to say when the sources
do not answer.
"""

from __future__ import annotations

# Relevance gate: the least dense cosine of the best hit for a question the documents can answer,
# per embedder (cosine ranges differ a lot between embedders: e5 puts unrelated text near 0.7).
# Only measured values are listed; with another embedder the gate is off and the prompt's
# "say the documents do not say" instruction is the only guard.
# all-MiniLM-L6-v2, best hit's cosine, measured on the Milvus docs (shared/eval/milvus-dev.jsonl):
#   55 answerable questions 0.441-0.843 (median ~0.64); off-topic English questions 0.20-0.25
#   (0.10-0.15 over the shipped sample). 0.30 separates those two. The dev set's 5 "unanswerable"
#   questions are in-domain (0.476-0.618): no score gate can tell them from answerable ones, so
#   for them the prompt's instruction does the work. MiniLM is English-only: Chinese off-topic
#   questions score 0.49-0.59 and pass the gate.
DENSE_GATE: dict[str, float] = {
    "all-minilm-l6-v2": 0.30,
}
RERANK_GATE = -4.0  # cross-encoder logit (ms-marco style), when a reranker ran


# --- relevance gate --------------------------------------------------------------------------


def relevant(hits: list, embedder: str | None = None) -> bool:
    """Whether the best hit is close enough to the question to be worth the model's time.

    Uses the strongest available signal: the cross-encoder score when a reranker ran, else the
    dense cosine against the embedder's measured gate. No gate known: only "no hits" fails.
    """
    if not hits:
        return False
    reranked = [h.rerank_score for h in hits if getattr(h, "rerank_score", None) is not None]
    if reranked:
        return max(reranked) >= RERANK_GATE
    gate = DENSE_GATE.get((embedder or "").lower())
    dense = [h.dense_score for h in hits if getattr(h, "dense_score", None) is not None]
    if gate is None or not dense:
        return True
    return max(dense) >= gate


def not_found_message(kb: str) -> str:
    return (
        f"The documents in the knowledge base '{kb}' don't say. Nothing in them is close enough to this "
        "question to answer it, so I won't guess."
    )
