"""A question in a language most of the KB is not in is also searched in the KB's language."""
from __future__ import annotations

import pytest

from localrag.kb.index import Index
from localrag.rag import crosslingual as xl
from tests.kb_helpers import embedder, minilm_dir, settings_for, small_kb_home  # noqa: F401


@pytest.mark.parametrize("lang, share, target", [
    ("zh", 0.09, "en"),   # milvus-docs: 39 Chinese files of ~300
    ("zh", 0.0, "en"),
    ("zh", 0.5, None),    # half Chinese: the question's own language is not a minority
    ("zh", 0.9, None),
    ("en", 0.09, None),
    ("en", 0.8, "zh"),    # an English question over mostly Chinese documents
])
def test_the_other_language_is_searched_only_where_the_question_is_in_a_minority(lang, share, target):
    assert xl.target_language(lang, share) == target


def test_the_ask_says_which_language_and_carries_the_question():
    msgs = xl.messages("  Milvus 2.4 最多可以创建多少个 database？ ", "en")
    assert msgs[0]["role"] == "user" and "into English" in msgs[0]["content"]
    assert msgs[0]["content"].endswith("Milvus 2.4 最多可以创建多少个 database？")


@pytest.mark.parametrize("reply, target, expected", [
    ("How many databases can be created in a Milvus 2.4 cluster?", "en",
     "How many databases can be created in a Milvus 2.4 cluster?"),
    ('Translation: "How many databases can a cluster hold?"\n\nNote: literal.', "en", "How many databases can a cluster hold?"),
    ("我重新插入了一个 ID 已经存在的行，Milvus 会覆盖旧的实体吗？", "zh", "我重新插入了一个 ID 已经存在的行，Milvus 会覆盖旧的实体吗？"),
    ("", "en", None),
    ("Milvus 2.4 的集群最多可以创建多少个 database？", "en", None),  # not translated
    ("Sure! " + "A cluster can hold up to 64 databases, and each database ... " * 6, "en", None),  # an answer
    ("How do I re-insert a row?", "zh", None),  # the wrong language
])
def test_only_a_question_in_the_target_language_is_kept(reply, target, expected):
    question = "Milvus 2.4 的集群最多可以创建多少个 database？" if target == "en" else "I re-inserted a row whose ID exists; will Milvus overwrite it?"
    assert xl.clean(reply, question, target) == expected


def test_the_share_of_chinese_files_in_a_real_kb(small_kb_home):
    """Three English milvus-docs pages, three "Chinese" ones and an English note. One of the
    Chinese pages (about/README.md) is a Chinese title over a list of English links: by its text
    it is English, so 2 of 7 files are Chinese."""
    with Index.open(settings_for(small_kb_home), "t") as ix:
        share = ix.cjk_share()
    assert share == pytest.approx(2 / 7)
    assert xl.target_language("zh", share) == "en" and xl.target_language("en", share) is None
