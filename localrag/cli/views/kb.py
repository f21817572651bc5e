"""Knowledge-base commands: ingest/sync, kb list|info|rm, search, eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from localrag.errors import BadInput, LocalragError
from localrag.cli.console import stderr, stdout
from localrag.units import format_size

# Documented in `localrag ingest --help`: some files could not be ingested (the rest went in).
EXIT_SKIPPED = 3


def _human(n: int | None) -> str:
    return "-" if n is None else format_size(n)


def ingest(settings, paths: list[Path], *, kb: str = "default", prune: bool = False, embedder: str | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rich.markup import escape

    from localrag.api import LocalRAG

    err = stderr()
    out = stdout()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[chunks]} chunks · {task.fields[rate]:.0f}/s"),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[current]}"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("scanning", total=None, chunks=0, rate=0.0, current="")

        def on_progress(p) -> None:
            bar.update(
                task,
                description="ingesting" if p.phase == "ingest" else p.phase,
                total=p.files_total or None,
                completed=p.files_done,
                chunks=p.chunks,
                rate=p.chunks_per_s,
                current=p.current[-50:],
            )

        with LocalRAG(settings) as rag:
            report = rag.ingest(list(paths), kb=kb, prune=prune, embedder=embedder, progress=on_progress)

    if report.note:
        err.print(f"[yellow]note:[/] {report.note}", highlight=False)
    if report.recovered:
        err.print(f"[yellow]recovered:[/] {report.recovered} file(s) left half-written by an interrupted run were redone")
    if report.unread_pages:
        err.print(
            f"[yellow]note:[/] {report.unread_pages} page(s) had no text layer (scans, images); "
            "install localrag\\[ocr] to read them",
            highlight=False,
        )
    counts = report.summary()
    parts = [f"[green]{counts['added']} added[/]", f"{counts['updated']} updated", f"{counts['unchanged']} unchanged"]
    if prune or counts["removed"]:
        parts.append(f"{counts['removed']} removed")
    parts.append(f"[{'red' if counts['skipped'] else 'dim'}]{counts['skipped']} skipped[/]")
    out.print(
        f"[bold]{kb}[/]: " + ", ".join(parts) + f" · {report.chunks_written} chunks written in {report.elapsed:.1f}s "
        f"[dim](embedder {report.embedder})[/]",
        highlight=False,
    )
    skipped = [o for o in report.outcomes if o.status == "skipped"]
    for o in skipped[:50]:
        out.print(f"  [red]skipped[/] {escape(o.source)}: {escape(o.reason)}", highlight=False, markup=True)
    if len(skipped) > 50:
        out.print(f"  … and {len(skipped) - 50} more skipped")
    return EXIT_SKIPPED if skipped else 0


def _kb_summary(settings, name: str) -> dict:
    from localrag.api import LocalRAG

    with LocalRAG(settings) as rag:
        return rag.kb_info(name).to_dict()


def kb_list(settings, *, json_out: bool = False) -> int:
    from rich.table import Table

    from localrag.kb.index import list_kbs

    rows = []
    for name in list_kbs(settings):
        try:
            rows.append(_kb_summary(settings, name))
        except LocalragError as exc:  # one busy or broken KB must not hide the others
            rows.append({"name": name, "error": exc.message})
    if json_out:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    out = stdout()
    if not rows:
        out.print("No knowledge bases yet. Create one with [bold]localrag ingest PATH[/].")
        return 0
    table = Table("name", "files", "chunks", "embedder", "dim", "size", "updated")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "-", "-", f"[red]{r['error']}[/]", "-", "-", "-")
        else:
            table.add_row(r["name"], str(r["files"]), str(r["chunks"]), r["embedder"], str(r["dimensions"]), _human(r["size_bytes"]), r["updated"])
    out.print(table)
    return 0


def kb_info(settings, name: str = "default", *, json_out: bool = False) -> int:
    info = _kb_summary(settings, name)
    if json_out:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    out = stdout()
    out.print(f"[bold]{info['name']}[/]")
    for key, label in (
        ("files", "files"),
        ("chunks", "chunks"),
        ("embedder", "embedder"),
        ("dimensions", "dimensions"),
        ("created", "created"),
        ("updated", "updated"),
        ("backend", "stored in"),
    ):
        out.print(f"  {label:<11} {info[key]}", highlight=False)
    out.print(f"  {'size':<11} {_human(info['size_bytes'])}", highlight=False)
    if info["filetypes"]:
        out.print(f"  {'file types':<11} " + ", ".join(f"{k} {v}" for k, v in sorted(info["filetypes"].items())), highlight=False)
    for root in info["roots"]:
        out.print(f"  {'from':<11} {root}", highlight=False)
    return 0


def kb_rm(settings, name: str, *, yes: bool = False) -> int:
    from localrag.api import LocalRAG
    from localrag.errors import KBNotFound
    from localrag.kb.index import validate_name

    validate_name(name)
    rag = LocalRAG(settings)
    if name not in rag.knowledge_bases():
        raise KBNotFound(f"knowledge base '{name}' does not exist", hint="See which knowledge bases exist.", remedy="list_kbs")
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput(f"refusing to delete '{name}' without confirmation", hint="Add --yes to delete it.")
        from rich.prompt import Confirm

        if not Confirm.ask(f"Delete knowledge base '{name}'? The documents themselves are not touched", default=False):
            stdout().print("kept")
            return 1
    rag.remove_kb(name)
    stdout().print(f"deleted knowledge base [bold]{name}[/]")
    return 0


def search(
    settings,
    query: str,
    *,
    kb: str = "default",
    k: int = 5,
    glob: str | None = None,
    filetypes: list[str] | None = None,
    json_out: bool = False,
) -> int:
    from localrag.api import LocalRAG

    if k < 1:
        raise BadInput("-k must be at least 1")
    with LocalRAG(settings) as rag:
        hits = rag.search(query, kb=kb, k=k, glob=glob, filetypes=filetypes)
    if json_out:
        print(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return 0
    out = stdout()
    if not hits:
        out.print("[yellow]no matching chunks[/]")
        return 0
    from rich.markup import escape

    for h in hits:
        where = h.source + (f" p.{h.page}" if h.page is not None else "")
        scores = f"score {h.score:.4f} · cos {h.dense_score:.3f}" if h.dense_score is not None else f"score {h.score:.4f}"
        if h.sparse_score is not None:
            scores += f" · bm25 {h.sparse_score:.2f}"
        out.print(f"[bold cyan]{h.rank}.[/] [bold]{escape(where)}[/] [dim]{escape(h.heading)}[/]  [dim]{scores}[/]", highlight=False)
        snippet = " ".join(h.text.split())
        out.print("   " + escape(snippet[:300] + ("…" if len(snippet) > 300 else "")), highlight=False)
    return 0


def evaluate(settings, questions: Path, *, kb: str = "default", json_out: bool = False) -> int:
    from rich.table import Table

    from localrag.api import LocalRAG
    from localrag.kb import evaluate as eval_mod

    qs = eval_mod.load_questions(questions)
    err = stderr()
    with LocalRAG(settings) as rag:
        retriever = rag.retriever(kb)
        with err.status("evaluating…") if err.is_terminal and not json_out else _null():
            scores, results = eval_mod.evaluate(retriever, qs)
        embedder = retriever.index.record.embedder
    if json_out:
        print(
            json.dumps(
                {
                    "kb": kb,
                    "embedder": embedder,
                    "scores": scores,
                    "questions": [r.__dict__ for r in results],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    table = Table("lang", "n", *[f"hit@{k}" for k in eval_mod.KS], "MRR", title=f"retrieval on '{kb}' ({embedder})")
    for lang, row in scores.items():
        table.add_row(lang, str(row["n"]), *[f"{row[f'hit@{k}']:.3f}" for k in eval_mod.KS], f"{row['mrr']:.3f}")
    out = stdout()
    out.print(table)
    misses = [r for r in results if not r.rank or r.rank > 5]
    if misses:
        out.print("[dim]not in the top 5: " + ", ".join(f"{r.id}" + (f" (#{r.rank})" if r.rank else "") for r in misses) + "[/]")
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
