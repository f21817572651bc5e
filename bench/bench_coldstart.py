"""Cold start: ``localrag --help`` and the first result of ``localrag search`` from a fresh process.

``--help`` is timed with hyperfine when it is installed (Debian: ``apt-get install hyperfine``),
else with repeated subprocess runs; both report the median of >= 5 runs after warm-up. The same
run times the floors it cannot beat -- ``python -c pass`` and ``import typer`` -- so a miss can
be split into "ours" and "the interpreter's". ``-X importtime`` lists the slowest imports.

``search`` runs against a small knowledge base built once in a temporary LOCALRAG_HOME (the
shipped sample docs; ``--corpus`` for another), each run a new process: with the page cache warm
(the usual case: the user ran localrag a minute ago) and, when this process may write
/proc/sys/vm/drop_caches (root), with the page cache dropped first (first run after boot).

    .venv/bin/python bench/bench_coldstart.py [--quick]
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, VENV_BIN, Target, bench_args, load_check, report, stats  # noqa: E402

HELP_TARGET_S = 0.4
QUERY = "How do I add documents to a knowledge base?"


def _env(home: Path) -> dict:
    return {**os.environ, "LOCALRAG_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def hyperfine(commands: dict[str, str], runs: int, warmup: int, env: dict) -> dict | None:
    """{name: Stats (s)} via hyperfine, or None when it is not installed."""
    exe = shutil.which("hyperfine")
    if not exe:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.json"
        cmd = [exe, "--style", "none", "--warmup", str(warmup), "--runs", str(runs), "--export-json", str(out), "-N"]
        for name, c in commands.items():
            cmd += ["--command-name", name, c]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        data = json.loads(out.read_text())
    return {r["command"]: stats(r["times"]) for r in data["results"]}


def subprocess_times(commands: dict[str, str], runs: int, warmup: int, env: dict) -> dict:
    res = {}
    for name, c in commands.items():
        argv = shlex.split(c)
        for _ in range(warmup):
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t0)
        res[name] = stats(times)
    return res


def slowest_imports(module: str, env: dict, top: int = 8) -> list[dict]:
    """Cumulative import time (us) of the slowest top-level-ish imports of one module."""
    res = subprocess.run([str(VENV_BIN / "python"), "-X", "importtime", "-c", f"import {module}"],
                         env=env, capture_output=True, text=True, check=True)
    rows = []
    for line in res.stderr.splitlines():
        # "import time:  self_us |  cumulative_us | <indent>module"; the header line says "cumulative"
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line[len("import time:"):].split("|", 2)
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append({"module": name.strip(), "depth": depth, "cumulative_ms": int(cum_us) / 1000})
    rows = [r for r in rows if r["depth"] <= 1]
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def build_kb(home: Path, corpus: Path, env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(VENV_BIN / "localrag"), "ingest", str(corpus), "--kb", "bench"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def time_search(env: dict, runs: int, cold_cache: bool) -> tuple[object, object, list[str]]:
    """(Stats to the first stdout byte, Stats to exit, notes) of fresh `localrag search` processes."""
    first, total, notes = [], [], []
    argv = [str(VENV_BIN / "localrag"), "search", QUERY, "--kb", "bench", "-k", "5"]
    for _ in range(runs):
        if cold_cache and not drop_caches():
            notes.append("cannot drop the page cache (not root): cold-cache runs skipped")
            return None, None, notes
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.read(1)
        t1 = time.perf_counter()
        out, err = p.communicate()
        t2 = time.perf_counter()
        if p.returncode != 0:
            raise RuntimeError(f"localrag search failed ({p.returncode}): {err.decode()[-500:]}")
        first.append(t1 - t0)
        total.append(t2 - t0)
    return stats(first), stats(total), notes


def main() -> None:
    args = bench_args(
        __doc__.splitlines()[0],
        runs=10,
        quick_runs=3,
        extra=lambda p: p.add_argument("--corpus", type=Path, default=REPO_ROOT / "localrag" / "data" / "sample",
                                       help="documents for the search KB (default: the shipped sample)"),
    )
    runs = max(args.runs, 5) if not args.quick else args.runs
    load = load_check("coldstart")
    py = VENV_BIN / "python"
    home = Path(tempfile.mkdtemp(prefix="localrag-bench-cold-"))
    env = _env(home)
    try:
        commands = {
            "python -c pass": f"{py} -c pass",
            "python -c 'import typer'": f"{py} -c 'import typer'",
            "localrag --help": f"{VENV_BIN / 'localrag'} --help",
        }
        tool = "hyperfine"
        help_stats = hyperfine(commands, runs=runs, warmup=2, env=env)
        if help_stats is None:
            tool = "subprocess"
            help_stats = subprocess_times(commands, runs=runs, warmup=2, env=env)
        rows = [{"what": name, "tool": tool, "seconds": s} for name, s in help_stats.items()]
        imports = slowest_imports("localrag.cli.app", env)

        build_s = build_kb(home, args.corpus, env)
        warm_first, warm_total, notes = time_search(env, 5 if not args.quick else 2, cold_cache=False)
        rows.append({"what": "localrag search (page cache warm): first output", "tool": "Popen", "seconds": warm_first})
        rows.append({"what": "localrag search (page cache warm): exit", "tool": "Popen", "seconds": warm_total})
        cold_runs = 2 if args.quick else 3
        cold_first, cold_total, cold_notes = time_search(env, cold_runs, cold_cache=True)
        notes += cold_notes
        if cold_first is not None:
            rows.append({"what": "localrag search (page cache dropped): first output", "tool": "Popen",
                         "seconds": cold_first})
            rows.append({"what": "localrag search (page cache dropped): exit", "tool": "Popen", "seconds": cold_total})
        search_imports = slowest_imports("localrag.cli.views.kb", env)
        # What a search process cannot avoid paying: the floors its own libraries set.
        lite_db = home / "floor-milvus.db"
        floors = {
            "floor: import torch": f"{py} -c 'import torch'",
            "floor: import sentence_transformers": f"{py} -c 'import sentence_transformers'",
            "floor: start Milvus Lite (MilvusClient on a new db)":
                f"{py} -c 'from pymilvus import MilvusClient; MilvusClient(\"{lite_db}\").close()'",
        }
        for name, s in subprocess_times(floors, runs=3 if not args.quick else 2, warmup=1, env=env).items():
            rows.append({"what": name, "tool": "subprocess", "seconds": s})
    finally:
        shutil.rmtree(home, ignore_errors=True)

    help_median = help_stats["localrag --help"].median
    targets = [Target("localrag --help", help_median, HELP_TARGET_S, higher_is_better=False, unit=" s",
                      note=f"python -c pass: {help_stats['python -c pass'].median:.3f} s")]
    for n in notes:
        print("note:", n, file=sys.stderr)
    print("slowest imports of localrag.cli.app (cumulative ms):",
          ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in imports))
    print("slowest imports of localrag.cli.views.kb (cumulative ms):",
          ", ".join(f"{r['module']} {r['cumulative_ms']:.0f}" for r in search_imports))
    report("coldstart", rows, args=args, load=load, columns=["what", "tool", "seconds"], targets=targets,
           extra={"corpus": str(args.corpus), "kb_build_s": build_s, "query": QUERY, "imports_cli": imports,
                  "imports_search": search_imports, "notes": notes})


if __name__ == "__main__":
    main()
