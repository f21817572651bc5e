"""The unseen question sets in bench/ hold what they claim: an answerable question's evidence is
a verbatim passage of its source file, with its answer keywords in it or beside it (a table row
names a setting and its value sits in the next cell or line); an unanswerable one names no
source. (Their answers are measured in BENCHMARKS §17-19; a set that drifted from the corpus would
measure nothing.) heldout-general.jsonl (set D, §19) asks how-to, concept and FAQ questions, 6 of
the Chinese ones answered only by an English file; heldout-quantities-e.jsonl (set E, §21) is a
second unseen quantity set, half of it asking for figures no page gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _norm(text: str) -> str:
    return re.sub(r"[\s,]", "", text).lower()  # as ../shared/eval/README.md compares keywords


@pytest.mark.parametrize("name", ["heldout-quantities.jsonl", "heldout-general.jsonl", "heldout-quantities-e.jsonl"])
def test_every_question_matches_the_corpus(shared_dir, name):
    rows = [json.loads(line) for line in (BENCH / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len({r["id"] for r in rows}) == len(rows)
    corpus = shared_dir / "corpora" / "milvus-docs"
    for r in rows:
        assert r["lang"] in ("en", "zh"), r["id"]
        if r["source"] is None:
            assert r["evidence"] is None and r["answer_keywords"] == [] and r["kind"] == "unanswerable", r["id"]
            continue
        text = (corpus / r["source"]).read_text(encoding="utf-8")
        at = text.find(r["evidence"])
        assert at >= 0, r["id"]
        beside = _norm(text[max(0, at - 800) : at + len(r["evidence"]) + 800])
        assert r["answer_keywords"] and all(_norm(k) in beside for k in r["answer_keywords"]), r["id"]
