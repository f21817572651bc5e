"""The optional cross-encoder reranker: finding the installed one and loading it.

When one is installed (``localrag models pull ms-marco-minilm-l6-v2``), retrieval has it re-score
the best ``RetrievalSettings.rerank_pool`` fused candidates (``retrieve.py``). torch and
sentence-transformers load only with the model.
"""

from __future__ import annotations

import logging


class Reranker:
    """An installed cross-encoder: ``predict`` scores (query, passage) pairs, higher = more relevant."""

    def __init__(self, reranker_id: str, model):
        self.id = reranker_id
        self._model = model

    @classmethod
    def load(cls, reranker_id: str, path, *, device: str = "cpu", max_tokens: int | None = None) -> "Reranker":
        import torch
        from sentence_transformers import CrossEncoder

        # Raw logits, not sigmoid probabilities: RERANK_GATE in rag/relevance.py is a logit, and
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
