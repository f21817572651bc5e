"""Retrieval scoring rules (shared/eval/README.md) and `localrag eval` on a small real KB."""

from __future__ import annotations

import json

from localrag.kb import ingest as ingest_mod
from localrag.kb.evaluate import QuestionResult, contains_evidence, load_questions, normalise, score
from tests.kb_helpers import embedder, install_minilm, minilm_dir, run_cli, settings_for, small_corpus  # noqa: F401


def test_normalisation_rules():
    assert normalise("**Milvus**  `stores`\n| data (in) [MinIO] > #x_y") == "milvusstoresdatainminioxy"
    assert normalise("ＡＢＣ１２３") == "abc123"  # NFKC folds full-width forms
    assert contains_evidence("Use `BAAI/bge-reranker-v2-m3` here.", "BAAI/bge-reranker-v2-m3")
    assert not contains_evidence("nothing here", "BAAI/bge-reranker-v2-m3")


def test_long_evidence_cut_by_a_chunk_border_needs_a_60_char_run():
    evidence = "Inserted data, including vector data, scalar data, and collection-specific schema, are stored in persistent storage as incremental log."
    tail = evidence[len(evidence) // 3 :]  # a chunk that holds only the last two thirds
    assert len(normalise(tail)) >= 60 and contains_evidence("prefix text. " + tail, evidence)
    short_run = evidence[:50]
    assert not contains_evidence(short_run, evidence)


def test_scores_per_language():
    results = [
        QuestionResult("1", "en", "faq", 1),
        QuestionResult("2", "en", "faq", 4),
        QuestionResult("3", "en", "faq", None),
        QuestionResult("4", "zh", "faq", 2),
    ]
    s = score(results)
    assert s["en"]["n"] == 3 and s["en"]["hit@1"] == round(1 / 3, 4) and s["en"]["hit@5"] == round(2 / 3, 4)
    assert s["en"]["mrr"] == round((1 + 0.25) / 3, 4)
    assert s["zh"]["hit@1"] == 0 and s["zh"]["hit@3"] == 1 and s["zh"]["mrr"] == 0.5
    assert s["all"]["n"] == 4


def test_cli_eval_json(home, tmp_path, shared_dir, embedder, minilm_dir):
    corpus = small_corpus(shared_dir, tmp_path / "corpus")
    ingest_mod.ingest(settings_for(home), [corpus], kb="t", embedder=embedder)
    dev = [json.loads(line) for line in (shared_dir / "eval" / "milvus-dev.jsonl").read_text(encoding="utf-8").splitlines()]
    wanted = {"en/faq/product_faq.md", "en/faq/performance_faq.md", "en/rerankers/rerankers-bge.md"}
    picked = [q for q in dev if q["source"] in wanted and q["lang"] == "en"][:4]
    picked.append({"id": "u", "lang": "en", "question": "Who won the 1998 world cup?", "source": None, "evidence": None})
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps(q) for q in picked), encoding="utf-8")
    install_minilm(home, minilm_dir)
    r = run_cli(["eval", str(qfile), "--kb", "t", "--json"], home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["embedder"] == "all-minilm-l6-v2"
    en = out["scores"]["en"]
    assert en["n"] == 4  # the unanswerable question is not scored
    assert en["hit@10"] >= en["hit@5"] >= en["hit@1"] and en["hit@5"] >= 0.75
    assert 0 < en["mrr"] <= 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n", encoding="utf-8")
    assert len(load_questions(qfile)) == 5
    r = run_cli(["eval", str(bad), "--kb", "t"], home)
    assert r.returncode == 2 and "bad.jsonl:1" in r.stderr
