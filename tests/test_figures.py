"""A figure the answer states that neither the question nor any source holds is withheld."""
from __future__ import annotations

from localrag.rag import answer_text, figures

SOURCES = ["With coordinator HA enabled, the standby takes over within 60 seconds.",
           "A single insert request may not exceed 1,024 MB.", "Milvus 2.4 supports up to 64 databases."]


def test_checkable_figures_are_numbers_of_two_digits_or_more_outside_code_and_citations():
    text = "It takes 60 seconds [12]. Set `nlist=2048`, about 1,024 MB or 16GB; 70-75% less; step 3; v2, md5, gpt-35."
    assert figures.figures(text) == ["60 seconds", "1024 MB", "16 GB", "70", "75%"]
    assert figures.figures("```python\ncollection.load(timeout=300)\n```\nDone.") == []


def test_an_invented_figure_turns_a_one_sentence_answer_into_the_documents_do_not_say():
    answer, withheld = figures.withhold("PyMilvus 连接池里的空闲连接默认会在 30 分钟内被自动回收。[3]", SOURCES, "zh")
    assert withheld == ["30 分钟"]
    assert "“30 分钟”" in answer and "[3]" not in answer and answer_text.says_not_found(answer)
    answer, _ = figures.withhold("The maximum is 200 tasks per server [2].", SOURCES, "en")
    assert answer.startswith("The documents do not say.") and '"200"' in answer and answer_text.says_not_found(answer)


def test_only_the_sentence_with_the_invented_figure_goes_and_the_reader_is_told():
    answer, withheld = figures.withhold(
        "The standby takes over within 60 seconds [1]. Each proxy keeps 512 connections [2].", SOURCES, "en")
    assert withheld == ["512"]
    assert answer.startswith("The standby takes over within 60 seconds [1].")
    assert "512 connections" not in answer and 'stated "512"' in answer
    assert not answer_text.says_not_found(answer)  # what is left is still an answer
    cleaned, cited, _ = answer_text.clean_citations(answer, {1, 2})
    assert cited == [1]


def test_grounded_figures_pass_however_they_are_grouped_and_the_question_counts_as_ground():
    answer = "An insert may not exceed 1024 MB [2], and Milvus 2.4 allows 64 databases [3]."
    assert figures.withhold(answer, SOURCES, "en") == (answer, [])
    asked = "Is 300 seconds long enough for a standby to take over?"
    answer = "Yes: 300 seconds is more than the 60 seconds it takes [1]."
    assert figures.withhold(answer, [*SOURCES, asked], "en") == (answer, [])
    assert figures.withhold("The documents do not say.", SOURCES, "en") == ("The documents do not say.", [])


def test_a_figure_is_grounded_only_by_the_whole_number():
    # a source's 110, 0.10 or 10.5 does not state 10; a version's 2.4 is in 2.4.1
    for ground in ("It keeps 110 segments.", "A ratio of 0.10 is used.", "It takes 10.5 seconds."):
        assert figures.unsupported("It keeps 10 segments [1].", [ground]) == ["10"], ground
    assert figures.unsupported("It keeps 10 segments [1].", ["Keep 10, not more."]) == []
    assert figures.unsupported("Milvus 2.4 supports it [1].", ["Since Milvus 2.4.1 it is supported."]) == []
    assert figures.unsupported("Up to 1,024 MB [1].", ["at most 1024 MB"]) == []


def test_a_sentence_that_only_points_at_the_sources_goes_with_the_withheld_one():
    answer, withheld = figures.withhold("Milvus 2.4 的一个集群里最多可以创建 256 个 database。这个信息可以从 [2] 中找到。",
                                        SOURCES, "zh")
    assert withheld == ["256"] and answer.startswith("文档中没有说明。") and "[2]" not in answer
    answer, _ = figures.withhold("A server runs at most 200 CDC tasks. This is specified in [4]. "
                                 "The standby takes over within 60 seconds [1].", SOURCES, "en")
    assert "[4]" not in answer and answer.startswith("The standby takes over within 60 seconds [1].")
    assert figures.is_pointer("For more information, see [3].") and not figures.is_pointer("It listens on 19530 [1].")
    assert figures.is_pointer("According to the documentation [2].")
    assert figures.is_pointer("According to [1], [2].") and figures.is_pointer("According to [2]:")
    assert not figures.is_pointer("According to [2], the limit is high.")
    assert not figures.is_pointer("According to the PACELC theorem, strong consistency raises latency [1].")


def test_a_single_digit_counts_with_a_unit_and_is_grounded_by_its_word():
    assert figures.figures("回收 5 分钟。About 5% less, 3 replicas, 2x faster, 8GB of RAM.") == ["5 分钟", "5%", "2x", "8 GB"]
    grounds = ["The pool drops a connection after five minutes.", "It needs 8 GiB of memory.", "两倍的速度"]
    assert figures.unsupported("It drops it after 5 min, needs 8 GB and is 2x faster.", grounds) == []
    assert figures.unsupported("It drops it after 5 hours.", grounds) == []  # same kind of unit: time
    assert figures.unsupported("It saves 5% and takes 3 replicas.", grounds) == ["5%"]
    answer, withheld = figures.withhold("PyMilvus 连接池里的空闲连接默认会自动回收 5 分钟。[2]", SOURCES, "zh")
    assert withheld == ["5 分钟"] and answer.startswith("文档中没有说明。")


def test_the_marker_after_a_withheld_sentence_goes_with_it():
    answer, withheld = figures.withhold(
        "Shards spread data across query nodes [2]. The buffer holds 64 MB. [2]", ["Shards spread data across query nodes."], "en")
    assert withheld == ["64 MB"] and answer.startswith("Shards spread data across query nodes [2].\n\n(Left out:")


def test_a_figure_with_a_unit_needs_a_source_giving_that_number_with_a_unit_of_its_kind():
    code = "vectors = [[random.random() for _ in range(8)] for _ in range(10)]\nentities = [vectors]"
    answer, withheld = figures.withhold("PyMilvus 连接池里的空闲连接默认会在 10 分钟后被自动回收。[1]", [code], "zh")
    assert withheld == ["10 分钟"] and answer.startswith("文档中没有说明。")
    # the same number with a unit of its kind, in other words or a table row away, grounds it
    assert figures.unsupported("空闲连接 10 分钟后回收 [1]。", ["Idle connections are closed after 10 minutes."]) == []
    row = "| `pool.idleTimeout` | Seconds an idle connection is kept before it is closed. | 10 |"
    assert figures.unsupported("An idle connection is kept for 10 seconds [2].", [row]) == []
    assert figures.unsupported("An idle connection is kept for 10 seconds [2].", ["It holds 10 GB."]) == ["10 seconds"]
    # without a unit a two-digit number is still grounded by the number alone
    assert figures.unsupported("Milvus keeps 10 replicas.", [code]) == []


def test_units_in_other_spellings_ground_a_figure_and_a_list_of_digits_is_no_figure():
    pairs = [("It waits 100 ms.", "a timeout of 100 milliseconds"), ("Logs are kept 24 hours.", "retention: 24h"),
             ("Segments seal after 30 minutes.", "sealing: 30m"), ("A batch is 64 MB.", "64 megabytes per batch"),
             ("GPU search is 10x faster.", "10× faster on a GPU"), ("It is 1,024 MB.", "limit 1024 MB"),
             ("Use 2.5 GB.", "needs 2.5 GB of memory")]
    for answer, source in pairs:
        assert figures.unsupported(answer, [source]) == [], (answer, source)
    assert figures.figures("Follow steps 1,2 and 3.") == []
    assert figures.withhold("Follow steps 1,2 and 3 [1].", ["Step 1. Step 2. Step 3."], "en")[1] == []


def test_asked_for_a_quantity_an_answer_whose_only_figure_was_invented_says_the_documents_do_not_say():
    asked = ["What is the maximum number of CDC tasks a single server can run?", "空闲连接默认多久会被自动回收？",
             "How long does the standby take to take over?", "一个 collection 默认会分成几个 shard？"]
    assert all(figures.asks_for_figure(q) for q in asked)
    assert not any(figures.asks_for_figure(q) for q in ["Milvus 单机版由哪几个组件组成？", "How is data stored in Milvus?",
                                                         "It exceeds max length. Why?"])
    hedge = ("A server runs at most 200 CDC tasks [2]. How many depends on the resources available, such as CPU "
             "and memory [2].")
    answer, withheld = figures.withhold(hedge, SOURCES, "en", asks_figure=True)
    assert withheld == ["200"] and answer.startswith("The documents do not say.") and "[2]" not in answer
    assert answer_text.says_not_found(answer)
    # not asked for a quantity, what is left is still shown
    answer, _ = figures.withhold(hedge, SOURCES, "en")
    assert answer.startswith("How many depends on the resources") and "(Left out:" in answer
    # a lone marker paragraph after talk around the figure is no answer either
    answer, _ = figures.withhold("空闲连接默认会在 10 分钟后被自动回收。这个时间可以通过参数来配置。\n\n[1]", SOURCES, "zh",
                                 asks_figure=True)
    assert answer.startswith("文档中没有说明。") and "[1]" not in answer


def test_asked_for_a_quantity_an_answer_that_still_gives_a_grounded_number_keeps_it():
    answer, withheld = figures.withhold("IVF_SQ8 saves 70-75% of the memory [1]. The index needs 40 GB instead [1].",
                                        ["IVF_SQ8 cuts memory by 70-75%."], "en", asks_figure=True)
    assert withheld == ["40 GB"] and answer.startswith("IVF_SQ8 saves 70-75% of the memory [1].")
    assert "(Left out:" in answer


def test_the_quantity_rule_keeps_answers_that_still_give_a_number_in_any_form():
    assert not figures.asks_for_figure("Which index has the lowest latency?")
    assert not figures.asks_for_figure("HNSW 和 IVF 最大的区别是什么？")
    assert figures.asks_for_figure("What is the longest name a collection can have?")
    assert figures.asks_for_figure("一个 segment 默认最大是多大？")
    # a number written right after a Chinese character is a figure, checked like any other
    assert figures.figures("空闲连接默认30分钟后回收") == ["30 分钟"]
    kept = {"zh": "最多可以运行16个任务[1]。启动需要 30 分钟。", "en": "Set `max_tasks: 16` in cdc.yaml [1]. Startup takes 30 minutes."}
    for lang, answer in kept.items():
        shown, withheld = figures.withhold(answer, ["max_tasks: 16 最多可以运行16个任务"], lang, asks_figure=True)
        assert withheld == ["30 分钟" if lang == "zh" else "30 minutes"] and "16" in shown, shown
    shown, _ = figures.withhold("At most sixteen tasks run [1]. Startup takes 30 minutes.", ["sixteen tasks"], "en",
                                asks_figure=True)
    assert shown.startswith("At most sixteen tasks run [1].")


def test_a_backtick_nothing_closes_does_not_hide_a_figure():
    """Inline code is a span its line closes; a lone backtick is a slip, and what follows it is a
    claim like any other (a fence left open still runs to the end: that is code)."""
    assert figures.figures("Set the `nlist value to 4096 for a 1 GB segment [1].") == ["4096", "1 GB"]
    assert figures.figures("Set `nlist` to `4096` [1].") == []
    assert figures.figures("```\nnlist = 4096\n") == []


def test_an_answer_gives_a_figure_with_a_number_in_any_form_or_by_saying_there_is_no_limit():
    for answer in ("It keeps 16 shards [1].", "Two replicas.", "默认两个分片。", "There is no limit on partitions [1].",
                   "No limits apply.", "Unlimited.", "分区数量没有限制。[1]", "无上限。"):
        assert figures.gives_figure(answer), answer
    for answer in ("It depends on the memory allocated [1].", "空闲连接默认会自动回收。[1]", "It is configurable."):
        assert not figures.gives_figure(answer), answer
    for answer in ("There is no hard limit [1].", "It is not limited.", "no upper bound", "不受限制。", "没有明确的上限。"):
        assert figures.gives_figure(answer), answer
    assert not figures.gives_figure("There is no capacity planning guide.")
