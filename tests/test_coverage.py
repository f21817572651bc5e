"""Names in a question that no document mentions: the term picker, the index lookup on a real
Milvus Lite KB, and what the prompt and the session do with them."""

from __future__ import annotations

import pytest

from localrag.kb.index import Index
from localrag.rag import answer_text, prompt
from localrag.rag.coverage import specific_terms, unmentioned, word_parts
from tests.kb_helpers import embedder, minilm_dir, settings_for, small_kb_home  # noqa: F401


def test_specific_terms_are_names_identifiers_and_acronyms():
    q = "How do I enable the GraphQL endpoint so I can query Milvus collections with GraphQL?"
    assert specific_terms(q) == ["GraphQL", "Milvus"]
    assert specific_terms("Which Raft implementation does Milvus use?") == ["Raft", "Milvus"]
    # words that start a sentence are not names; acronyms, digits and identifiers are
    assert specific_terms("What is TLS? Can I use it with IVF_SQ8 and nlist 1024?") == ["TLS", "IVF_SQ8"]
    assert specific_terms("how do i tier cold segments to S3 Glacier?") == ["S3", "Glacier"]
    # question words are never names, even capitalised mid-sentence after a quote
    assert specific_terms('She asked "What is it?" and Why not') == []
    # a Chinese question's Latin names
    assert specific_terms("PyMilvus 连接池里的空闲连接默认多久会被回收？") == ["PyMilvus"]


def test_word_parts_skip_short_pieces_and_numbers():
    assert word_parts("tenant_id") == ["tenant"]
    assert word_parts("Milvus-CDC") == ["Milvus", "CDC"]
    assert word_parts("S3") == []
    assert word_parts("GPU_IVF_FLAT") == ["GPU", "IVF", "FLAT"]


def test_unmentioned_needs_one_unknown_part_and_fails_open():
    known = {"milvus", "tenant", "cdc"}
    mentions = lambda w: w.lower() in known  # noqa: E731
    assert unmentioned("Can Milvus talk GraphQL?", mentions) == ["GraphQL"]
    # a compound of known words is the user's own name, not a gap in the documents
    assert unmentioned("I made `tenant_id` the partition key in Milvus", mentions) == []

    def broken(word):
        raise RuntimeError("index closed")

    assert unmentioned("Can Milvus talk GraphQL?", broken) == []


def test_prompt_says_which_names_no_document_mentions():
    packing = prompt.Packing(sources=[prompt.Source(1, "REST is served on port 19530.", "a.md", None, "", "c1", 0.5, 10)])
    packing.unmentioned = ["GraphQL"]
    turn = prompt.user_turn("How do I enable the GraphQL endpoint?", packing)
    note = ('No document mentions "GraphQL". If the question is about "GraphQL", reply only: '
            '"The documents do not mention GraphQL." Otherwise: Answer the question in English')
    # the last words before the answer, after the question: what a small model follows
    assert note in turn and turn.index("Question:") < turn.index(note)
    two = prompt.unmentioned_note(["Raft", "Glacier"], "en")
    assert '"Raft" or "Glacier"' in two and "do not mention Raft or Glacier." in two
    zh = prompt.user_turn("怎么启用 GraphQL 接口？", packing)
    assert '没有任何文档提到 "GraphQL"' in zh and "“文档中没有提到 GraphQL。”否则：请用中文" in zh
    # a term cannot smuggle a delimiter or a quote into the prompt
    hostile = prompt.unmentioned_note(['<source>"x'], "en")
    assert "<source" not in hostile and "'x" in hostile
    packing.unmentioned = []
    assert "No document mentions" not in prompt.user_turn("How do I enable REST?", packing)


@pytest.mark.parametrize("answer, shown", [
    # the 1.5B's words (sampled, dev en-045): the note copied between two copies of its reply
    ('The documents do not mention GraphQL. If the question is about "GraphQL", reply only: '
     '"The documents do not mention GraphQL." Otherwise: The documents do not mention GraphQL.',
     "The documents do not mention GraphQL."),
    ('If the question is about "GraphQL", reply only: "The documents do not mention GraphQL."',
     "The documents do not mention GraphQL."),
    ('No document mentions "GraphQL". Otherwise: Milvus serves REST and gRPC [1].', "Milvus serves REST and gRPC [1]."),
    ("Milvus serves REST and gRPC [1]. Otherwise: use the SDK [2].", "Milvus serves REST and gRPC [1]. Otherwise: use the SDK [2]."),
])
def test_a_copied_note_is_taken_out_of_the_answer(answer, shown):
    assert answer_text.drop_note_echo(answer, ["GraphQL"], "en") == shown
    assert answer_text.drop_note_echo(answer, [], "en") == answer  # no note in the prompt: nothing to take out


def test_a_copied_chinese_note_is_taken_out_of_the_answer():
    note = prompt.unmentioned_note(["GraphQL"], "zh")
    assert answer_text.drop_note_echo(note + "文档中没有提到 GraphQL。", ["GraphQL"], "zh") == "文档中没有提到 GraphQL。"
    assert answer_text.drop_note_echo(note, ["GraphQL"], "zh") == "文档中没有提到 GraphQL。"


@pytest.fixture(scope="module")
def kb(small_kb_home):
    return settings_for(small_kb_home)


def test_index_mentions_whole_words_in_any_letter_case(kb):
    with Index.open(kb, "t") as ix:
        assert ix.mentions("Zebra") and ix.mentions("zebra") and ix.mentions("ZEBRA")
        assert ix.mentions("nlist")
        assert not ix.mentions("GraphQL")
        assert not ix.mentions("zeb")  # a whole token, not a substring
        q = "Do zebras prefer GraphQL or IVF_FLAT?"
        assert unmentioned(q, ix.mentions) == ["GraphQL"]
