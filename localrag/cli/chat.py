"""The interactive chat loop: input with history, slash commands, answers through ``answer.Session``.

Input comes from prompt_toolkit (line editing, a persistent history file under the data dir) when
stdin is a terminal, and from plain lines otherwise, so ``echo "question" | localrag chat`` works
too. Rendering is the caller's ``ui`` object (the view), so this module decides what happens and
never how it looks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from localrag.errors import LocalragError

HELP = """\
Ask a question, or type a command:
  /help          this help
  /sources       the sources of the last answer, with snippets
  /think         show or hide the model's reasoning
  /kb NAME       switch to another knowledge base (starts a new conversation)
  /model ID[:Q]  switch the model, e.g. /model r1-distill-qwen-7b:Q4_K_M
  /reset         start a new conversation (forget earlier questions)
  /exit          quit (also /quit, Ctrl-D)
Ctrl-C stops an answer being written."""


@dataclass(frozen=True)
class Command:
    name: str
    arg: str


def parse_command(line: str) -> Command | None:
    """``/kb notes`` -> Command("kb", "notes"); a line not starting with "/" is a question."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    return Command(name.strip().lower(), arg.strip())


def _terminal_lines(history_path: Path) -> Iterator[str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    try:
        history_path.parent.mkdir(parents=True, exist_ok=True)
        history = FileHistory(str(history_path))
    except OSError:
        history = InMemoryHistory()  # a read-only data dir costs only the saved history
    session = PromptSession(history=history)
    while True:
        try:
            yield session.prompt("› ")
        except KeyboardInterrupt:
            continue  # like a shell: Ctrl-C clears the line
        except EOFError:
            return


def _plain_lines(stream) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\n")


def input_lines(history_path: Path, stdin=None) -> Iterator[str]:
    stdin = stdin or sys.stdin
    if stdin.isatty() and sys.stdout.isatty():
        return _terminal_lines(history_path)
    return _plain_lines(stdin)


class ChatLoop:
    """Reads lines, runs commands, asks questions. ``ui`` is views.answer.AnswerView."""

    def __init__(self, session, ui, *, history_path: Path, lines: Callable[[], Iterator[str]] | None = None):
        self.session = session
        self.ui = ui
        self.history_path = history_path
        self.lines = lines or (lambda: input_lines(history_path))

    def run(self) -> None:
        self.ui.info(f"[dim]knowledge base '{self.session.kb}' · /help for commands · /exit to quit[/]")
        for line in self.lines():
            if not line.strip():
                continue
            try:
                if not self.handle(line):
                    return
            except LocalragError as exc:
                self.ui.error(exc)

    def handle(self, line: str) -> bool:
        """Run one line; False when the chat should end."""
        cmd = parse_command(line)
        if cmd is None:
            self.ask(line.strip().removeprefix("/") if line.strip().startswith("//") else line)
            return True
        name, arg = cmd.name, cmd.arg
        if name in {"exit", "quit", "q"}:
            return False
        if name in {"help", "h", "?"}:
            self.ui.info(HELP)
        elif name == "sources":
            self.ui.sources(self.session.last)
        elif name == "think":
            self.ui.show_thinking = not self.ui.show_thinking
            self.ui.info(f"[dim]reasoning is {'shown in full' if self.ui.show_thinking else 'folded into one line'}[/]")
        elif name == "kb":
            if not arg:
                self.ui.info(f"[dim]knowledge base: {self.session.kb} (switch with /kb NAME)[/]")
            else:
                self.session.switch_kb(arg)
                self.ui.info(f"[dim]switched to knowledge base '{arg}'; new conversation[/]")
        elif name == "model":
            if not arg:
                info = self.session.info
                self.ui.info(f"[dim]model: {info.id}:{info.quant} (switch with /model ID[:QUANT])[/]")
            else:
                self.session.switch_model(arg)
                self.ui.model_banner(self.session.info)
        elif name in {"reset", "new", "clear"}:
            self.session.reset()
            self.ui.info("[dim]new conversation[/]")
        else:
            self.ui.info(f"[yellow]unknown command /{name}[/] — type /help for the commands")
        return True

    def ask(self, question: str) -> None:
        try:
            self.ui.render(self.session.ask(question))
        except KeyboardInterrupt:
            # The half-written answer is not kept: the conversation stays as it was.
            self.ui.info("[yellow]stopped[/]")
