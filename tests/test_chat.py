"""The chat REPL: commands, and a person driving it through a pseudo-terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from localrag.cli.chat import ChatLoop, parse_command

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
        from localrag.errors import LocalragError as UserError

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


def test_chat_through_a_terminal(tmp_path, minilm_zip, smollm2_gguf):
    """A person types a question, asks for /sources, mistypes a command, and leaves -- on the
    shipped sample, which the first `--kb sample` indexes by itself."""
    pexpect = pytest.importorskip("pexpect")
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[retrieval]\ntop_k = 3\n\n[generation]\nmax_answer_tokens = 16\n", encoding="utf-8")
    env = {
        **os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "PROMPT_TOOLKIT_NO_CPR": "1",
        "COLUMNS": "160", "LINES": "50", "TERM": "xterm",
    }
    child = pexpect.spawn(str(LOCALRAG), ["chat", "--kb", "sample"], env=env, encoding="utf-8", timeout=240,
                          dimensions=(50, 160))
    try:
        child.expect("/help for commands")
        child.expect("›")
        child.sendline("How do I import a model on an air-gapped machine?")
        child.expect("offline starter model")  # the answer's footer
        child.expect("›")
        child.sendline("/sources")
        child.expect(r"\[1\] installing-models-offline\.md")
        child.expect("›")
        child.sendline("/bogus")
        child.expect("unknown command /bogus")
        child.expect("›")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history = (home / "chat_history").read_text(encoding="utf-8")
    assert "air-gapped" in history and "/sources" in history


def test_chat_from_a_pipe(tmp_path, minilm_zip, smollm2_gguf):
    """No terminal: lines come from stdin, the chat still answers and ends at EOF."""
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[retrieval]\ntop_k = 2\n\n[generation]\nmax_answer_tokens = 8\n", encoding="utf-8")
    env = {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(LOCALRAG), "chat", "--kb", "sample"], input="What is localrag?\n/sources\n", capture_output=True,
        text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "offline starter model" in proc.stdout and "[1]" in proc.stdout
