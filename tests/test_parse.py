"""parse_file(): every good file parses, every hostile one raises ParseError with a one-line reason."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from localrag.kb.files import FileEntry, discover
from localrag.kb.parse import ParseError, decode_text, parse_file
from tests.hostile import DEBIAN_EN_SENTENCE, DEBIAN_ZH_PHRASE, build_hostile_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, build_hostile_corpus(root)


def test_hostile_corpus_parses_or_fails_cleanly(corpus):
    root, expected = corpus
    seen = set()
    for item in discover([root]):
        if not isinstance(item, FileEntry):
            continue
        exp = expected[item.rel]
        seen.add(item.rel)
        if exp.outcome == "ok":
            doc = parse_file(item.path)
            assert doc.sections and all(s.text.strip() for s in doc.sections)
            assert exp.text in doc.text, (item.rel, doc.text[:200])
        else:
            assert exp.outcome == "parse_error", item.rel
            with pytest.raises(ParseError) as info:
                parse_file(item.path)
            reason = str(info.value)
            assert exp.reason in reason and "\n" not in reason and len(reason) < 200, reason
    assert seen == {n for n, e in expected.items() if e.outcome in ("ok", "parse_error")}


def test_encodings_are_detected_and_damage_is_noted(corpus):
    root, _ = corpus
    assert parse_file(root / "gbk.txt").encoding == "gb18030"
    assert parse_file(root / "utf16.txt").encoding == "utf-16"
    assert parse_file(root / "bom-utf8.txt").encoding == "utf-8-sig"
    assert parse_file(root / "latin1.txt").encoding == "cp1252"
    damaged = parse_file(root / "invalid-utf8.txt")
    assert damaged.encoding == "utf-8" and "invalid UTF-8" in damaged.warnings[0]
    assert "向量" in damaged.text and "\ufffd" in damaged.text


@pytest.mark.parametrize(
    "text, encoding",
    [
        ("日本語のテキストです。これはテスト。", "shift_jis"),
        ("한국어 텍스트입니다. 테스트.", "euc_kr"),
        ("繁體中文測試，這是一個句子。", "big5"),
        ("短", "gbk"),
        ("Привет, как дела? Это тест.", "cp1251"),
    ],
)
def test_decode_text_legacy_encodings(text, encoding):
    assert decode_text(text.encode(encoding))[0] == text


def test_markdown_sections_heading_paths_and_code(corpus):
    root, _ = corpus
    doc = parse_file(root / "good.md")
    assert doc.filetype == "markdown"
    assert "title: Hostile" not in doc.text  # front matter is metadata, not text
    headings = [s.heading for s in doc.sections]
    assert headings == [
        ("Installing the widget",),
        ("Installing the widget", "On Linux"),
        ("Installing the widget", "On macOS"),
    ]
    linux = doc.sections[1].text
    assert linux.startswith("## On Linux")
    assert "# this is not a heading" in linux and "| --prefix | where it goes |" in linux


def test_markdown_title_from_front_matter_when_no_h1(tmp_path):
    f = tmp_path / "t.md"
    f.write_text("---\ntitle: Guide\n---\n\nIntro.\n\n## Part\n\nBody.\n")
    doc = parse_file(f)
    assert [s.heading for s in doc.sections] == [("Guide",), ("Guide", "Part")]


def test_markdown_html_blocks_become_the_text_they_show(tmp_path):
    """Parameter tables, notes, <pre> and <h3> written as HTML inside Markdown: the reader and
    the model get their text, not their tags; inline HTML and fenced code stay verbatim."""
    f = tmp_path / "params.md"
    f.write_text(
        "# Create a collection\n\n"
        "<!-- TOC -->\n\n"
        "Use `create_collection()`; a cell may say <code>a<br/>b</code> inline.\n\n"
        '<table class="language-python">\n  <thead>\n    <tr>\n      <th>Parameter</th>\n'
        "      <th>Description</th>\n    </tr>\n  </thead>\n  <tbody>\n    <tr>\n"
        "      <td><code>auto_id</code></td>\n      <td>Whether the primary field increments &amp; by itself.</td>\n"
        "    </tr>\n  </tbody>\n</table>\n\n"
        '<div class="alert note">\n\nA collection can have up to 1,024 partitions.\n\n</div>\n\n'
        '<h3 id="syntax">Syntax</h3>\n\n'
        "<pre>\nworkspace\n└── configs\n     └── backup.yaml\n</pre>\n\n"
        "```html\n<table><tr><td>kept</td></tr></table>\n```\n"
    )
    doc = parse_file(f)
    assert [s.heading for s in doc.sections] == [("Create a collection",), ("Create a collection", "Syntax")]
    first, syntax = doc.sections[0].text, doc.sections[1].text
    assert "Parameter | Description\nauto_id | Whether the primary field increments & by itself." in first
    assert "A collection can have up to 1,024 partitions." in first
    assert "<td>" not in first and "<div" not in first and "TOC" not in first
    assert "<code>a<br/>b</code> inline" in first  # inline HTML in a paragraph is left as written
    assert syntax.startswith("### Syntax")
    assert "```\nworkspace\n└── configs\n     └── backup.yaml\n```" in syntax  # indentation kept
    assert "<table><tr><td>kept</td></tr></table>" in syntax  # code is code


def test_markdown_html_blocks_never_make_headings_or_lose_text(tmp_path):
    """Text that comes out of HTML is never read as Markdown structure, and a block wrapping
    Markdown keeps its lines (found by review on the milvus-docs corpus)."""
    f = tmp_path / "tricky.md"
    f.write_text(
        "# Guide\n\n"
        "<table><tr><th>#</th><th>id</th></tr><tr><td>0</td><td>a1</td></tr></table>\n\n"
        '<div class="highlight"><pre># install the client\npip install pymilvus</pre></div>\n\n'
        "<details><summary>Server configuration</summary>\n\n"
        "```yaml\nqueryNode:\n  replicas: 1\n```\n\n</details>\n\n"
        "<aside>\nBack up first.\n</aside>\n\n"
        "<h3>A</h3><h3>B</h3>\n\n"
        "<pre>\n```\n# not a heading\n</pre>\n\n"
        "- item\n\n  <p>inside a list</p>\n\n"
        "## Next\n\nAfter.\n"
    )
    doc = parse_file(f)
    assert [s.heading for s in doc.sections] == [("Guide",), ("Guide", "Next")]
    text = doc.sections[0].text
    assert "# | id\n0 | a1" in text
    assert "# install the client\npip install pymilvus" in text
    assert "```yaml\nqueryNode:\n  replicas: 1\n```" in text and "Server configuration" in text
    assert "Back up first." in text and "<aside>" not in text
    assert "````\n```\n# not a heading\n````" in text  # the fence is longer than any run inside
    assert "  <p>inside a list</p>" in text  # a block inside a list stays as written


def test_html_main_text_without_scripts_or_navigation(corpus):
    root, _ = corpus
    doc = parse_file(root / "good.html")
    text = doc.text
    assert "do not index me" not in text and "color: red" not in text
    assert "Home" not in text and "Copyright" not in text
    assert "The widget reads configuration from /etc/widget.conf." in text
    assert "name | default" in text and "verbose | false" in text
    assert "widget --verbose\nwidget --quiet" in text
    assert doc.sections[-1].heading == ("Widget manual", "Options")


def test_docx_headings_and_tables(corpus):
    root, _ = corpus
    doc = parse_file(root / "good.docx")
    by_heading = {s.heading: s.text for s in doc.sections}
    network = by_heading[("Widget handbook", "Setup", "Network")]
    assert "DHCP" in network and "port | 8080" in network and "protocol | http" in network


def test_debian_pdf_english_keeps_word_spaces(shared_dir):
    doc = parse_file(shared_dir / "corpora/debian-reference/debian-reference.en.pdf")
    assert doc.filetype == "pdf" and len(doc.sections) > 200
    pages = {s.page: s for s in doc.sections}
    assert DEBIAN_EN_SENTENCE in pages[42].text
    assert pages[42].heading == ("GNU/Linux tutorials", "Unix-like filesystem", "Named pipes (FIFOs)")
    assert "Replace it with the following to track testing." in doc.text
    words = re.findall(r"[A-Za-z]+", doc.text)
    glued = [w for w in words if len(w) >= 20]
    assert len(glued) / len(words) < 0.001, glued[:20]  # pypdf: ~10% of words run together here
    # running headers ("Debian Reference 13 / 233") are stripped, hyphenation at line ends undone
    assert "Debian Reference 13 / 233" not in doc.text
    assert "distribution is characterized" in doc.text


def test_debian_pdf_chinese_text(shared_dir):
    doc = parse_file(shared_dir / "corpora/debian-reference/debian-reference.zh-cn.pdf")
    assert DEBIAN_ZH_PHRASE in doc.text
    page = next(s for s in doc.sections if DEBIAN_ZH_PHRASE in s.text)
    assert page.page == 43 and page.heading[-1] == "tmpfs"
    cjk = re.findall(r"[\u4e00-\u9fff]", doc.text)
    assert len(cjk) > 90_000


def test_size_limit_and_missing_file(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.write(b"start\n")
        fh.truncate(100 * 1024 * 1024)
    with pytest.raises(ParseError, match="too large"):
        parse_file(big)
    with pytest.raises(ParseError):
        parse_file(tmp_path / "missing.md")


@pytest.mark.parametrize("suffix", [".md", ".txt", ".html", ".pdf", ".docx"])
def test_random_bytes_never_escape_as_other_exceptions(tmp_path, suffix):
    rng = __import__("random").Random(suffix)
    heads = {".pdf": b"%PDF-1.7\n", ".docx": b"PK\x03\x04"}
    for i in range(15):
        f = tmp_path / f"junk{i}{suffix}"
        f.write_bytes(heads.get(suffix, b"") + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))))
        try:
            doc = parse_file(f)
        except ParseError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert isinstance(doc.text, str)
            doc.text.encode("utf-8")  # no lone surrogates reach the index


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads through chmod 000")
def test_unreadable_file(tmp_path):
    f = tmp_path / "locked.md"
    f.write_text("# x\n")
    os.chmod(f, 0)
    with pytest.raises(ParseError, match="permission denied"):
        parse_file(f)


def test_docx_outline_level_marks_a_heading_without_a_heading_style(tmp_path):
    import docx
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    document.add_heading("Manual", level=1)
    custom = document.add_paragraph("Custom styled chapter")
    level = OxmlElement("w:outlineLvl")
    level.set(qn("w:val"), "1")
    custom._p.get_or_add_pPr().append(level)
    document.add_paragraph("Body under the custom chapter.")
    path = tmp_path / "outline.docx"
    document.save(str(path))
    doc = parse_file(path)
    assert doc.sections[-1].heading == ("Manual", "Custom styled chapter")
    assert "Body under the custom chapter." in doc.sections[-1].text
