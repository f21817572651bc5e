"""The CLI as a user meets it first: help is instant because nothing heavy is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "torch", "llama_cpp", "pymilvus", "sentence_transformers", "transformers", "milvus_lite",
    # document parsers (kb/parse.py, kb/formats/) load only when a file needs them
    "pypdfium2", "docx", "pptx", "openpyxl", "rapidocr", "onnxruntime", "cv2", "PIL", "bs4", "lxml",
    "localrag.kb.formats.office", "localrag.kb.formats.sheets", "localrag.kb.formats.mail",
    "localrag.kb.formats.epub", "localrag.kb.formats.structured", "localrag.kb.formats.ocr",
)

PROBE = """
import sys
from typer.testing import CliRunner
from localrag.cli.app import app
result = CliRunner().invoke(app, sys.argv[1:])
import json
print(json.dumps({"code": result.exit_code, "heavy": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


@pytest.mark.parametrize(
    "args",
    [["--help"], ["doctor", "--help"], ["models", "--help"], ["ingest", "--help"], ["search", "--help"],
     ["ask", "--help"], ["chat", "--help"], ["kb", "--help"], ["eval", "--help"]],
)
def test_help_imports_no_heavy_library(args):
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["heavy"] == []


def test_unknown_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "localrag", "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "no-such-command" in out.stderr
