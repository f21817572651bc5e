"""Is the evidence in the prompt? Every question's sources chosen and packed as `ask` packs them,
without generating an answer, so a retrieval or packing change is measured on every question set
in minutes instead of hours (BENCHMARKS §25).

Per question: whether a packed source holds the question's verbatim evidence, how many sources
were packed, the new prompt tokens, and the evidence's position among the packed sources. A
Chinese question over the mostly English corpus is rendered in English by the model first, as
`ask` does, so the model is loaded (once: the conversations share it).

    LOCALRAG_HOME=... .venv/bin/python bench/bench_packing.py --kb final OUT.json \
        [--questions A.jsonl B.jsonl] [--set retrieval.top_k=7 --set generation.source_tokens=800]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import BENCH_DIR, OUT_DIR, SHARED_DIR

from localrag.api import LocalRAG
from localrag.kb.evaluate import contains_evidence
from localrag.rag import evaluate
from localrag.rag.results import Retrieved

DEFAULT_SETS = [
    SHARED_DIR / "eval" / "milvus-dev.jsonl",
    BENCH_DIR / "heldout-general.jsonl",
    BENCH_DIR / "heldout-quantities.jsonl",
    BENCH_DIR / "heldout-quantities-e.jsonl",
]


def packed_for(conversation, question: str) -> Retrieved | None:
    """The packing `ask` would send, or None when the question is answered as not found."""
    events = conversation.ask(question)
    try:
        for ev in events:
            if isinstance(ev, Retrieved):
                return ev
    finally:
        events.close()
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(OUT_DIR / "packing.json"))
    ap.add_argument("--kb", default="milvus")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--questions", nargs="*", default=[str(p) for p in DEFAULT_SETS])
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a setting for this run, e.g. retrieval.top_k=7 (repeatable)")
    args = ap.parse_args()
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        try:
            parsed = json.loads(value)  # numbers and true/false as such
        except json.JSONDecodeError:
            parsed = value  # a name, e.g. retrieval.reranker=...
        overrides.setdefault(section, {})[name] = parsed
    rows = []
    with LocalRAG(**overrides) as rag:
        for path in args.questions:
            questions = [q for q in evaluate.load_questions(path) if q.answerable]
            for i, q in enumerate(questions, 1):
                ev = packed_for(rag.conversation(args.kb, model=args.model), q.question)
                sources = list(ev.packing.sources) if ev else []
                at = [k for k, s in enumerate(sources, 1) if any(contains_evidence(s.text, e) for e in q.evidences)]
                rows.append({
                    "set": Path(path).stem, "id": q.id, "lang": q.lang, "packed": bool(at),
                    "position": at[0] if at else None, "sources": len(sources),
                    "prompt_tokens": ev.prompt_tokens if ev else 0,
                    "files": [s.source for s in sources],
                })
                print(f"[{Path(path).stem} {i}/{len(questions)}] {q.id} packed={bool(at)} at={at[:1]} "
                      f"sources={len(sources)} tokens={rows[-1]['prompt_tokens']}", flush=True)
    summary = {}
    for name in sorted({r["set"] for r in rows}) + ["all"]:
        rs = [r for r in rows if name in ("all", r["set"])]
        summary[name] = {
            "n": len(rs), "packed": sum(r["packed"] for r in rs),
            "first": sum(r["position"] == 1 for r in rs),
            "median_prompt_tokens": statistics.median(r["prompt_tokens"] for r in rs),
            "median_sources": statistics.median(r["sources"] for r in rs),
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "summary": summary, "rows": rows},
                                         ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
