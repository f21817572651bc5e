"""``localrag ask`` and ``localrag chat``: render the answer stream, sources and timings.

The reasoning is shown apart from the answer: by default one status line with its token count
("thought for 312 tokens (4.1 s)"), in full with --show-thinking or /think. Progress and loading
messages go to stderr so stdout carries only the answer (and JSON with --json).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from localrag.errors import LocalragError
from localrag.cli.console import hint_lines, stderr, stdout

STARTER_NOTE = (
    "Answered by the offline starter model {name} — it is tiny and its answers are weak. "
    "For real answers get a DeepSeek-R1 distill: `localrag models pull` (downloads the one that fits "
    "this machine) or, offline, `localrag models import FILE.gguf`."
)
# The real 1.5B starter: its answers are worth reading, but it does not reason first.
REAL_STARTER_NOTE = (
    "Answered by the offline starter {name}, not a reasoning model. A DeepSeek-R1 distill thinks "
    "before it answers: `localrag models pull` (or, offline, `localrag models import FILE.gguf`)."
)
TINY_PARAMS = 0.5e9


class AnswerView:
    """Renders a ``Session.ask`` event stream to a person."""

    def __init__(self, console: Console, *, show_thinking: bool, verbose: bool, err: Console | None = None):
        self.console = console
        self.err = err or stderr()
        self.show_thinking = show_thinking
        self.verbose = verbose

    # -- status -------------------------------------------------------------------------

    def progress(self, message: str) -> None:
        self.err.print(f"[dim]{message}…[/]", highlight=False)

    def info(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def error(self, exc: LocalragError) -> None:
        self.err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        for line in hint_lines(exc):
            self.err.print(f"[dim]{line}[/]", highlight=False)

    def model_banner(self, info, console=None) -> None:
        if info is None:
            return
        where = f"{info.n_gpu_layers} layers on GPU" if info.n_gpu_layers else "CPU"
        (console or self.err).print(
            f"[dim]model {info.name} {info.quant} · ctx {info.n_ctx} · {where} · loaded in {info.load_s:.1f} s[/]",
            highlight=False,
        )
        if info.note and not info.starter:
            (console or self.err).print(f"[yellow]note:[/] {info.note}", highlight=False)

    # -- the answer ---------------------------------------------------------------------

    def render(self, events: Iterator) -> object:
        """Stream thinking and answer live; return the AnswerResult."""
        from localrag.rag import answer_text

        thinking: list[str] = []
        answer: list[str] = []
        think_tokens = 0
        think_start = think_end = None
        valid: set[int] = set()
        result = None
        state = {"phase": "wait", "reading": " reading the sources…"}
        started = time.perf_counter()

        def view():
            parts = []
            if thinking or state["phase"] == "thinking":
                secs = (think_end or time.perf_counter()) - (think_start or started)
                if self.show_thinking:
                    parts.append(
                        Panel(
                            Text("".join(thinking).strip(), style="dim italic"),
                            title=f"thinking · {think_tokens} tokens · {secs:.1f} s",
                            title_align="left",
                            border_style="dim",
                        )
                    )
                elif state["phase"] == "thinking":
                    parts.append(Spinner("dots", Text(f" thinking… {think_tokens} tokens ({secs:.1f} s)", style="dim")))
                else:
                    parts.append(Text(f"thought for {think_tokens} tokens ({secs:.1f} s)", style="dim"))
            elif state["phase"] == "loading":
                parts.append(Spinner("dots", Text(" loading the model…", style="dim")))
            elif state["phase"] == "wait":
                parts.append(Spinner("dots", Text(state["reading"], style="dim")))
            if answer:
                text, _, _ = answer_text.clean_citations("".join(answer), valid)
                parts.append(Markdown(text))
            return Group(*parts)

        with Live(view(), console=self.console, refresh_per_second=8, vertical_overflow="visible",
                  transient=False) as live:
            for ev in events:
                if ev.kind == "loading":
                    state["phase"] = "loading"
                elif ev.kind == "loaded":
                    state["phase"] = "wait"
                    # Printed through the live display, or the spinner's line and the note collide.
                    self.model_banner(ev.info, console=live.console)
                elif ev.kind == "retrieved":
                    valid = set(ev.valid) if getattr(ev, "valid", None) else {s.n for s in ev.packing.sources}
                    if getattr(ev, "rendered", ""):
                        live.console.print(f"[dim]also searched as:[/] {escape(ev.rendered)}", highlight=False)
                    self._left_out_note(ev.packing, console=live.console)
                    state["reading"] = reading_line(ev)
                elif ev.kind == "thinking":
                    if think_start is None:
                        think_start = time.perf_counter()
                    state["phase"] = "thinking"
                    thinking.append(ev.text)
                    think_tokens = max(think_tokens + 1, ev.tokens)
                elif ev.kind == "answer":
                    if state["phase"] == "thinking":
                        think_end = time.perf_counter()
                    state["phase"] = "answer"
                    answer.append(ev.text)
                elif ev.kind == "done":
                    result = ev.result
                    if think_start is not None and think_end is None:
                        think_end = time.perf_counter()
                    if result is not None:
                        think_tokens = result.timings.thinking_tokens or think_tokens
                        answer[:] = [result.answer]
                    state["phase"] = "done"
                live.update(view())
            live.update(view())
        if result is not None:
            self._footer(result)
        return result

    def _left_out_note(self, packing, console=None) -> None:
        if packing is not None and getattr(packing, "unmentioned", None):
            terms = ", ".join(f'"{t}"' for t in packing.unmentioned)
            (console or self.err).print(
                f"[yellow]note:[/] {escape(f'no document in the knowledge base mentions {terms}')}", highlight=False
            )
        if packing is None or not packing.left_out:
            return
        by_reason: dict[str, list[str]] = {}
        for lo in packing.left_out:
            by_reason.setdefault(lo.reason, []).append(_where(lo.source, lo.page, lo.heading))
        for reason, where in by_reason.items():
            names = "; ".join(dict.fromkeys(where))
            if reason == "over the prompt budget":
                why = (f"to keep to the source budget ({len(packing.sources)} kept, {packing.tokens} tokens; "
                       f"--source-tokens or [generation] source_tokens reads more, and waits longer)")
            else:
                why = f"({reason})"
            # the reason and the file names are text, not markup: "[generation]" must print as is
            (console or self.err).print(
                f"[yellow]note:[/] {escape(f'{len(where)} retrieved passage(s) left out {why}: {names}')}",
                highlight=False,
            )

    def _footer(self, result) -> None:
        c = self.console
        c.print()
        if result.dropped_citations:
            nums = ", ".join(f"[{n}]" for n in result.dropped_citations)
            c.print(
                Text(f"removed citation(s) {nums}: the model cited sources that do not exist", style="yellow")
            )
        for old, new in getattr(result, "repointed", []):
            c.print(Text(f"citation [{old}] changed to [{new}]: the sentence's words are in source [{new}], "
                         f"not in [{old}]", style="yellow"))
        for n in getattr(result, "added_citations", []):
            c.print(Text(f"citation [{n}] added after a sentence copied from source [{n}] (the model cited another "
                         "or none)", style="yellow"))
        if result.citations:
            c.print(Text("Sources", style="bold"))
            for cit in result.citations:
                line = Text(f" [{cit.n}] ", style="cyan")
                line.append(_where(cit.source, cit.page, cit.heading))
                c.print(line)
        elif getattr(result, "matched", None):
            c.print(Text("Sources matched to the answer", style="bold") +
                    Text(" (the answer wrote no [n]; these sources say what its sentences say)", style="dim"))
            for cit in result.matched:
                line = Text(f" ~{cit.n} ", style="cyan")
                line.append(_where(cit.source, cit.page, cit.heading))
                c.print(line)
        elif result.sources and not result.not_found:
            c.print(Text("The answer cites no source. It was given:", style="yellow"))
            for s in result.sources:
                c.print(Text(f" [{s.n}] {s.location}", style="dim"))
        quoted = getattr(result, "figure_quotes", [])
        if quoted:
            c.print(Text("Figures, as the sources give them", style="bold"))
            listed = {cit.n for cit in result.citations}
            given = {s.n: s for s in result.sources}
            for q in quoted:
                line = Text(f" {q.figure} ", style="bold")
                line.append(f"[{q.n}] ", style="cyan")
                line.append(f"“{q.quote}”", style="dim")
                if q.n not in listed and q.n in given:  # a source the list above does not name
                    line.append(f" ({given[q.n].location})", style="dim")
                c.print(line)
        m = result.model
        if m is not None and m.starter and not result.not_found:
            note = STARTER_NOTE if m.params < TINY_PARAMS else REAL_STARTER_NOTE
            c.print(Text(note.format(name=m.name), style="yellow"))
        if result.stop_reason == "length":
            c.print(Text("(the answer hit the length limit and was cut)", style="yellow"))
        if self.verbose:
            c.print(timings_table(result))

    def sources(self, result) -> None:
        """/sources: everything the last answer was given, cited or not, with a snippet."""
        if result is None:
            self.info("[dim]no answer yet[/]")
            return
        if not result.sources:
            self.info("[dim]the last answer had no sources[/]")
            return
        cited = {c.n for c in result.citations}
        matched = {c.n for c in getattr(result, "matched", [])}
        for s in result.sources:
            mark = "cited" if s.n in cited else "matched by similarity" if s.n in matched else "not cited"
            if s.cut:
                mark += ", shortened to fit"
            self.console.print(Text(f"[{s.n}] {s.location}  ({mark})", style="bold" if s.n in cited else ""))
            snippet = " ".join(s.text.split())
            self.console.print(Text("    " + (snippet[:300] + ("…" if len(snippet) > 300 else "")), style="dim"))
        for lo in result.left_out:
            self.console.print(Text(f"    left out: {_where(lo.source, lo.page, lo.heading)} ({lo.reason})", style="yellow"))


def reading_line(ev) -> str:
    """What the wait before the first token buys: "reading 1,900 tokens of 4 sources, ~24 s"."""
    n = len(ev.packing.sources)
    tokens = getattr(ev, "prompt_tokens", 0) or 0
    if not tokens:
        return " reading the sources…"
    what = f" of {n} source{'s' if n != 1 else ''}" if n else ""
    secs = getattr(ev, "prefill_s", 0.0) or 0.0
    eta = f", ~{secs:.0f} s" if secs >= 1 else ""
    return f" reading {tokens:,} tokens{what}{eta}…"


def _where(source: str, page, heading: str) -> str:
    parts = [source]
    if page is not None:
        parts.append(f"p. {page}")
    if heading:
        parts.append(heading)
    return " · ".join(parts)


def timings_table(result) -> Table:
    t = result.timings
    table = Table(title="where the time went", title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="dim")
    table.add_column(justify="right")
    table.add_column(style="dim")
    if t.render_s:
        table.add_row("translate question", f"{t.render_s:.2f} s", "for the search: the documents are mostly in another language")
    table.add_row("retrieve", f"{t.retrieve_s:.2f} s", result.query if result.query != result.question else "")
    if not result.not_found:
        new = t.prompt_tokens - t.cached_tokens
        table.add_row(
            "read prompt", f"{t.prompt_s:.2f} s",
            f"{t.prompt_tokens} tokens ({t.cached_tokens} cached, {new} new) at {t.prompt_tok_s:.0f} tok/s",
        )
        table.add_row("first token", f"{t.ttft_s:.2f} s", "after the prompt was built")
        if t.thinking_tokens:
            table.add_row("thinking", f"{t.thinking_s:.2f} s", f"{t.thinking_tokens} tokens")
        table.add_row("answer", f"{t.answer_s:.2f} s", f"{t.gen_tokens} tokens generated in all at {t.gen_tok_s:.1f} tok/s")
    table.add_row("total", f"{t.total_s:.2f} s", "")
    return table


# --- commands ----------------------------------------------------------------------------


def _open(settings, kb: str, progress):
    """The API object; the shipped sample KB is indexed the first time someone asks it."""
    from localrag.api import SAMPLE_KB, LocalRAG

    rag = LocalRAG(settings)
    try:
        if kb == SAMPLE_KB:
            rag.ensure_sample(progress)
    except BaseException:
        rag.close()
        raise
    return rag


def _open_session(rag, kb: str, view: AnswerView, *, model: bool):
    """The knowledge base (and, for chat, the model) loaded before the first question."""
    session = rag.conversation(kb, progress=view.progress)
    with view.err.status("[dim]loading…[/]", spinner="dots"):
        session.ensure_loaded(model=model)
    if model:
        view.model_banner(session.info)
    return session


def ask(settings, question: str, *, kb: str, json_out: bool, show_thinking: bool, verbose: bool) -> int:
    if json_out:
        with _open(settings, kb, None) as rag:
            session = rag.conversation(kb)
            result = None
            for ev in session.ask(question):
                if ev.kind == "done":
                    result = ev.result
            data = result.to_json()
            if session.info is not None and session.info.note:
                data["note"] = session.info.note
            sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
            return 0

    view = AnswerView(stdout(), show_thinking=show_thinking, verbose=verbose)
    with _open(settings, kb, view.progress) as rag:
        session = _open_session(rag, kb, view, model=False)
        view.render(session.ask(question))
    return 0


def chat(settings, *, kb: str, show_thinking: bool, verbose: bool) -> int:
    from localrag.cli.chat import ChatLoop

    view = AnswerView(stdout(), show_thinking=show_thinking, verbose=verbose)
    with _open(settings, kb, view.progress) as rag:
        session = _open_session(rag, kb, view, model=True)
        ChatLoop(session, view, history_path=settings.home / "chat_history").run()
    return 0
