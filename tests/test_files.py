"""discover(): every hostile file is skipped with a one-line reason or listed; nothing crashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localrag.kb.files import FileEntry, Skipped, discover, display_name
from tests.hostile import build_hostile_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, build_hostile_corpus(root)


def _by_rel(root: Path, items) -> dict[str, FileEntry | Skipped]:
    prefix = display_name(str(root)) + "/"
    out = {}
    for item in items:
        key = item.rel if isinstance(item, FileEntry) else item.path.removeprefix(prefix)
        assert key not in out, f"{key!r} listed twice"
        out[key] = item
    return out


def test_every_hostile_file_gets_its_outcome(corpus):
    root, expected = corpus
    got = _by_rel(root, discover([root]))
    for name, exp in expected.items():
        item = got.get(name)
        if exp.outcome == "ignored":
            assert item is None, f"{name!r} should be left out quietly, got {item}"
        elif exp.outcome == "skipped":
            assert isinstance(item, Skipped), f"{name!r}: expected Skipped, got {item}"
            assert exp.reason in item.reason, (name, item.reason)
        else:  # ok and parse_error files are for the parser to judge
            assert isinstance(item, FileEntry), f"{name!r}: expected a FileEntry, got {item}"
            assert item.path.is_file() and item.size == item.path.stat().st_size
            assert item.root == root
    unexpected = set(got) - set(expected)
    assert not unexpected, f"listed but not in the corpus: {unexpected}"


def test_reasons_are_one_line_and_names_are_printable(corpus):
    root, _ = corpus
    for item in discover([root]):
        if isinstance(item, Skipped):
            assert item.reason and "\n" not in item.reason
            item.path.encode("utf-8")
        else:
            json.dumps(item.rel, ensure_ascii=False).encode("utf-8")  # JSON/Milvus-safe
            assert not item.rel.startswith("/")


def test_order_is_deterministic(corpus):
    root, _ = corpus
    first = [getattr(i, "rel", None) or i.path for i in discover([root])]
    second = [getattr(i, "rel", None) or i.path for i in discover([root])]
    assert first == second
    files = [i.rel for i in discover([root]) if isinstance(i, FileEntry) and "/" not in i.rel]
    assert files == sorted(files, key=lambda n: n.encode("utf-8", "surrogateescape"))


def test_file_argument_missing_argument_and_duplicates(tmp_path):
    (tmp_path / "docs").mkdir()
    note = tmp_path / "docs" / "note.md"
    note.write_text("# Note\n\nhello\n")
    items = list(discover([note, tmp_path / "nope", tmp_path / "docs", note]))
    assert isinstance(items[0], FileEntry)
    assert items[0].rel == "note.md" and items[0].root == tmp_path / "docs"
    assert isinstance(items[1], Skipped) and "no such file" in items[1].reason
    assert len(items) == 2  # the folder holds only the file already listed; the repeat is dropped


def test_hidden_folder_named_explicitly_is_walked(tmp_path):
    hidden = tmp_path / ".notes"
    hidden.mkdir()
    (hidden / "todo.md").write_text("# todo\n\nbuy milk\n")
    items = list(discover([hidden]))
    assert [i.rel for i in items] == ["todo.md"]


def test_size_limit_is_configurable(tmp_path):
    f = tmp_path / "big.txt"
    f.write_text("x" * 5000)
    (item,) = discover([tmp_path], max_bytes=4096)
    assert isinstance(item, Skipped) and "too large" in item.reason
    (item,) = discover([tmp_path], max_bytes=10_000)
    assert isinstance(item, FileEntry) and item.filetype == "text"


def test_symlinked_folder_outside_the_root_is_followed_once(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.md").write_text("# A\n\ntext\n")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "link1")
    os.symlink(outside, root / "link2")
    items = list(discover([root]))
    assert [i.rel for i in items] == ["link1/a.md"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads through chmod 000")
def test_unreadable_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "x.md").write_text("# x\n")
    os.chmod(locked, 0)
    try:
        items = list(discover([tmp_path]))
    finally:
        os.chmod(locked, 0o755)
    assert len(items) == 1 and isinstance(items[0], Skipped) and items[0].reason == "permission denied"
