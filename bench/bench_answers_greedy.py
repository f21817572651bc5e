"""Every dev question answered greedily (temperature 0, seed 0), for A/B comparisons of a prompt or
answer-finishing change (BENCHMARKS §16).

Sampled runs (`localrag eval --answers --seed N`) move by two or three answers a measure from seed
to seed; greedy runs differ only where the change does. Run it at both commits on the same KB and
compare the two reports question by question:

    LOCALRAG_HOME=... .venv/bin/python bench/bench_answers_greedy.py --kb milvus --model qwen2.5-coder-1.5b-instruct OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import OUT_DIR, SHARED_DIR

from localrag.api import LocalRAG
from localrag.rag import evaluate
from localrag.rag.session import Sampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(OUT_DIR / "answers_greedy.json"))
    ap.add_argument("--kb", default="milvus")
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--questions", default=str(SHARED_DIR / "eval" / "milvus-dev.jsonl"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="three questions: checks it runs, figures mean nothing")
    args = ap.parse_args()
    questions = evaluate.load_questions(args.questions)[: 3 if args.quick else (args.limit or None)]
    greedy = Sampling(temperature=0.0, seed=0)
    with LocalRAG() as rag:
        def ask(q):
            return rag.conversation(args.kb, model=args.model).ask(q, sampling=greedy)

        def progress(i, n, s):
            print(f"[{i}/{n}] {s.id} correct={s.correct} evidence_cited={s.cited_evidence} ttft={s.ttft_s:.1f}s", flush=True)

        scores = evaluate.run(questions, ask, progress=progress)
    report = evaluate.report(scores, kb=args.kb, questions=args.questions, n=len(scores))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
