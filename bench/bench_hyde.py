"""Retrieval with a passage the model writes as the answer (HyDE) added to the query (BENCHMARKS §14).

Where the evidence ranks (the retrieval eval's rule) for each answerable dev question: the question
alone, the question plus the model's passage in one search, the passage alone, and for Chinese
questions the question plus the cross-lingual rendering that ships. Needs a KB of the whole
milvus-docs corpus and an installed model:

    LOCALRAG_HOME=... .venv/bin/python bench/bench_hyde.py --kb milvus --model qwen2.5-coder-1.5b-instruct OUT.json
"""

from __future__ import annotations

import argparse
import json
import time

from common import SHARED_DIR

from localrag.api import LocalRAG
from localrag.kb.evaluate import contains_evidence
from localrag.rag import crosslingual

PROMPTS = {
    "p1": "Write a short passage, two or three sentences, from the product documentation that answers this "
          "question. Write only the passage, in English.\n\nQuestion: {q}",
    "p2": "Answer this question in two or three sentences, the way the product's documentation would, naming the "
          "exact settings, commands or terms it would use. Write in English. If you are unsure, still write the "
          "most likely passage.\n\nQuestion: {q}",
}


def rank(hits, evidence: str) -> int | None:
    return next((h.rank for h in hits if contains_evidence(h.text, evidence)), None)


def write(engine, content: str, max_tokens: int) -> str:
    msgs = [{"role": "user", "content": content}]
    return "".join(ev.text for ev in engine.stream(msgs, max_tokens=max_tokens, reasoning_budget=0,
                                                   temperature=0.0, top_p=1.0, seed=0) if ev.kind == "answer").strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--kb", default="milvus")
    ap.add_argument("--model", default=None)
    ap.add_argument("--questions", default=str(SHARED_DIR / "eval" / "milvus-dev.jsonl"))
    args = ap.parse_args()
    questions = [json.loads(line) for line in open(args.questions, encoding="utf-8") if line.strip()]
    conv = LocalRAG().conversation(args.kb, model=args.model)
    conv.ensure_loaded()
    engine, ret = conv.engine, conv.retriever
    rows = []
    for q in (q for q in questions if q.get("source")):
        row = {"id": q["id"], "lang": q["lang"], "kind": q["kind"], "base": rank(ret.search(q["question"], k=10), q["evidence"])}
        for name, template in PROMPTS.items():
            t = time.perf_counter()
            text = write(engine, template.format(q=q["question"]), 96)
            row[name + "_s"], row[name + "_text"] = round(time.perf_counter() - t, 2), text
            row[name] = rank(ret.search(q["question"] + "\n" + text, k=10), q["evidence"])
            row[name + "_only"] = rank(ret.search(text, k=10), q["evidence"]) if text else None
        if q["lang"] == "zh":
            rendered = crosslingual.clean(write(engine, crosslingual.messages(q["question"], "en")[0]["content"], 64),
                                          q["question"], "en")
            row["xl"] = rank(ret.search(q["question"] + "\n" + rendered, k=10), q["evidence"]) if rendered else row["base"]
        rows.append(row)
        print(q["id"], {k: v for k, v in row.items() if not k.endswith("_text")}, flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
    for lang in ("en", "zh"):
        for key in ["base", "xl"] + [x for p in PROMPTS for x in (p, p + "_only")]:
            rs = [r for r in rows if r["lang"] == lang and key in r]
            if rs:
                at = [sum(1 for r in rs if r[key] and r[key] <= k) for k in (1, 3, 5, 10)]
                mrr = sum(1 / r[key] for r in rs if r[key]) / len(rs)
                print(f"{lang} {key:8s} n={len(rs)} @1/3/5/10 {at} MRR {mrr:.3f}")


if __name__ == "__main__":
    main()
