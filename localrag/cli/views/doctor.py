"""`localrag doctor`: this machine's hardware, what every model needs here, and the choice."""

from __future__ import annotations

import json
from dataclasses import asdict

from localrag.cli.console import stdout
from localrag.errors import BadInput
from localrag.units import GiB, parse_size
from localrag.units import format_size as fs

FIT_LABEL = {"gpu": "GPU", "partial": "GPU+RAM", "cpu": "CPU", "none": "does not fit"}


def _size(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise BadInput(f"{flag}: {exc}", hint=f"e.g. {flag} 8GiB") from None


def _hardware(settings, *, gpu, vram, ram, cores):
    """This machine, or the one --gpu/--vram/--ram/--cores describe (detected once either way:
    what is not given comes from here)."""
    from localrag.models import hardware

    vram_b, ram_b = _size(vram, "--vram"), _size(ram, "--ram")
    if gpu is not None and gpu.lower().strip() == "none" and vram_b is not None:
        raise BadInput("--gpu none and --vram contradict each other", hint="drop one of them")
    hw = hardware.detect(settings.models_dir)
    if gpu is None and vram_b is None and ram_b is None and cores is None:
        return hw
    try:
        return hardware.simulate(hw, gpu=gpu, vram=vram_b, ram=ram_b, cores=cores)
    except ValueError as exc:
        raise BadInput(str(exc), hint="e.g. localrag doctor --gpu nvidia --vram 8GiB") from None


def _installed(settings, catalogue) -> set[tuple[str, str]]:
    """(model id, quant) of what is installed; empty when the store cannot be read."""
    try:
        from localrag.models.store import installed_models

        return {(m.spec.id, m.quant) for m in installed_models(settings, catalogue)}
    except Exception:  # doctor must work on a broken store too: it is how people diagnose it
        return set()


def _hardware_json(hw) -> dict:
    from localrag.models import fit

    data = asdict(hw)
    data["gpu_usable"] = fit.gpu_usable(hw)
    data["ram_budget"] = fit.ram_budget(hw)
    data["gpu_budget"] = fit.gpu_budget(hw)
    data["cpu_bandwidth_estimate"] = fit.cpu_bandwidth(hw)
    return data


def _candidate_json(c, catalogue, installed: set) -> dict:
    model = catalogue.model(c.model)
    q = model.quants[c.quant]
    return {
        "model": c.model,
        "name": model.name,
        "quant": c.quant,
        "fit": c.fit,
        "n_gpu_layers": c.n_gpu_layers,
        "n_layers": model.n_layers,
        "ctx": c.ctx,
        "estimated_bytes": c.estimated_bytes,
        "budget_bytes": c.budget_bytes,
        "file_bytes": q.size_bytes,
        "file_bytes_exact": q.size_exact,
        "tok_s_estimate": round(c.tok_s, 2) if c.tok_s else None,
        "installed": (c.model, c.quant) in installed,
        "breakdown": c.breakdown,
        "note": c.note,
    }


def doctor(settings, *, json_out: bool = False, gpu: str | None = None, vram: str | None = None,
           ram: str | None = None, cores: int | None = None, ctx: int | None = None) -> int:
    from localrag.api import LocalRAG

    if ctx is not None and ctx < 512:
        raise BadInput(f"--ctx {ctx} is too small", hint="use 4096 or more")
    hw = _hardware(settings, gpu=gpu, vram=vram, ram=ram, cores=cores)
    rag = LocalRAG(settings, hardware=hw, remember_speed=False)
    catalogue = rag.catalogue
    want_ctx = ctx or settings.generation.ctx
    plan = rag.plan(ctx=want_ctx)
    installed = _installed(settings, catalogue)

    if json_out:
        choice = None
        if plan.choice is not None:
            choice = _candidate_json(plan.choice, catalogue, installed)
        out = {
            "hardware": _hardware_json(hw),
            "simulated": hw.simulated,
            "choice": choice,
            "reason": plan.reason,
            "rule": plan.rule,
            "embedder": {"id": plan.embedder, "device": plan.embedder_device},
            "reranker": _reranker_json(settings, catalogue),
            "ocr": {"available": _ocr_available()},
            "candidates": [_candidate_json(c, catalogue, installed) for c in _display_order(plan.candidates, catalogue)],
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    _print(plan, hw, catalogue, settings, installed)
    return 0


def _ocr_available() -> bool:
    from localrag.kb.formats import ocr

    return ocr.available()


def _reranker_json(settings, catalogue) -> dict:
    from localrag.models import store as modelstore
    from localrag.models.resolve import chosen_reranker

    used = chosen_reranker(settings, catalogue)
    return {
        "installed": [e.spec.id for e in modelstore.installed_rerankers(settings, catalogue)],
        "in_use": used.spec.id if used else None,
        "enabled": settings.retrieval.rerank and settings.retrieval.rerank_pool > 0,
    }


def _display_order(cands, catalogue):
    """Catalogue order: models, then each model's quants, smallest first."""
    order = {m.id: i for i, m in enumerate(catalogue.models)}
    return sorted(cands, key=lambda c: (order.get(c.model, len(order)), catalogue.model(c.model).quant_rank(c.quant)))


def _print(plan, hw, catalogue, settings, installed: set) -> None:
    con = stdout()
    _print_hardware(con, hw, settings)
    _print_table(con, plan, hw, catalogue, installed)
    _print_choice(con, plan, hw, catalogue, settings, installed)
    _print_reranker(con, settings, catalogue)
    con.print(f"[bold]Why:[/] {plan.reason}", highlight=False)
    con.print(f"[dim]Rule: {plan.rule} Estimates: weights + KV cache + llama.cpp compute buffer + "
              f"embedder + app + 5% margin; speeds are rough (memory bandwidth / model bytes).[/]", highlight=False)


def _print_hardware(con, hw, settings) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from localrag.models import fit

    title = "Hardware (simulated)" if hw.simulated else "Hardware"
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("CPU", f"{hw.cpu_name or 'unknown'}: {hw.cpu_cores_physical} cores ({hw.cpu_cores_logical} threads)")
    info.add_row("RAM", f"{fs(hw.ram_total)} total, {fs(hw.ram_available)} available, "
                        f"{fs(fit.ram_budget(hw))} usable for localrag")
    if hw.gpus:
        for g in hw.gpus:
            kind = "unified memory, Metal working set" if g.unified else "VRAM"
            src = f" [dim]({g.source})[/]" if g.source else ""
            info.add_row("GPU", f"{g.name}: {fs(g.vram_total)} {kind}, {fs(g.vram_free)} free{src}")
    else:
        info.add_row("GPU", "none found")
    offload = "yes" if hw.gpu_offload_supported else "no (CPU-only build)"
    info.add_row("llama.cpp GPU offload", offload)
    info.add_row("Disk", f"{fs(hw.disk_free)} free in {settings.models_dir}")
    info.add_row("OCR", "RapidOCR installed: scanned PDF pages and images are read" if _ocr_available()
                 else "not installed: scanned PDF pages and images are skipped (pip install 'localrag\\[ocr]')")
    con.print(Panel(info, title=title, expand=False))
    for note in hw.notes:
        con.print(f"[yellow]![/] {note}")
    if hw.gpus and not hw.gpu_offload_supported:
        flag = {"nvidia": "-DGGML_CUDA=on", "amd": "-DGGML_HIP=on", "apple": "-DGGML_METAL=on"}.get(hw.gpus[0].vendor, "")
        con.print(f"  [dim]to use the GPU, reinstall llama-cpp-python built for it: "
                  f"CMAKE_ARGS=\"{flag}\" pip install --force-reinstall --no-cache-dir llama-cpp-python[/]",
                  highlight=False)


def _print_table(con, plan, hw, catalogue, installed: set) -> None:
    from rich.table import Table

    from localrag.models import fit

    usable = f"usable: {fs(fit.ram_budget(hw))} RAM"
    if fit.gpu_usable(hw):
        usable = (f"usable: {fs(sum(g.vram_free for g in hw.gpus))} Metal working set" if hw.unified_memory
                  else f"usable: {fs(fit.gpu_budget(hw))} VRAM + {fs(fit.ram_budget(hw))} RAM")
    table = Table(title=f"What each model needs here ({usable})", title_justify="left", pad_edge=False)
    table.add_column("Model", no_wrap=True)
    table.add_column("Quant", no_wrap=True)
    table.add_column("File GiB", justify="right", no_wrap=True)
    table.add_column("Needs GiB", justify="right", no_wrap=True)
    table.add_column("Runs on", min_width=12)
    table.add_column("Ctx", justify="right", no_wrap=True)
    table.add_column("tok/s", justify="right", no_wrap=True)
    for c in _display_order(plan.candidates, catalogue):
        m = catalogue.model(c.model)
        q = m.quants[c.quant]
        where = FIT_LABEL[c.fit]
        if c.fit == "partial":
            where = f"GPU {c.n_gpu_layers}/{m.n_layers} + RAM"
        chosen = c is plan.choice
        style = "bold green" if chosen else ("dim" if c.fit == "none" else "")
        if c.fit != "none" and not chosen and not fit.qualifies(c, hw):
            where += " (slow)"
        table.add_row(
            ("→ " if chosen else "  ") + m.short_name,
            c.quant + (" ✓" if (c.model, c.quant) in installed else ""),
            ("~" if not q.size_exact else "") + f"{q.size_bytes / GiB:.1f}",
            f"{c.estimated_bytes / GiB:.1f}",
            where,
            str(c.ctx),
            f"~{c.tok_s:.0f}" if c.tok_s else "-",
            style=style,
        )
    con.print(table)
    con.print("[dim]~ approximate file size   ✓ installed   (slow) fits but under the speed bar[/]")


def _print_choice(con, plan, hw, catalogue, settings, installed: set) -> None:
    if plan.choice is not None:
        m = catalogue.model(plan.choice.model)
        q = m.quants[plan.choice.quant]
        con.print(f"[bold]Choice:[/] {m.name} {plan.choice.quant}, context {plan.choice.ctx}, "
                  f"n_gpu_layers {plan.choice.n_gpu_layers}, embedder {plan.embedder} on {plan.embedder_device}")
        if (plan.choice.model, plan.choice.quant) not in installed:
            alias = m.aliases[0] if m.aliases else m.id
            con.print(f"Not installed yet: [bold]localrag models pull {alias}:{plan.choice.quant}[/] "
                      f"({'~' if not q.size_exact else ''}{fs(q.size_bytes)} download)")
        if q.size_bytes > hw.disk_free and not hw.simulated:
            con.print(f"[yellow]![/] the download needs {fs(q.size_bytes)} but only {fs(hw.disk_free)} is free "
                      f"in {settings.models_dir}")
    else:
        con.print("[bold red]No DeepSeek-R1 distill fits this machine.[/]")
    starters = [m for m in catalogue.starters if any((m.id, q) in installed for q in m.quants)]
    for m in starters:
        con.print(f"[dim]Starter {m.name} is installed (offline, not a reasoning model; for trying localrag).[/]")


def _print_reranker(con, settings, catalogue) -> None:
    rr = _reranker_json(settings, catalogue)
    if rr["in_use"]:
        con.print(f"[bold]Reranker:[/] {rr['in_use']} (search reranks its best {settings.retrieval.rerank_pool} candidates)",
                  highlight=False)
    elif rr["installed"]:
        con.print(f"[bold]Reranker:[/] {', '.join(rr['installed'])} installed, "
                  + ("off (\\[retrieval] rerank = false)" if not rr["enabled"] else f"but {settings.retrieval.reranker} is not"),
                  highlight=False)
    else:
        small = next((e for e in catalogue.rerankers if e.size_bytes < 500_000_000), None)
        tip = f" (optional: `localrag models pull {small.id}`)" if small else ""
        con.print(f"[dim]Reranker: none installed; search is hybrid dense + BM25 only{tip}[/]", highlight=False)
