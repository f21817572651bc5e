"""The answer pipeline on real parts: SmolLM2 + MiniLM over the shipped sample, and an R1-format GGUF."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from localrag import answer

REPO = Path(__file__).resolve().parent.parent
LOCALRAG = REPO / ".venv" / "bin" / "localrag"


# --- follow-ups and the relevance gate (no model needed) ---------------------------------------


@pytest.mark.parametrize(
    "question, expected",
    [
        ("and on Windows?", True),
        ("How do I enable it?", True),
        ("What about the 7B one?", True),
        ("Why?", True),
        ("那它呢？", True),
        ("How does localrag pick a model for a machine without a GPU?", False),
        ("Which embedder does a new knowledge base get on a CPU machine?", False),
        ("如何在没有网络的机器上导入模型文件？", False),
    ],
)
def test_is_followup(question, expected):
    assert answer.is_followup(question) is expected


def _turn(question, query=None, followup=False):
    return answer.Turn(question, query or question, followup, "", "", [])


def test_retrieval_query_prepends_the_thread():
    assert answer.retrieval_query("How do I import a model offline?", []) == ("How do I import a model offline?", False)
    first = _turn("How do I import a model offline?")
    q, rewritten = answer.retrieval_query("and on Windows?", [first])
    assert rewritten and q == "How do I import a model offline? and on Windows?"
    # A chain of follow-ups goes back to the last self-contained question, not further.
    second = _turn("and on Windows?", q, followup=True)
    q2, _ = answer.retrieval_query("what about macOS?", [first, second])
    assert q2 == f"{q} what about macOS?"
    # A self-contained question stands alone.
    assert answer.retrieval_query("What is the default embedder on a CPU machine?", [first])[1] is False


@dataclass
class ScoredHit:
    dense_score: float | None
    sparse_score: float | None = None
    rerank_score: float | None = None


def test_relevance_gate():
    assert not answer.relevant([])
    assert answer.relevant([ScoredHit(0.9)])
    assert not answer.relevant([ScoredHit(0.05), ScoredHit(0.1)])
    # The reranker's judgement wins when there is one.
    assert not answer.relevant([ScoredHit(0.9, rerank_score=-9.0)])
    assert answer.relevant([ScoredHit(0.1, rerank_score=3.0)])
