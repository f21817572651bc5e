"""Shared helpers for the bench scripts: timing, median/spread, the machine, a table and JSON output.

Bench scripts are plain scripts (``.venv/bin/python bench/X.py [--quick] [--json]``), never tests.
Every figure is the median of several runs with its spread, because one run on a shared
2-core VM says little; ``load_check`` records the load average so a noisy run can be spotted
afterwards.

Typical use::

    from common import bench_args, measure, report, Target

    args = bench_args("what this bench measures")
    s = measure(lambda: work(), runs=args.runs, warmup=1)        # Stats (seconds)
    report("mybench", rows, columns=[...], args=args, targets=[Target(...)], extra={...})
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
SHARED_DIR = REPO_ROOT.parent / "shared"
VENV_BIN = REPO_ROOT / ".venv" / "bin"

# The machine is shared while the team builds; a 1-minute load above this on 2 cores means the
# figures are contended, so they are flagged (not refused: --quick debugging runs happen then).
BUSY_LOAD = 0.5


# --- statistics ------------------------------------------------------------------------


@dataclass
class Stats:
    """Summary of repeated measurements (any unit; the caller names it)."""

    median: float
    min: float
    max: float
    p95: float
    n: int
    values: list[float] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """(max - min) / median: the whole range as a fraction of the median."""
        return (self.max - self.min) / self.median if self.median else 0.0

    def fmt(self, digits: int | None = None, scale: float = 1.0, unit: str = "") -> str:
        """'12.3 (11.9-12.8)' -- median with the min-max range; 3 significant digits unless digits given."""
        m, lo, hi = self.median * scale, self.min * scale, self.max * scale
        if digits is None:
            return f"{_sig(m)}{unit} ({_sig(lo)}-{_sig(hi)})"
        return f"{m:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f})"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["spread"] = self.spread
        return d


def _sig(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method, without numpy)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stats(values: Iterable[float]) -> Stats:
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no measurements")
    return Stats(
        median=statistics.median(xs),
        min=min(xs),
        max=max(xs),
        p95=percentile(xs, 95),
        n=len(xs),
        values=xs,
    )


def measure(fn: Callable[[], Any], *, runs: int = 5, warmup: int = 1) -> Stats:
    """Wall-clock seconds of fn(), warmup calls discarded."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stats(times)


class Timer:
    """``with Timer() as t: ...; t.s`` -- seconds of one block."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0


def time_command(cmd: Sequence[str], *, runs: int = 5, warmup: int = 1, env: dict | None = None,
                 cwd: Path | None = None) -> Stats:
    """Wall-clock seconds of a subprocess, started fresh each run (for cold-start timings)."""
    full_env = {**os.environ, **(env or {})}

    def once() -> None:
        subprocess.run(cmd, env=full_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    return measure(once, runs=runs, warmup=warmup)


# --- peak memory ----------------------------------------------------------------------


class PeakRSS:
    """Samples the summed RSS of a process and its children in a thread; ``.peak`` in bytes.

    RSS of the tree, not of one process: Milvus Lite runs a server child, and llama.cpp's
    mmapped weights count as (file-backed) RSS once touched, which is what the user sees.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.05):
        import psutil

        self._psutil = psutil
        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        total = 0
        try:
            procs = [self.proc] + self.proc.children(recursive=True)
        except self._psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


# --- the machine ----------------------------------------------------------------------


def load_check(label: str = "") -> dict:
    """Load average now; prints a warning to stderr when the machine is busy."""
    la1, la5, la15 = os.getloadavg()
    busy = la1 > BUSY_LOAD
    if busy:
        print(f"warning: load average {la1:.2f} {la5:.2f} {la15:.2f}{' before ' + label if label else ''}"
              " -- figures are contended", file=sys.stderr)
    return {"load1": la1, "load5": la5, "load15": la15, "busy": busy}


def _lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    info = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def machine() -> dict:
    """What the figures were taken on: enough to compare runs across machines."""
    import psutil

    cpu = _lscpu()
    info: dict[str, Any] = {
        "cpu_model": cpu.get("Model name", platform.processor()),
        "cpu_family": cpu.get("CPU family"),
        "cpus": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "l2": cpu.get("L2 cache"),
        "l3": cpu.get("L3 cache"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "ram_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GGML_", "LLAMA_"))},
    }
    try:
        import importlib.metadata as md

        info["llama_cpp_python"] = md.version("llama_cpp_python")
    except Exception:  # noqa: BLE001 - not every bench needs it installed
        info["llama_cpp_python"] = None
    return info


def llama_system_info() -> str:
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode().strip()


# --- arguments and output -------------------------------------------------------------


def bench_args(description: str, *, runs: int = 5, quick_runs: int = 2,
               extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """--quick (few runs, small inputs: for debugging), --runs N, --json (JSON to stdout), --out DIR."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="few runs, small inputs (debugging, not figures)")
    p.add_argument("--runs", type=int, default=None, help=f"repetitions (default {runs}; {quick_runs} with --quick)")
    p.add_argument("--json", action="store_true", help="print the JSON result to stdout instead of the table")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where the JSON result is written")
    if extra:
        extra(p)
    args = p.parse_args()
    if args.runs is None:
        args.runs = quick_runs if args.quick else runs
    return args


@dataclass
class Target:
    """One target from the issue: measured vs the bound, and whether it is met."""

    name: str
    measured: float
    target: float
    higher_is_better: bool = True
    unit: str = ""
    note: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    def as_dict(self) -> dict:
        d = asdict(self)
        d["met"] = self.met
        return d

    def line(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        verdict = "MET" if self.met else "MISSED"
        note = f"  ({self.note})" if self.note else ""
        return f"{self.name}: {self.measured:.3g}{self.unit} (target {op} {self.target:g}{self.unit}) {verdict}{note}"


def table(rows: list[dict], columns: Sequence[str] | None = None, title: str = "") -> str:
    """A plain monospace table (no rich: the output goes into BENCHMARKS.md as is)."""
    if not rows:
        return f"{title}\n(no rows)\n" if title else "(no rows)\n"
    columns = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        if isinstance(v, Stats):
            return v.fmt()
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Stats):
        return obj.as_dict()
    if isinstance(obj, Target):
        return obj.as_dict()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def report(name: str, rows: list[dict], *, args: argparse.Namespace | None = None,
           columns: Sequence[str] | None = None, targets: Sequence[Target] = (), extra: dict | None = None,
           title: str = "", load: dict | None = None) -> dict:
    """Print the table (or JSON with --json) and write bench/out/<name>.json. Returns the result dict."""
    result = {
        "bench": name,
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": bool(getattr(args, "quick", False)),
        "runs": getattr(args, "runs", None),
        "machine": machine(),
        "load": load if load is not None else load_check(),
        "rows": rows,
        "targets": list(targets),
        **(extra or {}),
    }
    data = _jsonable(result)
    out_dir = Path(getattr(args, "out", OUT_DIR) or OUT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{'-quick' if data['quick'] else ''}.json"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print(table(rows, columns, title or name))
        for t in targets:
            print(t.line())
        print(f"(JSON: {path})")
    return data
