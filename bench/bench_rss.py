"""Peak memory (RSS) of `localrag ingest` and `localrag ask`, as the user would run them.

Each command runs as a child process in a temporary LOCALRAG_HOME. Two figures per run:

* tree peak: a psutil sampler (every 50 ms) sums the RSS of the child and all its descendants
  (Milvus Lite runs its own server process). Pages shared between processes count twice, so
  this is an upper bound of what the command costs the machine;
* largest process: /usr/bin/time -v's "Maximum resident set size" (the kernel's exact high-water
  mark of the largest single process in the tree, which sampling can miss).

llama.cpp maps the GGUF, so weights count as RSS once read (file-backed: the kernel may drop and
re-read them under pressure, unlike the KV cache and compute buffers).

``ask`` uses the exact-architecture 1.5B Q4_K_M made by tests/synthgguf.py, linked into the
temporary model store as r1-distill-qwen-1.5b:Q4_K_M (its weights are random, so memory and
speed are real and the text is not), with the reasoning budget and answer cut to 64 tokens each:
memory peaks at load and prefill, not while decoding. ``--model smollm2`` uses the starter.

    .venv/bin/python bench/bench_rss.py [--quick] [--corpus DIR]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, SHARED_DIR, VENV_BIN, PeakRSS, bench_args, load_check, report, stats  # noqa: E402

MIB = 1 << 20
QUESTION = "How do I create a collection with a custom schema in Milvus?"
SAMPLE_QUESTION = "How do I add documents to a knowledge base?"  # answerable from the shipped sample docs


def run_measured(argv: list[str], env: dict) -> dict:
    """Run argv under /usr/bin/time -v with a tree sampler; peak bytes and wall seconds."""
    time_bin = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
    cmd = ([time_bin, "-v"] if time_bin else []) + argv
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with PeakRSS(proc.pid) as sampler:
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    err_text = err.decode(errors="replace")
    # 3: ingest finished but skipped some files (the corpus has unreadable ones on purpose)
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {err_text[-1500:]}")
    max_single = None
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err_text)
    if m:
        max_single = int(m.group(1)) * 1024
    return {"tree_peak": sampler.peak, "largest_process": max_single, "wall_s": wall,
            "samples": sampler.samples, "stdout": out.decode(errors="replace")}


def link_synthetic_model(home: Path) -> str:
    """Put the cached exact-architecture 1.5B Q4_K_M into the store (a symlink + manifest); its spec."""
    from bench_generation import synthetic_ggufs

    gguf = synthetic_ggufs(create=True)["Q4_K_M"]
    qdir = home / "models" / "r1-distill-qwen-1.5b" / "Q4_K_M"
    qdir.mkdir(parents=True, exist_ok=True)
    link = qdir / "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
    if not link.exists():
        link.symlink_to(gguf)
    manifest = {"file": link.name, "files": [link.name], "source": "import", "note": "bench: random weights"}
    (qdir / "localrag-model.json").write_text(json.dumps(manifest), encoding="utf-8")
    return "r1-distill-qwen-1.5b:Q4_K_M"


def main() -> None:
    args = bench_args(
        __doc__.splitlines()[0],
        runs=2,
        quick_runs=1,
        extra=lambda p: (
            p.add_argument("--corpus", type=Path, default=None,
                           help="documents to ingest (default: shared milvus-docs; the sample docs with --quick)"),
            p.add_argument("--model", default="r1-1.5b", help="r1-1.5b (synthetic Q4_K_M) or smollm2"),
            p.add_argument("--ingest-runs", type=int, default=1,
                           help="full ingests (minutes each on 2 cores; the peak barely moves between runs)"),
        ),
    )
    corpus = args.corpus or (REPO_ROOT / "localrag" / "data" / "sample" if args.quick
                             else SHARED_DIR / "corpora" / "milvus-docs")
    load = load_check("rss")
    home = Path(tempfile.mkdtemp(prefix="localrag-bench-rss-"))
    env = {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    (home / "config.toml").write_text("[generation]\nreasoning_budget = 64\nmax_answer_tokens = 64\n")
    localrag = str(VENV_BIN / "localrag")
    rows: list[dict] = []
    raw: dict[str, list[dict]] = {"ingest": [], "ask": []}
    ask_json = None
    try:
        for i in range(args.ingest_runs):
            kb = f"bench{i}"  # a new KB each run: a full ingest, not the unchanged-files skip
            r = run_measured([localrag, "ingest", str(corpus), "--kb", kb], env)
            r.pop("stdout")
            raw["ingest"].append(r)
        model = link_synthetic_model(home) if args.model == "r1-1.5b" else "smollm2-135m-instruct"
        for _ in range(args.runs):
            question = SAMPLE_QUESTION if corpus.name == "sample" else QUESTION
            r = run_measured([localrag, "ask", question, "--kb", "bench0", "--model", model, "--json"], env)
            try:
                ask_json = json.loads(r.pop("stdout"))
            except ValueError:
                ask_json = None
            raw["ask"].append(r)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    for what, runs_ in raw.items():
        tree = stats(r["tree_peak"] / MIB for r in runs_)
        single = [r["largest_process"] / MIB for r in runs_ if r["largest_process"]]
        rows.append({
            "command": f"localrag {what}" + (f" ({args.model})" if what == "ask" else f" ({corpus.name})"),
            "tree_peak_MiB": tree,
            "largest_process_MiB": stats(single) if single else None,
            "wall_s": stats(r["wall_s"] for r in runs_),
        })
    stats_json = None
    if isinstance(ask_json, dict):
        stats_json = {k: v for k, v in ask_json.items() if k not in ("answer", "thinking", "sources")}
    report("rss", rows, args=args, load=load, columns=["command", "tree_peak_MiB", "largest_process_MiB", "wall_s"],
           extra={"corpus": str(corpus), "model": args.model, "raw": raw, "ask_result": stats_json})


if __name__ == "__main__":
    main()
