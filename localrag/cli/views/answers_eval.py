"""``localrag eval --answers QUESTIONS.jsonl``: ask every question with a real model and score the
answers (rag/evaluate.py): correct, cited, cited the evidence, abstained, language, timings.

Each question is asked fresh (its own conversation), through the public API as a front door
would. It runs for many minutes on a CPU: a progress bar on stderr says how far it is and how
it is going; ``--report FILE`` (or ``--json``) keeps every answer with its scores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from localrag.cli.console import stderr, stdout
from localrag.errors import BadInput, LocalragError

ROWS = (
    ("correct", "correct", "all keywords in the answer (answerable)"),
    ("cited", "cited", ">= 1 valid [n] citation"),
    ("cited_or_matched", "cited/matched", "cited, or sources matched by similarity"),
    ("cited_evidence", "cited evidence", "a cited source holds the evidence"),
    ("supported_evidence", "evidence cited/matched", ""),
    ("evidence_packed", "evidence in prompt", "the evidence was in the prompt at all"),
    ("false_not_found", "wrongly 'not in docs'", "on answerable questions"),
    ("lang_ok", "language ok", "answered in the question's language"),
)


def evaluate_answers(settings, questions_path: Path, *, kb: str, model: str | None, json_out: bool,
                     limit: int | None, report_path: Path | None, seed: int | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from localrag.api import LocalRAG
    from localrag.rag import evaluate as ev
    from localrag.rag.session import Sampling

    questions = ev.load_questions(questions_path)
    if limit:
        questions = questions[:limit]
    if report_path is not None:
        _check_report_path(report_path)
    err = stderr()
    started = time.time()
    tally = {"correct": 0, "graded": 0, "cited": 0}
    unsaved: list[str] = []
    with LocalRAG(settings) as rag:
        rag.retriever(kb)  # a missing KB fails now, not after the model loaded
        if not settings.llm_url:
            rag.pool.resolve(model)  # so does an unknown or uninstalled model (loads nothing)
        with Progress(
            TextColumn("[bold]answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("[dim]{task.fields[status]}"),
            console=err, transient=True, disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task("answering", total=len(questions), status="loading the model…")

            done: list = []

            def on_progress(i: int, n: int, score) -> None:
                done.append(score)
                if report_path is not None and not unsaved:  # a long run stopped early still leaves its answers
                    partial = ev.report(done, kb=kb, questions=str(questions_path), n=n, partial=i < n)
                    try:
                        report_path.write_text(json.dumps(partial, ensure_ascii=False, indent=1), encoding="utf-8")
                    except OSError as exc:  # a full disk must not end a run that is half done
                        unsaved.append(exc.strerror or str(exc))
                        err.print(f"[yellow]warning:[/] cannot write {report_path} ({unsaved[0]}); the run goes on "
                                  "and tries again at the end", highlight=False)
                tally["graded"] += score.correct is not None
                tally["correct"] += bool(score.correct)
                tally["cited"] += score.cited
                bar.update(task, completed=i, status=(
                    f"{tally['correct']}/{tally['graded']} correct · {tally['cited']}/{i} cited · "
                    f"last {score.id} {score.total_s:.0f} s"))
                if not err.is_terminal and not json_out:
                    err.print(f"[{i}/{n}] {score.id} correct={score.correct} cited={score.cited} "
                              f"ttft={score.ttft_s:.1f}s total={score.total_s:.1f}s", highlight=False)

            # A seed makes a run repeatable, so two settings can be compared on the same draws.
            sampling = Sampling(seed=seed) if seed is not None else None

            def ask(question: str):
                return rag.conversation(kb, model=model).ask(question, sampling=sampling)

            scores = ev.run(questions, ask, progress=on_progress)
        info = rag.pool.loaded
        embedder = rag.retriever(kb).embedder.id
        # What the answers were sampled with (the request's seed, the settings, the model card's),
        # so two reports say whether they are comparable.
        picked = (sampling or Sampling()).resolve(
            settings.generation, reasoning=info.reasoning, defaults=rag.pool.catalogue.defaults) if info else {}
    meta = {
        "kb": kb, "questions": str(questions_path), "n": len(questions), "embedder": embedder,
        "model": f"{info.id}:{info.quant}" if info else model, "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "source_tokens": getattr(settings.generation, "source_tokens", None), "seed": seed,
        "temperature": picked.get("temperature"), "top_p": picked.get("top_p"),
    }
    data = ev.report(scores, **meta)
    # The results are shown before the report is written: a report that cannot be written then
    # costs the file, not the minutes of answers.
    if json_out:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=1) + "\n")
    else:
        _table(data)
    if report_path is not None:
        try:
            report_path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        except OSError as exc:
            raise LocalragError(f"cannot write the report {report_path}: {exc.strerror or exc}") from exc
        if not json_out:
            stdout().print(f"[dim]per-question report: {report_path}[/]", highlight=False)
    return 1 if scores and all(s.error for s in scores) else 0  # nothing measured is a failed run


def _check_report_path(path: Path) -> None:
    """Refuse a report path that cannot be written before anything loads, not after the first answer."""
    if path.is_dir():
        raise BadInput(f"--report {path} is a folder", hint="give a file name, e.g. --report answers.json")
    if not path.parent.is_dir():
        raise BadInput(f"--report {path}: the folder {path.parent} does not exist")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise BadInput(f"--report {path}: not writable")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(data: dict) -> None:
    from rich.table import Table

    summary = data["summary"]
    cols = ["all"] + sorted(k for k in summary if k.startswith("lang:"))
    kinds = sorted(k for k in summary if k.startswith("kind:"))
    out = stdout()
    table = Table("", *[c.split(":")[-1] for c in cols], title=f"answers on '{data['kb']}' · {data['model']} · {data['embedder']}",
                  title_justify="left")
    table.add_row("n", *[str(summary[c]["n"]) for c in cols])
    if summary["all"]["errors"]:  # they count as misses below; say how many
        table.add_row("[red]failed with an error[/]", *[str(summary[c]["errors"]) for c in cols])
    for key, name, _ in ROWS:
        table.add_row(name, *[_fmt(summary[c][key]) for c in cols])
    table.add_row("abstained (unanswerable)", *[f"{summary[c]['abstained']}/{summary[c]['unanswerable']}" for c in cols])
    table.add_row("figure no source holds, left out", *[str(summary[c].get("withheld", 0)) for c in cols])
    table.add_row("no figure, no source's words, not shown", *[str(summary[c].get("unfounded", 0)) for c in cols])
    table.add_row("citation moved to the source holding it", *[str(summary[c].get("repointed", 0)) for c in cols])
    table.add_row("citation added after a copied sentence", *[str(summary[c].get("added_citations", 0)) for c in cols])
    table.add_row("median time to first token", *[f"{_fmt(summary[c]['median_ttft_s'])} s" for c in cols])
    table.add_row("median total", *[f"{_fmt(summary[c]['median_total_s'])} s" for c in cols])
    table.add_row("median prompt tokens", *[_fmt(summary[c]["median_prompt_tokens"]) for c in cols])
    out.print(table)
    kt = Table("kind", "n", "correct", "cited", "cited evidence", "abstained", title="by kind", title_justify="left")
    for k in kinds:
        row = summary[k]
        kt.add_row(k.split(":", 1)[1], str(row["n"]), _fmt(row["correct"]), _fmt(row["cited"]), _fmt(row["cited_evidence"]),
                   f"{row['abstained']}/{row['unanswerable']}" if row["unanswerable"] else "-")
    out.print(kt)
    errors = [q for q in data["questions"] if q["error"]]
    for q in errors[:10]:
        out.print(f"[red]error[/] {q['id']}: {q['error']}", highlight=False)
