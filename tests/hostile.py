"""A corpus of hostile (and a few good) files, for the files/parse tests and the ingest tests.

``build_hostile_corpus(dir)`` writes the files under ``dir`` and returns, per file name (the path
relative to ``dir``, posix, as ``files.FileEntry.rel`` shows it), what must happen to it:

* ``ok``          discover yields a FileEntry and parse_file reads it (``text`` is in its text)
* ``skipped``     discover yields Skipped with ``reason`` in its reason
* ``parse_error`` discover yields a FileEntry, parse_file raises ParseError with ``reason`` in it
* ``ignored``     discover says nothing (hidden files, tool folders, duplicates through links)

Everything is built in well under a second; the 100 MB file is sparse.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DEBIAN_EN = SHARED / "corpora/debian-reference/debian-reference.en.pdf"
DEBIAN_ZH = SHARED / "corpora/debian-reference/debian-reference.zh-cn.pdf"

# sentences known to be on the pages copied below (1-based page 42 / 44 of the PDFs)
DEBIAN_EN_SENTENCE = "A named pipe is a file that acts like a pipe."
DEBIAN_ZH_PHRASE = "tmpfs是一个临时文件系统，它的文件都保存在虚拟内存中。"

GBK_TEXT = "向量数据库用于存储和检索嵌入向量。Milvus 支持多种索引类型，例如 HNSW 和 IVF_FLAT。\n"
MARKDOWN = """---
title: Hostile corpus guide
tags: [test]
---

# Installing the widget

The widget installs with one command.

## On Linux

Run the installer:

```bash
# this is not a heading
./install.sh --prefix /opt/widget
```

| option | meaning |
|---|---|
| --prefix | where it goes |

## On macOS

Use the disk image.
"""
HTML = """<!doctype html>
<html><head><title>Widget manual</title><style>body { color: red }</style>
<script>var tracking = "do not index me";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/docs">Docs</a></nav>
<main>
<h1>Widget manual</h1>
<p>The widget reads <b>configuration</b> from <code>/etc/widget.conf</code>.</p>
<h2>Options</h2>
<table><tr><th>name</th><th>default</th></tr><tr><td>verbose</td><td>false</td></tr></table>
<pre>widget --verbose
widget --quiet</pre>
</main>
<footer>Copyright nobody</footer>
</body></html>
"""


@dataclass(frozen=True)
class Expected:
    outcome: str  # "ok" | "skipped" | "parse_error" | "ignored"
    reason: str | None = None  # substring of the one-line reason
    text: str | None = None  # substring of the parsed text (outcome "ok")


def _pdf_pages(src: Path, pages: list[int]) -> bytes:
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(str(src))
    new = pdfium.PdfDocument.new()
    new.import_pages(source, pages)
    buf = io.BytesIO()
    new.save(buf)
    new.close()
    source.close()
    return buf.getvalue()


def _docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Widget handbook", level=0)
    document.add_heading("Setup", level=1)
    document.add_paragraph("Plug the widget in and wait for the green light.")
    document.add_heading("Network", level=2)
    document.add_paragraph("The widget asks for an address over DHCP.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "port"
    table.cell(0, 1).text = "8080"
    table.cell(1, 0).text = "protocol"
    table.cell(1, 1).text = "http"
    document.save(str(path))


def _encrypted_pdf(plain: bytes, path: Path, user_password: str) -> None:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=io.BytesIO(plain))
    writer.encrypt(user_password, "owner-secret")
    with open(path, "wb") as fh:
        writer.write(fh)


def build_hostile_corpus(root: Path) -> dict[str, Expected]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Expected] = {}

    def write(name: str, data: bytes | str, expected: Expected) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        out[name] = expected
        return path

    # --- good files
    write("good.md", MARKDOWN, Expected("ok", text="./install.sh --prefix /opt/widget"))
    write("good.txt", "Plain notes.\n\nThe backup runs at 02:00 every night.\n", Expected("ok", text="02:00"))
    write("good.html", HTML, Expected("ok", text="/etc/widget.conf"))
    _docx(root / "good.docx")
    out["good.docx"] = Expected("ok", text="8080")
    en_pages = _pdf_pages(DEBIAN_EN, [40, 41, 42])
    write("debian-en.pdf", en_pages, Expected("ok", text=DEBIAN_EN_SENTENCE))
    write("debian-zh.pdf", _pdf_pages(DEBIAN_ZH, [42, 43]), Expected("ok", text=DEBIAN_ZH_PHRASE))
    write("bom-utf8.txt", "\ufeffcafé au lait\n".encode("utf-8"), Expected("ok", text="café au lait"))
    write("utf16.txt", "UTF-16 text: naïve 向量\n".encode("utf-16"), Expected("ok", text="naïve 向量"))
    write("gbk.txt", GBK_TEXT.encode("gbk"), Expected("ok", text="向量数据库用于存储和检索嵌入向量"))
    write("gb18030.md", ("# 标题\n\n" + GBK_TEXT).encode("gb18030"), Expected("ok", text="HNSW"))
    write(
        "invalid-utf8.txt",
        "Naïve café notes, 向量. ".encode() * 20 + b"\xff\xfe\xc3(" + " and after the bad bytes.".encode(),
        Expected("ok", text="after the bad bytes"),
    )
    write("latin1.txt", "Un café très serré.\n".encode("cp1252"), Expected("ok", text="café très"))
    write("README", "An extensionless text file.\n", Expected("ok", text="extensionless"))

    # --- odd names: all readable
    write("with space.md", "# Spaced\n\nA name with spaces.\n", Expected("ok", text="spaces"))
    write("ünïcødé 文档.md", "# Unicode\n\nA unicode name.\n", Expected("ok", text="unicode name"))
    write("new\nline.txt", "A newline in the name.\n", Expected("ok", text="newline in the name"))
    long_name = "l" * 240 + ".txt"
    write(long_name, "A very long name.\n", Expected("ok", text="very long name"))
    raw = os.fsencode(str(root)) + b"/caf\xe9-latin1.txt"
    with open(raw, "wb") as fh:
        fh.write(b"A name that is not UTF-8.\n")
    out["caf\\xe9-latin1.txt"] = Expected("skipped", "name is not valid UTF-8")
    os.mkdir(os.fsencode(str(root)) + b"/dossier-\xe9t\xe9")
    with open(os.fsencode(str(root)) + b"/dossier-\xe9t\xe9/note.md", "wb") as fh:
        fh.write(b"# inside a Latin-1 named folder\n")
    out["dossier-\\xe9t\\xe9"] = Expected("skipped", "folder name is not valid UTF-8")

    # --- hostile files that discover rejects
    write("empty.txt", b"", Expected("skipped", "empty file"))
    write("binary.txt", bytes(range(256)) * 64, Expected("skipped", "binary content"))
    # an image is read by OCR; this one cannot be decoded (or, without localrag[ocr], not read)
    write("image.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, Expected("parse_error", "image"))
    write("archive.zip", b"PK\x05\x06" + b"\x00" * 18, Expected("skipped", "unsupported file type .zip"))
    write("old.doc", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 504, Expected("skipped", "save it as .docx"))
    write("fake.pdf", "just text, no PDF here\n", Expected("skipped", "not a PDF"))
    write("fake.docx", "not a zip\n", Expected("skipped", "not a DOCX"))
    huge = root / "huge.txt"
    with open(huge, "wb") as fh:
        fh.write(b"The start of a very large log.\n")
        fh.truncate(100 * 1024 * 1024)  # sparse: instant, no disk used
    out["huge.txt"] = Expected("skipped", "too large")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    out["loop-a"] = Expected("skipped", "symlink loop")
    out["loop-b"] = Expected("skipped", "symlink loop")
    (root / "sub").mkdir()
    write("sub/inner.md", "# Inner\n\nA file in a folder.\n", Expected("ok", text="A file in a folder"))
    os.symlink("..", root / "sub" / "up")  # a folder link back to an ancestor
    out["sub/up"] = Expected("skipped", "symlink loop")
    os.symlink("good.txt", root / "link-to-good.txt")  # the same file twice: listed once
    out["link-to-good.txt"] = Expected("ignored")
    os.symlink("does-not-exist.md", root / "dangling.md")
    out["dangling.md"] = Expected("skipped", "broken symlink")
    unreadable = write("unreadable.txt", "secret\n", Expected("skipped", "permission denied"))
    os.chmod(unreadable, 0)
    try:  # root (and CAP_DAC_OVERRIDE) reads through chmod 000
        with open(unreadable, "rb"):
            out["unreadable.txt"] = Expected("ok", text="secret")
    except PermissionError:
        pass

    # --- folders
    write(".git/config", "[core]\n", Expected("ignored"))
    write("node_modules/pkg/readme.md", "# pkg\n", Expected("ignored"))
    write(".hidden.md", "# hidden file\n", Expected("ignored"))
    write(".notes/todo.md", "# todo\n", Expected("ignored"))
    out[".notes"] = Expected("skipped", "hidden folder")

    # --- hostile files that only the parser can judge
    write("truncated.pdf", en_pages[: len(en_pages) // 2], Expected("parse_error", "truncated PDF"))
    _encrypted_pdf(en_pages, root / "encrypted.pdf", "user-secret")
    out["encrypted.pdf"] = Expected("parse_error", "encrypted PDF (password required)")
    # an owner password only (no user password) opens in every reader: it is not an error
    _encrypted_pdf(en_pages, root / "owner-only.pdf", "")
    out["owner-only.pdf"] = Expected("ok", text=DEBIAN_EN_SENTENCE)
    write("corrupt.docx", b"PK\x03\x04" + os.urandom(512), Expected("parse_error", "DOCX"))
    write("blank.md", "\n\n   \n\t\n", Expected("parse_error", "no text"))
    return out
