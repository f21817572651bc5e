"""Every setting in one typed place.

Precedence, lowest first: defaults here, ``config.toml`` in the data dir, environment
variables (``LOCALRAG_*``), then command-line flags (passed as ``overrides``).
Nothing here imports a heavy library: ``localrag --help`` must stay instant.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

APP_NAME = "localrag"
REPO_ROOT = Path(__file__).resolve().parent.parent
# The catalogue ships inside the package (localrag/data/models.toml, a link to the repository's
# models.toml that a wheel or `pip install .` turns into a copy), so an installed localrag has it.
PACKAGED_CATALOGUE = Path(__file__).resolve().parent / "data" / "models.toml"


def default_home() -> Path:
    env = os.environ.get("LOCALRAG_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class RetrievalSettings:
    top_k: int = 5
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    rrf_k: int = 10  # measured on the milvus-docs dev set: 10 beats the textbook 60 (hit@5 en 0.78 vs 0.76, zh 0.71 vs 0.50)
    candidates: int = 40  # per retriever, before fusion
    rerank: bool = True  # use a cross-encoder when one is installed
    reranker: str | None = None  # its catalogue id; None: the first installed one in catalogue order
    # How many of the best fused candidates the cross-encoder re-scores (the rest keep their RRF
    # order): on CPU it costs ~10-30 ms per (query, passage) pair for a MiniLM-size model, far more
    # for bge-reranker-v2-m3, so the pool stays small. 0: no reranking.
    rerank_pool: int = 20
    # Small-to-big: the search matches chunks (what a 256-token embedder can see), a hit returns its
    # chunk grown with neighbouring chunks of the same section up to this many embedder tokens, and
    # hits inside an earlier hit's window collapse into it. 0: plain chunks. Alone, on the
    # milvus-docs dev set (MiniLM, full corpus): hit@5 en 0.78 -> 0.80, zh 0.71 -> 0.79. 640 scores
    # about the same and makes prompts longer; 384 rarely fits a neighbour.
    window_tokens: int = 512
    # Sentence-level dense re-scoring of the best fused candidates: a small embedder matches a
    # question to the one sentence that answers it far better than to a 256-token chunk where that
    # sentence is diluted. The candidates' sentences are embedded at query time (no index change;
    # ~0.2-0.9 s on 2 CPU cores) and their best cosine ranks a third RRF list. 0: off. Alone on the
    # dev set: MRR en 0.61 -> 0.68, zh 0.45 -> 0.56; with windows hit@5 en 0.83, zh 0.79.
    sentence_pool: int = 20
    sentence_weight: float = 1.0
    # A question in a language most of the KB's files are not in (a Chinese question over mostly
    # English documents) is also searched in the documents' language, as the loaded model writes
    # it (~1 s with the 1.5B on 2 cores). On the dev set's 14 Chinese questions: evidence in the
    # top 3 9 -> 12 (BENCHMARKS §11). Not for follow-ups (the model's cache is the conversation's).
    cross_lingual: bool = True


@dataclass(frozen=True)
class ChunkSettings:
    max_tokens: int = 256  # in the embedder's tokens
    overlap_tokens: int = 32
    # Embed each chunk's sentences at ingest for the sentence-level re-score, so a query embeds
    # only itself (bench_query: p50 ~55 ms instead of ~0.8 s for a new question). It costs ingest
    # ~85% more embedding on the milvus-docs corpus (BENCHMARKS.md); off, retrieval embeds the
    # sentences of each query's candidates instead, with the same ranking.
    sentence_vectors: bool = True


@dataclass(frozen=True)
class GenerationSettings:
    # None: the model card's value from models.toml [defaults] (the engine applies it); config.toml
    # [generation] or a flag may set either.
    temperature: float | None = None
    top_p: float | None = None
    reasoning_budget: int = 1024  # tokens of <think> before it is closed for the answer
    max_answer_tokens: int = 1024
    # Tokens of retrieved text per question (the sources, each focused on its best-matching
    # sentences). More tokens: more of the evidence reaches the model, and a longer wait before
    # the first token (the CLI says how long). Chosen from the measured curve of answer
    # correctness against this budget (BENCHMARKS.md, "Answers"). `ask/chat --source-tokens`.
    source_tokens: int = 1600
    ctx: int | None = None  # None: chosen by the hardware fit (from models.toml [defaults] min_ctx)
    threads: int | None = None  # None: the physical cores other programs are not keeping busy
    repack: bool | None = None  # llama.cpp CPU weight repacking; None: llama.cpp's default (on; BENCHMARKS.md)


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=default_home)
    milvus_uri: str | None = None  # None: Milvus Lite under home; else e.g. http://host:19530
    milvus_token: str | None = None
    # Generation on an OpenAI-compatible server (llama-server, vLLM, another localrag) instead of
    # the in-process model; None: the local model. llm_ctx: its context when the server does not
    # say (default 4096), and a cap on what it says.
    llm_url: str | None = None
    llm_model: str | None = None  # the served model's id; None: the first the server lists
    llm_api_key: str | None = None
    llm_ctx: int | None = None
    embedder: str | None = None  # catalogue id; None: chosen by the hardware fit
    model: str | None = None  # "id" or "id:QUANT"; None: the machine's choice
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def kb_dir(self) -> Path:
        return self.home / "kb"

    @property
    def config_path(self) -> Path:
        return self.home / "config.toml"

    @property
    def catalogue_path(self) -> Path:
        env = os.environ.get("LOCALRAG_CATALOGUE")
        return Path(env) if env else PACKAGED_CATALOGUE


_SECTIONS = {"retrieval": RetrievalSettings, "chunk": ChunkSettings, "generation": GenerationSettings}


def _merge(base: Settings, values: dict) -> Settings:
    top: dict = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in _SECTIONS:
            section = getattr(base, key)
            known = {f.name for f in dataclasses.fields(section)}
            unknown = set(value) - known
            if unknown:
                raise ValueError(f"unknown setting(s) in [{key}]: {', '.join(sorted(unknown))}")
            top[key] = dataclasses.replace(section, **value)
        elif key in {f.name for f in dataclasses.fields(Settings)}:
            top[key] = Path(value).expanduser() if key == "home" else value
        else:
            raise ValueError(f"unknown setting: {key}")
    return dataclasses.replace(base, **top)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def load_settings(**overrides) -> Settings:
    """Defaults < config.toml < LOCALRAG_* env < overrides (flags; None means 'not given')."""
    settings = Settings()
    if overrides.get("home"):
        settings = dataclasses.replace(settings, home=Path(overrides["home"]).expanduser())
    if settings.config_path.is_file():
        try:
            data = tomllib.loads(settings.config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{settings.config_path}: {exc}") from exc
        settings = _merge(settings, data)
    env = {
        "milvus_uri": os.environ.get("LOCALRAG_MILVUS_URI"),
        "milvus_token": os.environ.get("LOCALRAG_MILVUS_TOKEN"),
        "llm_url": os.environ.get("LOCALRAG_LLM_URL"),
        "llm_model": os.environ.get("LOCALRAG_LLM_MODEL"),
        "llm_api_key": os.environ.get("LOCALRAG_LLM_API_KEY"),
        "llm_ctx": _env_int("LOCALRAG_LLM_CTX"),
        "embedder": os.environ.get("LOCALRAG_EMBEDDER"),
        "model": os.environ.get("LOCALRAG_MODEL"),
    }
    settings = _merge(settings, env)
    return _merge(settings, {k: v for k, v in overrides.items() if k != "home"})
