"""The server's event → OpenAI chunk translation, on the session's own result types.

The answer a session returns can differ from the text it streamed: citation numbers that match
no source are removed, and a bare "the documents do not say [1]" loses its marker. A client that
showed the stream must learn the final text, or it keeps showing a citation the sources omit."""
from __future__ import annotations

from localrag.rag import figures, prompt
from localrag.rag.results import AnswerDelta, AnswerResult, Done, Timings
from localrag.server.chat import Translator

SOURCE = prompt.Source(n=1, text="Milvus stores metadata in etcd.", source="faq.md", page=None,
                       heading="Storage", chunk_id="c1", score=0.8, tokens=9)


def _translate(streamed: list[str], final: str, *, in_content: bool = False,
               repointed: list | None = None, unfounded: bool = False) -> tuple[Translator, dict]:
    tr = Translator("kb:docs", lambda path: f"/files/{path}", sources_in_content=in_content)
    for piece in streamed:
        tr.feed(AnswerDelta(piece))
    result = AnswerResult("q", "q", final, "", [], [], [SOURCE], [], False, "stop", Timings(),
                          repointed=repointed or [], unfounded=unfounded)
    tr.feed(Done(result))
    return tr, tr.last_chunks()[-1]


def test_an_uncited_abstention_sends_its_final_text_on_the_last_chunk():
    tr, last = _translate(["The documents do not mention Raft.", " [1]"], "The documents do not mention Raft.")
    assert last["localrag"]["content"] == "The documents do not mention Raft."
    assert last["localrag"]["citations"] == [] and last["sources"][0]["cited"] is False
    assert tr.completion()["choices"][0]["message"]["content"] == "The documents do not mention Raft."


def test_the_final_text_is_left_out_when_it_is_what_was_streamed():
    _, last = _translate(["Metadata live in etcd ", "[1]."], "Metadata live in etcd [1].")
    assert "content" not in last["localrag"]


def test_the_final_text_keeps_the_sources_tail_a_client_asked_for():
    # the replacement is the whole shown text: the answer and the "Sources:" list after it
    _, last = _translate(["No idea [7]."], "No idea.", in_content=True)
    assert last["localrag"]["content"] == "No idea.\n\nSources:\n[1] faq.md - Storage"


def test_a_moved_citation_sends_the_final_text_and_the_move():
    _, last = _translate(["Milvus stores metadata in etcd ", "[2]."], "Milvus stores metadata in etcd [1].",
                         repointed=[(2, 1)])
    assert last["localrag"]["content"] == "Milvus stores metadata in etcd [1]."
    assert last["localrag"]["repointed"] == [[2, 1]]
    _, last = _translate(["Metadata live in etcd ", "[1]."], "Metadata live in etcd [1].")
    assert "repointed" not in last["localrag"]


def test_an_answer_replaced_for_giving_no_figure_sends_the_final_text_and_says_why():
    final = figures.NO_FIGURE["en"]
    _, last = _translate(["It depends on the resources ", "available [1]."], final, unfounded=True)
    assert last["localrag"]["content"] == final and last["localrag"]["unfounded"] is True
    assert last["localrag"]["citations"] == []
    _, last = _translate(["Metadata live in etcd ", "[1]."], "Metadata live in etcd [1].")
    assert "unfounded" not in last["localrag"]
