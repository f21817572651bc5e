"""The chat REPL: commands, and a person driving it through a pseudo-terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from localrag.chat import ChatLoop, parse_command

REPO = Path(__file__).resolve().parent.parent
LOCALRAG = REPO / ".venv" / "bin" / "localrag"


def test_parse_command():
    assert parse_command("what is milvus?") is None
    assert parse_command("/kb  notes ").name == "kb" and parse_command("/kb  notes ").arg == "notes"
    assert parse_command("/EXIT").name == "exit"
    assert parse_command("//not a command") is None  # "//" escapes a leading slash


class RecordingUI:
    """Collects what the loop asks to be shown (the rendering itself is tested end to end)."""

    def __init__(self):
        self.lines: list[str] = []
        self.show_thinking = False

    def info(self, msg):
        self.lines.append(str(msg))

    def error(self, exc):
        self.lines.append(f"error: {exc.message}")

    def sources(self, result):
        self.lines.append(f"sources of {result!r}")

    def model_banner(self, info):
        self.lines.append("banner")

    def render(self, events):
        for ev in events:
            pass


class NoSession:
    """Commands that touch no model: the loop must not need one for them."""

    kb = "sample"
    last = None

    def __init__(self):
        self.resets = 0

    def reset(self):
        self.resets += 1

    def switch_kb(self, name):
        from localrag.console import UserError

        raise UserError(f"knowledge base '{name}' does not exist", hint="localrag kb list")


def test_commands_without_a_model(tmp_path):
    ui, session = RecordingUI(), NoSession()
    lines = ["/help", "/think", "/frobnicate", "/kb nope", "/reset", "/sources", "/exit", "/help"]
    ChatLoop(session, ui, history_path=tmp_path / "h", lines=lambda: iter(lines)).run()
    text = "\n".join(ui.lines)
    assert "/sources" in text and "/model" in text  # the help
    assert ui.show_thinking is True
    assert "unknown command /frobnicate" in text and "/help" in text
    assert "error: knowledge base 'nope' does not exist" in text  # an error does not end the chat
    assert session.resets == 1
    assert "sources of None" in text
    assert text.count("Ask a question") == 1  # nothing after /exit ran
