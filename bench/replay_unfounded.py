"""Which stored answers the no-figure check (rag/attribution.py ``unfounded``) replaces, on greedy
reports written before it (BENCHMARKS §26).

The check runs on the answer after figures were withheld and before citations are moved, and it
reads no citation number, so a stored report's answer and packed sources decide it as a live run
would (not for the 135M starter, which the check skips: its stored answers end with quoted source
sentences). Every answer it would replace is printed with its question; the totals are per
question kind (answerable or not) among the questions that ask for a quantity:

    .venv/bin/python bench/replay_unfounded.py bench/out/answers_greedy.json OTHER.json ...
"""

from __future__ import annotations

import argparse
import json

from localrag.rag import attribution, figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="reports of bench_answers_greedy.py or `localrag eval --answers --json`")
    args = ap.parse_args()
    totals = {"answerable": [0, 0, 0], "unanswerable": [0, 0, 0]}  # quantity questions, replaced, right before
    for path in args.reports:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)["questions"]
        for s in rows:
            if s.get("error") or not figures.asks_for_figure(s["question"]):
                continue
            sources = {p["n"]: p["text"] for p in s["packed"]}
            replaced = not s["withheld"] and attribution.unfounded(s["answer"], sources, s["question"])
            kind = "answerable" if s["answerable"] else "unanswerable"
            t = totals[kind]
            t[0] += 1
            t[1] += replaced
            t[2] += bool(s["correct"] if s["answerable"] else s["abstained"])
            if replaced:
                was = "unanswerable" if not s["answerable"] else "correct" if s["correct"] else "wrong"
                print(f"{path}: {s['id']} ({was})\n  Q: {s['question']}\n  A: {s['answer'][:300]}")
    for kind, (n, replaced, right) in totals.items():
        what = "abstained" if kind == "unanswerable" else "correct"
        print(f"{kind}: {n} quantity questions, {replaced} answers replaced; {right} {what} before")


if __name__ == "__main__":
    main()
