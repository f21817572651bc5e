"""Which installed model, embedder or reranker to use: the one asked for, else the machine's choice.

Policy only: what is installed comes from ``store``, what fits from ``fit`` on a ``Hardware`` the
caller passes in (detected once at the top, or described for another machine). Errors name the
remedy (``remedy="install_model"`` / ``"install_embedder"``), never a command: the front door
knows its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from localrag.errors import DoesNotFit, NotInstalled
from localrag.models import store
from localrag.models.store import STARTER_PACKAGES, InstalledEmbedder, InstalledModel, Progress, no_progress

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, EmbedderSpec
    from localrag.models.fit import Plan
    from localrag.models.hardware import Hardware
    from localrag.settings import Settings

GET_A_MODEL = (
    "Download it, or import a GGUF file you already have; the Python packages "
    f"{STARTER_PACKAGES.replace(' ', ' and ')} (pip install {STARTER_PACKAGES}) give a small offline starter model."
)


def machine_plan(settings: "Settings", catalogue: "Catalogue", hardware: "Hardware") -> "Plan":
    """fit.plan for ``hardware`` with the configured context and embedder."""
    from localrag.models import fit

    return fit.plan(catalogue, hardware, ctx=settings.generation.ctx, embedder=settings.embedder)


def candidate_id(candidate) -> str:
    model = getattr(candidate, "model", None)
    return getattr(model, "id", model)


def resolve_model(settings: "Settings", catalogue: "Catalogue", spec: str | None, hardware: "Hardware") -> InstalledModel:
    """The installed model that should answer on ``hardware``.

    ``spec`` (or ``settings.model``) names one: it must be installed. Without it, the machine's
    choice (fit.plan); if that is not installed, the best installed distill that fits (with a
    ``note`` saying so); then the offline starter (``starter=True``); else NotInstalled.
    """
    spec = spec or settings.model
    installed = store.installed_models(settings, catalogue)
    if spec:
        model, quant = catalogue.parse_spec(spec)
        mine = [m for m in installed if m.spec.id == model.id and (quant is None or m.quant == quant)]
        if not mine:
            label = f"{model.id}:{quant}" if quant else model.id
            have = [m.quant for m in installed if m.spec.id == model.id]
            extra = f" (installed: {', '.join(have)})" if have else ""
            raise NotInstalled(f"{label} is not installed{extra}", hint=GET_A_MODEL, remedy="install_model",
                               remedy_args={"spec": label})
        return max(mine, key=lambda m: model.quant_rank(m.quant))
    distills = [m for m in installed if not m.spec.starter]
    if distills:
        return _best_distill(settings, catalogue, hardware, installed, distills)
    starter = _first_starter(installed, settings, catalogue, hardware)
    if starter is not None:
        starter.note = f"no DeepSeek-R1 distill is installed; using the offline starter {starter.spec.name} (not a reasoning model)"
        return starter
    raise NotInstalled("no model is installed", hint=GET_A_MODEL, remedy="install_model")


def _best_distill(settings, catalogue, hardware, installed, distills) -> InstalledModel:
    plan = machine_plan(settings, catalogue, hardware)
    if plan.choice is not None:
        choice_id, choice_q = candidate_id(plan.choice), plan.choice.quant
        for m in distills:
            if m.spec.id == choice_id and m.quant == choice_q:
                return m
        # The machine's choice is missing: the candidates are in the fit's order of preference;
        # take the first installed one that fits.
        for cand in plan.candidates:
            if getattr(cand, "fit", "none") == "none":
                continue
            for m in distills:
                if m.spec.id == candidate_id(cand) and m.quant == cand.quant:
                    m.note = (
                        f"this machine's choice {choice_id}:{choice_q} is not installed; using {m.label} "
                        f"(download or import {choice_id}:{choice_q} to use it)"
                    )
                    return m
    too_big = ", ".join(m.label for m in distills)
    starter = _first_starter(installed, settings, catalogue, hardware)
    if starter is not None:
        starter.note = f"the installed model(s) {too_big} do not fit this machine's memory; using the starter"
        return starter
    raise DoesNotFit(
        f"the installed model(s) {too_big} do not fit this machine's memory",
        hint="Install a smaller model that fits: " + GET_A_MODEL,
        remedy="doctor",
    )


def _first_starter(installed: list[InstalledModel], settings=None, catalogue=None, hardware=None) -> InstalledModel | None:
    starters = [m for m in installed if m.spec.starter]
    if len(starters) > 1 and settings is not None:
        from localrag.models.fit import best_starter  # the biggest starter that fits

        return best_starter(settings, catalogue, starters, hardware)
    return starters[0] if starters else None


# --- embedders and rerankers ------------------------------------------------------------------------


def chosen_reranker(settings: "Settings", catalogue: "Catalogue") -> InstalledEmbedder | None:
    """The reranker retrieval uses: ``settings.retrieval.reranker`` when set (None when it is not
    installed), else the first installed one; None when reranking is off."""
    r = settings.retrieval
    if not r.rerank or r.rerank_pool <= 0:
        return None
    if r.reranker:
        return store.find_st_model(settings, catalogue.reranker(r.reranker), extract=False, progress=no_progress)
    found = store.installed_rerankers(settings, catalogue)
    return found[0] if found else None


def resolve_embedder(settings: "Settings", catalogue: "Catalogue", embedder_id: str, progress: Progress = no_progress) -> Path:
    """A local directory sentence-transformers can load with the hub offline.

    Looks in the store, then the Hugging Face cache, then a package that ships the model
    (extracted into the store once). NotInstalled, naming the ways to get it, when none has it.
    """
    return _resolve_st(settings, catalogue.embedder(embedder_id), progress)


def resolve_reranker(settings: "Settings", catalogue: "Catalogue", reranker_id: str, progress: Progress = no_progress) -> Path:
    """A local directory a sentence-transformers CrossEncoder can load with the hub offline:
    the store, then the Hugging Face cache; NotInstalled otherwise."""
    return _resolve_st(settings, catalogue.reranker(reranker_id), progress)


def _resolve_st(settings, spec: "EmbedderSpec", progress: Progress) -> Path:
    found = store.find_st_model(settings, spec, extract=True, progress=progress)
    if found is not None:
        return found.path
    if spec.engine != "sentence-transformers":  # nothing to download or import: only the package
        ways = [f"Install the Python package {spec.package} (pip install {spec.package})"]
    else:
        ways = ["Download it"]
        if spec.package:
            ways.append(f"install the Python package {spec.package}")
        ways.append(f"import a zipped copy of {spec.repo}")
    raise NotInstalled(
        f"{spec.kind} {spec.id} is not installed",
        hint=", or ".join(ways) + ".",
        remedy="install_embedder",
        remedy_args={"embedder": spec.id},
    )
