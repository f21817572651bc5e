"""A citation moves to the source that holds its sentence's words, and only then."""
from __future__ import annotations

import io

import pytest

from localrag.rag import attribution
from tests.kb_helpers import install_minilm, minilm_dir, settings_for  # noqa: F401
from tests.test_remote import Scripted

SOURCES = {
    1: "Milvus standalone uses RocksDB as its log broker, while a Milvus cluster uses Pulsar or Kafka. [1]",
    2: "Message storage: Milvus can be configured to use Pulsar, Kafka or RocksMQ, with Helm or the operator. [2]",
    3: "默认情况下单个 collection 包含 2 个分片（shard）。目前 Milvus 采用基于主键哈希的分片方式。[3]",
    4: "单次插入数据不能超过 1024 MB，这是 gRPC 的限制。[4]",
}
QUESTION = "Which log broker does Milvus standalone use?"


def test_a_sentence_copied_from_one_source_but_citing_another_is_moved():
    answer = "Milvus standalone uses RocksDB as its log broker, while Milvus cluster uses Pulsar. [2]"
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer.replace("[2]", "[1]"), [(2, 1)])


def test_chinese_sentences_are_checked_by_character_pairs():
    answer = "一个 collection 默认会分成两个 shard。根据 [4] 中的描述，Milvus 默认情况下单个 collection 包含 2 个分片（shard）。"
    new, moves = attribution.repoint(answer, SOURCES, "一个 collection 默认有几个 shard？")
    assert moves == [(4, 3)] and "根据 [3] 中的描述" in new


def test_a_citation_whose_source_holds_a_fair_share_stays():
    answer = "Milvus can use Pulsar or Kafka as its message storage. [2]"
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer, [])


def test_a_sentence_no_source_holds_is_left_alone():
    answer = "Milvus standalone writes its log to a replicated journal on three disks. [2]"
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer, [])


def test_words_from_the_question_are_no_evidence():
    """Restating the question matches every source that names its topic: only the answer's own
    words decide."""
    answer = "The log broker that Milvus standalone uses is described here. [2]"
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer, [])


def test_a_pointer_after_a_moved_sentence_moves_with_it():
    answer = ("Milvus standalone uses RocksDB as its log broker [2]. Milvus can use Pulsar, Kafka or RocksMQ [2]. "
              "This is stated in [2].")
    new, moves = attribution.repoint(answer, SOURCES, QUESTION)
    assert moves == []  # the second sentence is [2]'s own, so the pointer after it stays
    # a pointer after an uncited sentence is about that sentence: judged by its words
    answer = "Milvus standalone uses RocksDB as its log broker, and a cluster Pulsar. This is stated in [2]."
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer.replace("[2]", "[1]"), [(2, 1)])
    answer = "Milvus can use Pulsar, Kafka or RocksMQ as its message storage. This is stated in [2]."
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer, [])
    answer = "Milvus standalone uses RocksDB as its log broker, and a cluster Pulsar [2]. This is stated in [2]."
    new, moves = attribution.repoint(answer, SOURCES, QUESTION)
    assert moves == [(2, 1)] and new.count("[1]") == 2 and "[2]" not in new


def test_a_marker_after_the_full_stop_belongs_to_the_sentence_before_it():
    answer = "单次插入数据不能超过 1024 MB。 [3] Milvus standalone uses RocksDB as its log broker. [1]"
    new, moves = attribution.repoint(answer, SOURCES, "单次插入最多多大？")
    assert moves == [(3, 4)] and new.startswith("单次插入数据不能超过 1024 MB。 [4]") and new.endswith("[1]")


def test_a_marker_that_opens_a_line_belongs_to_the_line():
    answer = "Milvus standalone uses RocksDB as its log broker.\n[4] 单次插入数据不能超过 1024 MB。"
    assert attribution.repoint(answer, SOURCES, "?") == (answer, [])


def test_several_numbers_in_one_bracket_become_the_one_source_and_code_is_untouched():
    answer = "Milvus standalone uses RocksDB as its log broker, a cluster uses Pulsar [2, 4]. Use `brokers[2]`."
    new, moves = attribution.repoint(answer, SOURCES, QUESTION)
    assert moves == [(2, 1), (4, 1)]
    assert new == "Milvus standalone uses RocksDB as its log broker, a cluster uses Pulsar [1]. Use `brokers[2]`."


def test_numbers_that_match_no_source_and_answers_without_markers_pass_through():
    assert attribution.repoint("Milvus standalone uses RocksDB.", SOURCES, QUESTION) == ("Milvus standalone uses RocksDB.", [])
    assert attribution.repoint("RocksDB [1].", {}, QUESTION) == ("RocksDB [1].", [])



# --- a sentence left uncited, copied from another source than its paragraph's number ----------


def test_an_uncited_sentence_copied_from_another_source_gets_its_number():
    answer = ("Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar. "
              "Milvus can be configured with Helm or the operator. [2]")
    new, added = attribution.cite_copied(answer, SOURCES, QUESTION)
    assert added == [1]
    assert new == ("Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar. [1] "
                   "Milvus can be configured with Helm or the operator. [2]")


@pytest.mark.parametrize("answer", [
    # the paragraph's own number holds a fair share of the sentence
    "Milvus can use Pulsar, Kafka or RocksMQ as its log broker. It is configured with Helm. [2]",
    # no number follows in its paragraph: nothing claims the sentence, so nothing is added
    "Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar.\n\nHelm or the operator. [2]",
    "Helm or the operator configure it. [2] Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar.",
    # a paraphrase, not a copy: under 70% of its terms in any source
    "The standalone edition keeps its journal in RocksDB on local disk, which avoids running Pulsar. Helm. [2]",
    # code is never given a number, nor is a sentence that ends inside it
    "```\nMilvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar\n```\nHelm or the operator [2].",
    "Run `Milvus standalone uses RocksDB as its log broker; while a cluster uses Pulsar` now. Helm or the operator. [2]",
    # a heading or a table row takes no number
    "### Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar\nHelm or the operator. [2]",
    "| Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar |\n| Helm or the operator [2] |",
    # a pointer after it is repoint's: it says where the sentence before it came from
    "Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar. This is stated in [2].",
])
def test_no_number_is_added_where_the_paragraph_already_says_where_or_nothing_claims_it(answer):
    assert attribution.cite_copied(answer, SOURCES, QUESTION) == (answer, [])


def test_the_number_that_ends_a_paragraph_covers_each_of_its_lines():
    answer = ("Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar.\n"
              "It is configured in milvus.yaml.\nHelm or the operator deploy it. [2]")
    new, added = attribution.cite_copied(answer, SOURCES, QUESTION)
    assert added == [1] and new.startswith("Milvus standalone uses RocksDB as its log broker, while a cluster uses Pulsar. [1]\n")


def test_a_chinese_sentence_before_a_list_marker_is_checked_by_character_pairs():
    answer = "目前 Milvus 采用基于主键哈希的分片方式。\n单次插入数据不能超过 1024 MB。[4]"
    new, added = attribution.cite_copied(answer, SOURCES, "怎么分片？")
    assert added == [3] and new.startswith("目前 Milvus 采用基于主键哈希的分片方式。[3]\n")

def test_a_cited_sentence_copied_from_another_source_gets_that_number_beside_its_own():
    # [2] holds "pulsar" and "kafka" (a fair share: repoint leaves it), [1] holds every term
    answer = "Milvus standalone uses RocksDB as its log broker, while a Milvus cluster uses Pulsar or Kafka [2]."
    assert attribution.repoint(answer, SOURCES, QUESTION) == (answer, [])
    assert attribution.cite_copied(answer, SOURCES, QUESTION) == (answer.replace("[2]", "[2][1]"), [1])


@pytest.mark.parametrize("answer", [
    # [1] holds most of it, but [2] holds within MARGIN of that: the model's number stands alone
    "A Milvus cluster uses Pulsar or Kafka with Helm [2].",
    # three terms are too few to tell a copy from a neighbour on the same topic
    "Milvus standalone uses RocksDB and Pulsar [2].",
    # the copied-from source is cited already
    "Milvus standalone uses RocksDB as its log broker, while a Milvus cluster uses Pulsar or Kafka [2, 1].",
])
def test_a_cited_sentence_keeps_its_number_alone_unless_copied_from_another(answer):
    assert attribution.cite_copied(answer, SOURCES, QUESTION) == (answer, [])


def test_a_cited_chinese_sentence_gains_the_number_straight_after_its_own():
    sources = {1: "默认情况下单个 collection 包含 2 个分片（shard）。目前 Milvus 采用基于主键哈希的分片方式。",
               2: "Milvus 采用基于主键的方式写入数据。"}
    answer = "目前 Milvus 采用基于主键哈希的分片方式。[2]"
    assert attribution.repoint(answer, sources, "怎么分片？") == (answer, [])  # [2] holds about half
    assert attribution.cite_copied(answer, sources, "怎么分片？") == (answer + "[1]", [1])


SENTENCE = "Milvus standalone uses RocksDB as its log broker, while a Milvus cluster uses Pulsar or Kafka"


@pytest.mark.parametrize("answer", [
    # a marker inside the sentence, or one opening a list item, is not the sentence's source note
    "Milvus standalone uses RocksDB [2] as its log broker, while a Milvus cluster uses Pulsar or Kafka.",
    f"[2] {SENTENCE}.",
])
def test_only_a_marker_that_ends_its_sentence_gains_a_number(answer):
    assert attribution.cite_copied(answer, SOURCES, QUESTION) == (answer, [])


def test_words_inside_longer_words_and_missing_figures_do_not_make_a_copy():
    """"max" is in "maximum" and "dim" in "dimension", so the limits page holds four of the five
    terms of a sentence it does not hold: the figure, 32768, is not there, and [2] keeps it alone."""
    sources = {1: "Collection limits: at most 64 fields per collection. The maximum length of a field name is "
                  "255 characters. Index parameters depend on the metric type and the dimension of the vectors.",
               2: "A float vector may have up to 32768 dimensions."}
    answer = "The max dim is 32768 per field [2]."
    assert attribution.cite_copied(answer, sources, "How large can a vector be?") == (answer, [])
    # a word inside another is no evidence either: "set" is not in "dataset"
    # (counted inside words, [1] would hold 6 of its 7 terms, 43 points more than [2])
    sources = {1: "Load the dataset into the collection with the bulk insert tool before the index build.",
               2: "Set the index parameters when creating it."}
    answer = "Set the index build parameters with the bulk insert tool [2]."
    assert attribution.cite_copied(answer, sources, "?") == (answer, [])

# --- through the whole answer path --------------------------------------------------------------


@pytest.fixture(scope="module")
def broker_home(tmp_path_factory, minilm_dir):  # noqa: F811
    from localrag import LocalRAG

    home = tmp_path_factory.mktemp("attribution") / "home"
    docs = home.parent / "docs"
    docs.mkdir(parents=True)
    home.mkdir()
    (docs / "standalone.md").write_text(
        "# Log broker\n\nMilvus standalone uses RocksDB as its log broker. A Milvus cluster uses Pulsar or Kafka "
        "as its log broker instead.\n", encoding="utf-8")
    (docs / "message-storage.md").write_text(
        "# Message storage\n\nThe log broker of Milvus is configured in milvus.yaml under mq.type. Helm charts "
        "and the operator can deploy it alongside the other dependencies. Kafka needs ZooKeeper or KRaft.\n",
        encoding="utf-8")
    install_minilm(home, minilm_dir)
    with LocalRAG(settings_for(home)) as rag:
        rag.ingest([docs], kb="brokers", embedder="all-minilm-l6-v2")
    return home


def _ask(home, url, shown=None, question="Which log broker does Milvus standalone use?"):
    from rich.console import Console

    from localrag import Done, LocalRAG, Retrieved
    from localrag.cli.views.answer import AnswerView

    with LocalRAG(settings_for(home, llm_url=url)) as rag:
        events = list(rag.ask(question, kb="brokers"))
    if shown is not None:  # as `localrag ask` shows the same events
        AnswerView(Console(file=shown, width=200), show_thinking=False, verbose=False).render(iter(events))
    return next(e for e in events if isinstance(e, Retrieved)), next(e for e in events if isinstance(e, Done)).result


def test_an_answer_holds_what_a_source_says_only_in_a_sentence_beyond_the_question():
    asked = "How many CDC tasks can one server run at most?"
    assert attribution.any_sentence_held("Milvus standalone uses RocksDB as its log broker [1].", SOURCES, asked)
    assert not attribution.any_sentence_held("It is determined by the available CPU cores and the memory allocated [2].",
                                SOURCES, asked)  # talk around the figure, in words of its own
    assert not attribution.any_sentence_held("One server can run many CDC tasks [1].", SOURCES, asked)  # the question again
    asked = "单次插入数据最多多大？"
    assert attribution.any_sentence_held("单次插入数据不能超过 gRPC 的限制。[4]", SOURCES, asked)
    assert not attribution.any_sentence_held("单次插入数据默认会有限制。[4]", SOURCES, asked)
    assert not attribution.any_sentence_held("", SOURCES, asked)
    assert not attribution.any_sentence_held("Anything at all here.", {}, asked)


def test_a_quantity_answer_is_unfounded_only_with_no_figure_no_abstention_and_nothing_held():
    asked = "How many CDC tasks can one server run at most?"
    dodge = "It is determined by the available CPU cores and the memory allocated [2]."
    assert attribution.unfounded(dodge, SOURCES, asked)
    assert attribution.unfounded("空闲连接默认会自动回收。[1]", SOURCES, "空闲连接默认多久会被自动回收？")
    for kept in ("A server runs at most 16 tasks [2].", "There is no hard limit [1].",  # a figure, or "no limit"
                 "The documentation does not specify the maximum.",  # an abstention already
                 "Milvus standalone uses RocksDB as its log broker [1].",  # a source says it
                 "", "  \n"):  # nothing written: nothing to judge
        assert not attribution.unfounded(kept, SOURCES, asked), kept


def _numbers(home) -> dict[str, int]:
    """Each page's number in the prompt, from a first ask the model answers with "ok"."""
    probe = Scripted(models=("any",), chunks=[{"content": "ok"}])
    try:
        retrieved, _ = _ask(home, probe.url)
    finally:
        probe.close()
    return {s.source.rsplit("/", 1)[-1]: s.n for s in retrieved.packing.sources}


def _ask_saying(home, said: str, **question):
    """The result, and what the CLI showed, when the model streams ``said``."""
    model = Scripted(models=("any",), chunks=[{"content": said[i : i + 7]} for i in range(0, len(said), 7)])
    try:
        _, result = _ask(home, model.url, shown := io.StringIO(), **question)
    finally:
        model.close()
    return result, shown.getvalue()


def test_the_answer_cites_the_source_its_sentence_came_from(broker_home):
    """The model (an OpenAI-compatible server replaying a script) copies the sentence from the
    standalone page and cites the message-storage page: the final answer and its citations point
    at the standalone page, and the move is on record and shown."""
    number = _numbers(broker_home)
    assert set(number) == {"standalone.md", "message-storage.md"}
    right, wrong = number["standalone.md"], number["message-storage.md"]

    said = f"Milvus standalone uses RocksDB as its log broker; a cluster uses Pulsar or Kafka [{wrong}]."
    result, shown = _ask_saying(broker_home, said)
    assert result.answer == f"Milvus standalone uses RocksDB as its log broker; a cluster uses Pulsar or Kafka [{right}]."
    assert [c.source.rsplit("/", 1)[-1] for c in result.citations] == ["standalone.md"]
    assert result.repointed == [(wrong, right)]
    assert result.to_json()["repointed"] == [[wrong, right]]
    assert f"citation [{wrong}] changed to [{right}]: the sentence's words are in source [{right}]" in shown


def test_an_uncited_copied_sentence_gets_its_source_in_the_final_answer(broker_home):
    """The model copies a sentence from the standalone page, leaves it uncited and ends the
    paragraph with the message-storage page's number: the final answer cites both, and the
    addition is on record and shown."""
    number = _numbers(broker_home)
    right, other = number["standalone.md"], number["message-storage.md"]

    said = (f"A Milvus cluster uses Pulsar or Kafka as its log broker instead. "
            f"The log broker is configured in milvus.yaml under mq.type [{other}].")
    result, shown = _ask_saying(broker_home, said)
    assert result.answer == said.replace("instead. ", f"instead. [{right}] ")
    assert [c.n for c in result.citations] == [right, other]
    assert result.added_citations == [right] and result.repointed == []
    assert result.to_json()["added_citations"] == [right]
    assert f"citation [{right}] added after a sentence copied from source [{right}]" in shown


def test_a_cited_sentence_copied_from_another_source_gains_that_source_beside_its_own(broker_home):
    """The model copies the cluster sentence from the standalone page and cites the message-storage
    page, which names Kafka too: the number it wrote stays (that page holds part of the sentence)
    and the standalone page's number goes beside it."""
    number = _numbers(broker_home)
    right, other = number["standalone.md"], number["message-storage.md"]

    said = f"A Milvus cluster uses Kafka as its log broker instead, with ZooKeeper [{other}]."
    result, shown = _ask_saying(broker_home, said)
    assert result.answer == said.replace(f"[{other}]", f"[{other}][{right}]")
    assert sorted(c.n for c in result.citations) == sorted([right, other])
    assert result.added_citations == [right] and result.repointed == []
    assert f"citation [{right}] added after a sentence copied from source [{right}]" in shown

# --- found in review: code, marker placement, duplicates ----------------------------------------

CODE_SOURCES = {
    1: "RocksDB is what Milvus standalone uses as its log broker for the write ahead log.",
    2: "Shards are the unit of data distribution across query nodes.",
    3: "first_hit = results[1] picks the best hit of the first query.",
}


def test_a_sentence_that_opens_with_inline_code_keeps_the_marker_after_it():
    answer = ("`RocksDB` is what Milvus standalone uses as its log broker for the write ahead log. [1] "
              "Shards are the unit of data distribution across query nodes.")
    assert attribution.repoint(answer, CODE_SOURCES, "?") == (answer, [])


@pytest.mark.parametrize("answer", [
    "Run `import numpy as np; x[1] = 5` to assign element values in the numpy array.",  # split at "; "
    "~~~python\nfirst_hit = results[1]\n~~~\n",
    "```python\nfirst_hit = results[1]\n```\n",
])
def test_brackets_in_code_are_never_renumbered(answer):
    assert attribution.repoint(answer, CODE_SOURCES, "?") == (answer, [])


def test_two_markers_moved_to_one_source_read_as_one():
    new, moves = attribution.repoint("Shards are the unit of data distribution across query nodes [3][1].",
                                     CODE_SOURCES, "?")
    assert new == "Shards are the unit of data distribution across query nodes [2]." and moves == [(3, 2), (1, 2)]


def test_a_streaming_reader_never_sees_a_copied_tag_or_a_made_up_number(broker_home):
    """The model copies the prompt's source tag and cites a source that does not exist, three
    characters a token: what the API streams and what `localrag serve` sends its SSE clients
    (the official client) are cleaned as they go, not only in the final answer."""
    import openai

    from localrag import AnswerDelta, LocalRAG
    from tests.server_helpers import Server, make_key

    n = _numbers(broker_home)["standalone.md"]
    said = f'Milvus standalone uses RocksDB as its log broker [source n="{n}"]. A cluster uses Kafka [9].'
    clean = f"Milvus standalone uses RocksDB as its log broker [{n}]. A cluster uses Kafka."
    model = Scripted(models=("any",), chunks=[{"content": said[i : i + 3]} for i in range(0, len(said), 3)])
    try:
        with LocalRAG(settings_for(broker_home, llm_url=model.url)) as rag:
            deltas = [e.text for e in rag.ask(QUESTION, kb="brokers") if isinstance(e, AnswerDelta)]
        key = make_key(broker_home, "stream-reader", "--kb", "brokers:read")
        server = Server(broker_home, "--kb", "brokers", "--llm-url", model.url).start()
        try:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
            stream = client.chat.completions.create(model="kb:brokers", stream=True,
                                                    messages=[{"role": "user", "content": QUESTION}])
            sent = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        finally:
            server.stop()
    finally:
        model.close()
    for pieces in (deltas, sent):
        assert "".join(pieces) == clean
        shown = ["".join(pieces[: i + 1]) for i in range(len(pieces))]
        assert not any("source" in s or "[9" in s or 'n="' in s for s in shown), pieces


HOW_MANY = "How many log brokers can one Milvus cluster run at most?"


def test_asked_for_a_quantity_an_answer_with_no_figure_and_no_source_words_is_not_shown(broker_home):
    """The model answers "how many" with talk around it that no source holds, and cites a source:
    the reader gets "the documents do not say" and no citation, and the result says why."""
    result, shown = _ask_saying(broker_home, "It depends on the hardware resources available to the deployment [1].",
                                question=HOW_MANY)
    assert result.answer.startswith("The documents do not say.") and "gave no figure" in result.answer
    assert result.citations == [] and result.unfounded and result.to_json()["unfounded"] is True
    assert "hardware resources" not in shown and "The documents do not say." in shown


def test_asked_for_a_quantity_an_answer_without_a_figure_that_a_source_holds_is_kept(broker_home):
    number = _numbers(broker_home)
    said = f"A Milvus cluster uses Pulsar or Kafka as its log broker instead [{number['standalone.md']}]."
    result, _ = _ask_saying(broker_home, said, question=HOW_MANY)
    assert result.answer == said and not result.unfounded and [c.n for c in result.citations] == [number["standalone.md"]]
