"""Answer scoring (rag/evaluate.py) on synthetic answers: no model runs here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from localrag.rag import evaluate as ev
from localrag.rag.prompt import Packing
from localrag.rag.results import AnswerDelta, Citation, Done, Retrieved, Timings


@dataclass
class FakeSource:
    n: int
    text: str
    source: str = "a.md"


@dataclass
class FakeResult:  # the fields of rag.results.AnswerResult the scorer reads
    answer: str
    citations: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    matched: list = field(default_factory=list)
    not_found: bool = False
    unfounded: bool = False
    timings: Timings = field(default_factory=lambda: Timings(prompt_tokens=900, gen_tokens=40, ttft_s=5.0, total_s=9.0))


EVIDENCE = "etcd stores Milvus module metadata; MinIO stores entities."
Q = ev.AnswerQuestion("en-002", "en", "faq", "Are my vectors in etcd?", "en/faq/product_faq.md", EVIDENCE,
                      ("metadata", "MinIO"))
UNANSWERABLE = ev.AnswerQuestion("en-099", "en", "unanswerable", "What does Milvus cost on Mars?", None, None, ())
ZH = ev.AnswerQuestion("zh-001", "zh", "faq", "Milvus 的数据存在哪里？", "zh/faq.md", "元数据存储在 etcd 中", ("etcd",))


def cite(n: int, text: str, source: str = "en/faq/product_faq.md") -> Citation:
    return Citation(n, source, None, "", text)


def test_keywords_compare_as_the_readme_says():
    assert ev.has_keywords("It keeps metadata in Min IO, not vectors.", ["metadata", "MinIO"])  # whitespace ignored
    assert ev.has_keywords("set minio.rootPath per instance", ["minio.rootPath"])
    assert ev.has_keywords("1,024 dimensions", ["1024"])  # commas ignored
    assert not ev.has_keywords("no keywords here", ["etcd"])
    assert not ev.has_keywords("anything", [])  # nothing to be right about is not "correct"


def test_a_correct_cited_answer_pointing_at_the_evidence():
    src = "Where does data go?\n" + EVIDENCE + " More text."
    result = FakeResult("Your vectors are not in etcd: etcd keeps metadata and MinIO stores entities [1].",
                        citations=[cite(1, src)], sources=[FakeSource(1, src)])
    s = ev.score_answer(Q, result, ttft_s=4.0, total_s=8.0)
    assert s.correct and s.cited and s.cited_evidence and s.supported_evidence and s.evidence_packed
    assert not s.says_not_found and s.lang_ok and s.answer_lang == "en"
    assert (s.ttft_s, s.total_s, s.prompt_tokens) == (4.0, 8.0, 900)


def test_a_citation_of_the_wrong_passage_is_cited_but_not_evidence():
    result = FakeResult("Milvus keeps metadata in MinIO [2].", citations=[cite(2, "Milvus supports GPUs.")],
                        sources=[FakeSource(1, EVIDENCE), FakeSource(2, "Milvus supports GPUs.")])
    s = ev.score_answer(Q, result)
    assert s.correct and s.cited and not s.cited_evidence and s.evidence_packed


def test_the_report_keeps_what_was_left_out_and_the_figures_sources():
    from localrag.rag import prompt
    from localrag.rag.figure_quotes import FigureQuote

    result = FakeResult("MinIO keeps up to 1,024 buckets [1].", citations=[cite(1, EVIDENCE)],
                        sources=[FakeSource(1, EVIDENCE)])
    result.left_out = [prompt.LeftOut("arm.md", None, "", 0, "repeats source [1]")]
    result.figure_quotes = [FigureQuote("1,024", 1, "up to 1024 buckets")]
    s = ev.score_answer(Q, result)
    assert s.left_out == [{"source": "arm.md", "page": None, "heading": "", "reason": "repeats source [1]"}]
    assert s.figure_quotes[0]["figure"] == "1,024" and s.figure_quotes[0]["n"] == 1
    assert json.loads(json.dumps(ev.report([s])))["questions"][0]["left_out"][0]["reason"] == "repeats source [1]"


def test_matched_sources_count_as_support_not_as_citations():
    result = FakeResult("Etcd keeps metadata; MinIO keeps the entities.", matched=[cite(1, EVIDENCE)],
                        sources=[FakeSource(1, EVIDENCE)])
    s = ev.score_answer(Q, result)
    assert not s.cited and s.matched and s.supported_evidence and not s.cited_evidence


@pytest.mark.parametrize("answer, not_found", [
    ("The documents do not say.", True),
    ("The documents don't say what it costs.", True),
    ("The provided sources do not mention pricing on Mars.", True),
    ("The documentation does not specify the maximum.", True),
    ("There is no information about that in the sources.", True),
    ("文档中没有提到这一点。", True),
    ("根据资料，无法确定。", True),
    ("无法从所给文档中找到答案。", True),
    ("Milvus stores metadata in etcd [1].", False),
    # the question's own words: "can't pull from Docker Hub" is a how-to, not a refusal
    ("如果无法从 Docker Hub 拉取镜像，可以添加其它的镜像源 [1]。", False),
])
def test_says_not_found(answer, not_found):
    assert ev.says_not_found(answer) is not_found


def test_abstaining_needs_no_citation():
    honest = ev.score_answer(UNANSWERABLE, FakeResult("The documents do not say."))
    assert honest.abstained and honest.correct is None
    hedged = ev.score_answer(UNANSWERABLE, FakeResult("The documents do not say, but see [1].", citations=[cite(1, "x")]))
    assert not hedged.abstained
    gated = ev.score_answer(UNANSWERABLE, FakeResult("Nothing close enough.", not_found=True))
    assert gated.abstained
    wrong = ev.score_answer(Q, FakeResult("The documents do not say."))
    assert wrong.says_not_found and not wrong.correct


@pytest.mark.parametrize("answer, lang", [
    ("Milvus 将元数据存储在 etcd 中，向量数据存储在 MinIO 中 [1]。", "zh"),
    ("使用 `MilvusClient(uri=\"http://localhost:19530\", token=\"root:Milvus\")` 连接。", "zh"),
    ("Milvus stores metadata in etcd [1].", "en"),
    ("Set `minio.rootPath` to a unique value (例如 a-b).", "en"),
    ("可以。[1]", "zh"),
    ("Yes, 是的 [1].", "en"),
    ("[1]", "en"),
])
def test_answer_language(answer, lang):
    assert ev.answer_language(answer) == lang


def test_summary_per_language_and_kind():
    src = EVIDENCE
    scores = [
        ev.score_answer(Q, FakeResult("metadata in etcd, entities in MinIO [1]", citations=[cite(1, src)], sources=[FakeSource(1, src)])),
        ev.score_answer(Q, FakeResult("No idea.")),
        ev.score_answer(UNANSWERABLE, FakeResult("The documents do not say.", unfounded=True)),
        ev.score_answer(ZH, FakeResult("元数据存储在 etcd 中 [1]。", citations=[cite(1, "元数据存储在 etcd 中。", "zh/faq.md")])),
    ]
    summary = ev.summarise(scores)
    assert summary["all"]["n"] == 4 and summary["all"]["answerable"] == 3
    assert summary["lang:en"]["correct"] == 0.5 and summary["lang:zh"]["correct"] == 1.0
    assert summary["lang:en"]["cited"] == 0.5 and summary["lang:zh"]["cited_evidence"] == 1.0
    assert summary["kind:unanswerable"]["abstained"] == 1 and summary["kind:unanswerable"]["unanswerable"] == 1
    assert summary["all"]["lang_ok"] == 1.0
    assert summary["kind:unanswerable"]["unfounded"] == 1 and summary["lang:zh"]["unfounded"] == 0
    json.dumps(ev.report(scores, kb="x"))  # the report is plain JSON


def test_run_times_the_stream_and_survives_a_failing_question():
    def ask(question: str):
        if "Mars" in question:
            raise RuntimeError("boom")
        yield Retrieved(Packing(), rendered="where is metadata kept")
        yield AnswerDelta("metadata ")
        yield Done(FakeResult("metadata in etcd, entities in MinIO"))  # type: ignore[arg-type]

    seen = []
    scores = ev.run([Q, UNANSWERABLE], ask, progress=lambda i, n, s: seen.append((i, n, s.id)))
    assert seen == [(1, 2, "en-002"), (2, 2, "en-099")]
    assert scores[0].correct and scores[0].ttft_s <= scores[0].total_s
    assert scores[0].searched_as == "where is metadata kept"  # the report shows what else was searched
    assert scores[1].error == "RuntimeError: boom"


def test_a_question_that_failed_counts_as_a_miss():
    """Three failures of four must not read "correct 1.00": a failed question is a miss on every rate."""
    src = EVIDENCE
    good = ev.score_answer(Q, FakeResult("metadata in etcd, entities in MinIO [1]", citations=[cite(1, src)],
                                         sources=[FakeSource(1, src)]))

    def ask(question: str):
        raise RuntimeError("unknown model")
        yield  # pragma: no cover

    failed = ev.run([Q, Q, UNANSWERABLE], ask)
    summary = ev.summarise([good, *failed])["all"]
    assert summary["errors"] == 3 and summary["answerable"] == 3
    assert summary["correct"] == round(1 / 3, 3) and summary["cited"] == round(1 / 3, 3)
    assert summary["lang_ok"] == 0.25 and summary["abstained"] == 0 and summary["unanswerable"] == 1


@pytest.mark.parametrize("row, why", [
    ({"question": None}, "non-empty string"),
    ({"question": "   "}, "non-empty string"),
    ({"question": "Which port?", "answer_keywords": "19530"}, "list of strings"),
])
def test_bad_question_rows_are_refused_with_their_line(tmp_path, row, why):
    from localrag.errors import BadInput

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "fine"}) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as err:
        ev.load_questions(path)
    assert f"{path}:2:" in err.value.message and why in err.value.message


def test_question_files_empty_bom_and_not_utf8(tmp_path):
    from localrag.errors import BadInput
    from localrag.kb import evaluate as kb_eval

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    for load in (ev.load_questions, kb_eval.load_questions):
        with pytest.raises(BadInput, match="no questions in"):
            load(empty)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + json.dumps({"question": "Which port?", "answer_keywords": ["19530"]}).encode())
    assert ev.load_questions(bom)[0].keywords == ("19530",)  # as Windows Notepad saves UTF-8
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps({"question": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(BadInput, match="not UTF-8"):
        ev.load_questions(latin1)


def test_load_questions_reads_the_dev_set(shared_dir):
    qs = ev.load_questions(shared_dir / "eval" / "milvus-dev.jsonl")
    assert len(qs) == 60
    assert sum(not q.answerable for q in qs) == 5
    assert all(q.keywords for q in qs if q.answerable)
    assert any(q.evidence2 for q in qs)


def test_the_wait_is_explained_before_the_first_token():
    from localrag.cli.views.answer import reading_line
    from localrag.rag import prompt
    from localrag.rag.results import Retrieved

    src = prompt.Source(1, "x", "a.md", None, "", "c", 1.0, 10)
    packing = prompt.Packing(sources=[src, src, src, src], tokens=1700)
    assert reading_line(Retrieved(packing, frozenset({1}), 1900, 23.6)).strip() == "reading 1,900 tokens of 4 sources, ~24 s…"
    assert reading_line(Retrieved(packing, frozenset({1}), 0, 0.0)).strip() == "reading the sources…"


def test_notes_before_the_answer_print_brackets_and_names_as_text():
    """"[generation] source_tokens" is a config section, not rich markup; names print as given."""
    import io

    from rich.console import Console

    from localrag.cli.views.answer import AnswerView
    from localrag.rag import prompt

    out = io.StringIO()
    view = AnswerView(Console(file=out, width=200), show_thinking=False, verbose=False, err=Console(file=out, width=200))
    packing = prompt.Packing(left_out=[
        prompt.LeftOut("a[1].md", None, "Setup", 300, "over the prompt budget"),
        prompt.LeftOut("arm.md", None, "", 0, "repeats source [1], faq.md"),
    ])
    packing.unmentioned = ["[bold]GraphQL"]
    view._left_out_note(packing)
    text = out.getvalue()
    assert "[generation] source_tokens" in text and "a[1].md" in text
    assert "1 retrieved passage(s) left out (repeats source [1], faq.md): arm.md" in text
    assert 'mentions "[bold]GraphQL"' in text


def test_a_citation_marker_is_not_a_keyword():
    assert not ev.has_keywords("一个 collection 默认会分成两个 shard。[2]", ["2"])
    assert ev.has_keywords("默认包含 2 个分片 [1]。", ["2"])
