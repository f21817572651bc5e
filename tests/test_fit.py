"""The memory estimate against what llama.cpp really allocates, and the choice across machines."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localrag.models import fit
from localrag.models.catalogue import load_catalogue
from localrag.models.hardware import GPU, Hardware, apple_working_set
from localrag.units import GiB, MiB
from localrag.settings import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parent))

CAT = load_catalogue(REPO_ROOT / "models.toml")
PREFERRED_CTX, FALLBACK_CTX = CAT.defaults.min_ctx, CAT.defaults.fallback_ctx


def strength(model_id: str) -> int:
    return CAT.model(model_id).strength


def machine(kind: str, mem_gib: float, *, ram_gib: float | None = None, cores: int = 8, offload: bool = True) -> Hardware:
    """A machine as `doctor` would see it: ``mem_gib`` is RAM (cpu), VRAM (nvidia/amd) or unified RAM (apple)."""
    mem = int(mem_gib * GiB)
    if kind == "cpu":
        return Hardware(cores, cores * 2, mem, mem - min(int(mem * 0.1), 2 * GiB), 500 * GiB, [], offload)
    if kind == "apple":
        ws = apple_working_set(mem)
        return Hardware(cores, cores, mem, mem - min(int(mem * 0.1), 2 * GiB), 500 * GiB,
                        [GPU("apple", "Apple M", ws, ws, unified=True)], True, system="Darwin")
    ram = int((ram_gib or 32) * GiB)
    return Hardware(cores, cores * 2, ram, ram - 2 * GiB, 500 * GiB, [GPU(kind, f"{kind} card", mem, mem - 300 * MiB)], offload)


def _assert_within_budget(c: fit.Candidate) -> None:
    assert c.estimated_bytes <= c.budget_bytes
    b = c.breakdown
    assert b["ram_bytes"] <= b["ram_budget"]
    if c.fit in ("gpu", "partial"):
        assert b["gpu_bytes"] <= b["gpu_budget"]


# --- the estimate against llama.cpp -----------------------------------------------------------

_MEASURE = r"""
import json, sys
from llama_cpp import Llama
from localrag.models.fit import parse_llama_log
path, ctxs, fa = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], sys.argv[3] == "1"
out = {}
for ctx in ctxs:
    # llama.cpp logs through llama-cpp-python's callback to sys.stderr: capture it per load
    import io, contextlib
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        llm = Llama(path, n_ctx=ctx, n_gpu_layers=0, verbose=True, flash_attn=fa, n_threads=1)
        llm.close()
    out[ctx] = parse_llama_log(buf.getvalue())
print(json.dumps(out))
"""


def measure(path: Path, ctxs: list[int], *, flash_attn: bool = False) -> dict[int, dict[str, int]]:
    """What llama.cpp allocates (model, KV, compute, output buffers) at each context, from its log."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), ",".join(map(str, ctxs)), "1" if flash_attn else "0"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {int(k): v for k, v in data.items()}


def _compare(spec, quant, path, ctxs, flash_attn=False):
    actual = measure(path, ctxs, flash_attn=flash_attn)
    rows = []
    for ctx in ctxs:
        est = fit.llama_memory(spec, quant, ctx, 0, size_bytes=path.stat().st_size, flash_attn=flash_attn)
        a = actual[ctx]
        assert {"model", "kv", "compute"} <= set(a), a
        assert est.kv_cpu == a["kv"]  # the KV formula is exact
        total = a["model"] + a["kv"] + a["compute"] + a.get("output", 0)
        rows.append((ctx, est.total, total, est.compute_cpu, a["compute"]))
    return rows


@pytest.mark.slow
def test_estimate_matches_llama_cpp_reduced_qwen2():
    """A 2-layer model of the Qwen distills' family (full vocab): within 10% at 2k-32k, both attention modes."""
    from synthgguf import TINY, make_gguf

    path = make_gguf("r1-distill-qwen-1.5b", "Q4_K_M", tiny=True)
    spec = dataclasses.replace(CAT.model("qwen-1.5b"), **TINY)
    for fa in (False, True):
        for ctx, est, real, est_c, real_c in _compare(spec, "Q4_K_M", path, [2048, 8192, 32768], flash_attn=fa):
            assert est == pytest.approx(real, rel=0.10), (fa, ctx, est, real)
            assert est_c == pytest.approx(real_c, rel=0.10), (fa, ctx, est_c, real_c)


@pytest.mark.slow
def test_estimate_matches_llama_cpp_smollm2(smollm2_gguf):
    """The real SmolLM2 file (llama architecture): compute buffer switches from logits- to attention-bound."""
    spec = CAT.model("smollm2")
    for ctx, est, real, est_c, real_c in _compare(spec, "Q4_1", smollm2_gguf, [2048, 8192, 32768]):
        assert est == pytest.approx(real, rel=0.10), (ctx, est, real)
        assert est_c == pytest.approx(real_c, rel=0.10), (ctx, est_c, real_c)


def test_parse_llama_log():
    log = (
        "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n"
        "llama_context:        CPU  output buffer size =     0.19 MiB\n"
        "llama_kv_cache:        CPU KV buffer size =   180.00 MiB\n"
        "sched_reserve:      CUDA0 compute buffer size =   166.38 MiB\n"
        "sched_reserve:  CUDA_Host compute buffer size =    12.01 MiB\n"
        "~llama_context:        CPU compute buffer size is 166.3848 MiB, matches expectation of 166.3848 MiB\n"
    )
    sizes = fit.parse_llama_log(log)
    assert sizes["model"] == int(92.10 * MiB) and sizes["kv"] == 180 * MiB
    assert sizes["compute"] == int(166.38 * MiB) + int(12.01 * MiB)


def test_kv_formula_matches_reference():
    # kv_bytes_per_token in the shared facts: 2 x layers x kv_heads x head_dim x 2 bytes
    assert fit.kv_bytes(CAT.model("qwen-1.5b"), 1) == 28672
    assert fit.kv_bytes(CAT.model("llama-70b"), 8192) == 327680 * 8192


def test_weight_split_matches_a_real_offload_log():
    # llama.cpp#11861: 32B Q4_K_M fully offloaded keeps only token_embd on the CPU: 417.66 MiB
    split = fit.weight_split(CAT.model("qwen-32b"), "Q4_K_M")
    assert split.token_embd == pytest.approx(417.66 * MiB, rel=0.01)
    assert split.on_gpu(65) + split.on_cpu(65) == pytest.approx(CAT.model("qwen-32b").quants["Q4_K_M"].size_bytes, rel=0.001)
    assert split.on_cpu(65) == split.token_embd


# --- the choice ---------------------------------------------------------------------------------

# (kind, memory GiB) -> expected (model, quant, fit) on an 8-core machine with 32 GiB RAM
EXPECTED = {
    ("cpu", 8): ("r1-distill-qwen-7b", "Q3_K_M", "cpu"),  # Q4_K_M needs 6.3 of 6.2 GiB
    ("cpu", 16): ("r1-distill-qwen-14b", "Q4_K_M", "cpu"),
    ("cpu", 32): ("r1-distill-qwen-14b", "Q4_K_M", "cpu"),
    ("cpu", 64): ("r1-distill-qwen-14b", "Q4_K_M", "cpu"),  # a 70B fits in RAM but would crawl
    ("nvidia", 4): None,
    ("nvidia", 6): ("r1-distill-qwen-7b", "Q4_K_M", "partial"),  # the output layer stays in RAM
    ("nvidia", 8): ("r1-distill-qwen-14b", "Q3_K_M", "partial"),  # 40/48 layers, ~20 tok/s on 8 cores
    ("nvidia", 12): ("r1-distill-qwen-14b", "Q4_K_M", "gpu"),
    ("nvidia", 16): ("r1-distill-qwen-14b", "Q4_K_M", "gpu"),
    ("nvidia", 24): ("r1-distill-qwen-32b", "Q4_K_M", "gpu"),
    ("nvidia", 48): ("r1-distill-llama-70b", "Q4_K_M", "gpu"),
    ("nvidia", 80): ("r1-distill-llama-70b", "Q4_K_M", "gpu"),
    ("amd", 16): ("r1-distill-qwen-14b", "Q4_K_M", "gpu"),
    ("apple", 16): ("r1-distill-qwen-7b", "Q4_K_M", "gpu"),
    ("apple", 36): ("r1-distill-qwen-32b", "Q3_K_M", "gpu"),
    ("apple", 64): ("r1-distill-llama-70b", "Q3_K_M", "gpu"),
    ("apple", 128): ("r1-distill-llama-70b", "Q4_K_M", "gpu"),
}


@pytest.mark.parametrize("kind, mem", list(EXPECTED))
def test_choice_on_simulated_machines(kind, mem):
    hw = machine(kind, mem)
    plan = fit.plan(CAT, hw)
    c = plan.choice
    assert c is not None and plan.reason
    _assert_within_budget(c)
    if EXPECTED[(kind, mem)] is not None:
        assert (c.model, c.quant, c.fit) == EXPECTED[(kind, mem)], plan.reason
    assert c.ctx >= PREFERRED_CTX
    if c.fit == "gpu":
        assert c.n_gpu_layers == CAT.model(c.model).n_layers + 1
    if c.fit == "cpu":
        assert c.n_gpu_layers == 0
    # the reason names the choice in words
    assert CAT.model(c.model).short_name in plan.reason and c.quant in plan.reason
    assert len({id(x) for x in plan.candidates}) == 12 and plan.candidates[0] is c


def test_two_core_laptop_stays_on_the_1_5b():
    plan = fit.plan(CAT, machine("cpu", 24, cores=2))
    assert (plan.choice.model, plan.choice.quant) == ("r1-distill-qwen-1.5b", "Q4_K_M")
    assert "Qwen-7B" in plan.reason and "tokens/s" in plan.reason
    # every model that fits memory is still listed as fitting
    assert {c.model for c in plan.candidates if c.fits} >= {"r1-distill-qwen-7b", "r1-distill-qwen-14b"}


def test_small_vram_offloads_layers():
    plan = fit.plan(CAT, machine("nvidia", 4, ram_gib=32))
    c = plan.choice
    assert c.fit in ("partial", "gpu")
    partial = [x for x in plan.candidates if x.fit == "partial"]
    assert partial and all(0 < x.n_gpu_layers <= CAT.model(x.model).n_layers for x in partial)
    for x in partial:
        _assert_within_budget(x)


def test_gpu_without_offload_plans_for_cpu():
    hw = machine("nvidia", 24, offload=False)
    plan = fit.plan(CAT, hw)
    assert plan.choice.fit == "cpu" and plan.choice.n_gpu_layers == 0
    assert "cannot offload" in plan.reason and plan.embedder_device == "cpu"


def test_forced_ctx():
    plan = fit.plan(CAT, machine("nvidia", 24), ctx=32768)
    assert all(c.ctx == 32768 for c in plan.candidates)
    _assert_within_budget(plan.choice)
    assert "32768" in plan.reason
    # a longer context costs memory: the choice can only get smaller or stay
    small = fit.plan(CAT, machine("nvidia", 24), ctx=4096).choice
    assert strength(plan.choice.model) <= strength(small.model)


def test_nothing_fits():
    plan = fit.plan(CAT, machine("cpu", 2))
    assert plan.choice is None and "No distill fits" in plan.reason
    assert all(c.fit == "none" for c in plan.candidates)


def test_context_falls_back_to_4096_only_when_nothing_else_fits():
    cut = []
    for tenths in range(30, 60):
        plan = fit.plan(CAT, machine("cpu", tenths / 10, cores=2))
        if plan.choice is not None and plan.choice.ctx < PREFERRED_CTX:
            cut.append(plan)
            assert not any(c.fits for c in fit.plan(CAT, machine("cpu", tenths / 10, cores=2), ctx=8192).candidates)
    assert cut, "some small machine only fits with the fallback context"
    assert cut[0].choice.ctx == FALLBACK_CTX and "cut to 4096" in cut[0].reason


def test_embedder_counts_and_moves_to_gpu_when_room():
    big = fit.plan(CAT, machine("nvidia", 80))
    assert big.embedder == "bge-m3" and big.embedder_device == "cuda"
    cpu = fit.plan(CAT, machine("cpu", 16))
    assert cpu.embedder == "multilingual-e5-small" and cpu.embedder_device == "cpu"
    assert cpu.choice.breakdown["embedder"] == fit.embedder_bytes(CAT.embedder("multilingual-e5-small"))
    mini = fit.plan(CAT, machine("cpu", 16), embedder="minilm")
    assert mini.embedder == "all-minilm-l6-v2"
    assert mini.choice.estimated_bytes < cpu.choice.estimated_bytes


def test_plan_model_for_a_user_pick():
    hw = machine("nvidia", 8, ram_gib=32)
    c = fit.plan_model(CAT, hw, "qwen-14b", "Q4_K_M")
    assert c.model == "r1-distill-qwen-14b" and c.fit == "partial" and 0 < c.n_gpu_layers < 48
    _assert_within_budget(c)
    assert fit.plan_model(CAT, hw, "qwen-7b").fit == "gpu"
    assert fit.plan_model(CAT, hw, "1.5b:Q3_K_M").quant == "Q3_K_M"
    assert fit.plan_model(CAT, machine("cpu", 8), "70b").fit == "none"
    starter = fit.plan_model(CAT, machine("cpu", 4, cores=2), "smollm2")
    assert starter.fits and starter.quant == "Q4_1"


# --- properties over many machines --------------------------------------------------------------

KINDS = st.sampled_from(["cpu", "nvidia", "amd", "apple"])


def _rank(c):
    return (-1, 0) if c is None else (strength(c.model), CAT.model(c.model).quant_rank(c.quant))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=KINDS, mem=st.floats(2, 200), extra=st.floats(0.5, 64), ram=st.floats(4, 256), cores=st.integers(1, 32))
def test_more_memory_never_a_weaker_choice(kind, mem, extra, ram, cores):
    small = fit.plan(CAT, machine(kind, mem, ram_gib=ram, cores=cores)).choice
    large = fit.plan(CAT, machine(kind, mem + extra, ram_gib=ram, cores=cores)).choice
    assert _rank(large) >= _rank(small)
    if kind in ("nvidia", "amd"):
        more_ram = fit.plan(CAT, machine(kind, mem, ram_gib=ram + extra, cores=cores)).choice
        assert _rank(more_ram) >= _rank(small)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=KINDS, mem=st.floats(2, 200), ram=st.floats(4, 256), cores=st.integers(1, 32))
def test_never_over_budget_and_q4_before_q3(kind, mem, ram, cores):
    hw = machine(kind, mem, ram_gib=ram, cores=cores)
    plan = fit.plan(CAT, hw)
    for c in plan.candidates:
        if c.fits:
            _assert_within_budget(c)
    c = plan.choice
    if c is None:
        assert not any(x.fits for x in plan.candidates)
        return
    if c.quant == "Q3_K_M":
        q4 = next(x for x in plan.candidates if x.model == c.model and x.quant == "Q4_K_M")
        assert not fit.qualifies(q4, hw) or (not any(fit.qualifies(x, hw) for x in plan.candidates))
    # nothing stronger qualifies
    if fit.qualifies(c, hw):
        assert not any(strength(x.model) > strength(c.model) and fit.qualifies(x, hw) for x in plan.candidates)


# --- `localrag doctor` ----------------------------------------------------------------------------


def _doctor(*args):
    from typer.testing import CliRunner

    from localrag.cli.app import app

    return CliRunner().invoke(app, ["doctor", *args])


def test_doctor_on_this_machine(home):
    result = _doctor()
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("Hardware", "CPU", "RAM", "llama.cpp GPU offload", "What each model needs here", "Choice:", "Why:"):
        assert text in out
    assert "Traceback" not in out
    # every distill x quant has a row
    assert out.count("Q4_K_M") >= 6 and out.count("Q3_K_M") >= 6


def test_doctor_json_schema(home):
    result = _doctor("--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    hw = data["hardware"]
    for key in ("cpu_cores_physical", "cpu_cores_logical", "ram_total", "ram_available", "disk_free", "gpus", "gpu_offload_supported"):
        assert key in hw
    assert len(data["candidates"]) == 12
    for c in data["candidates"]:
        assert {"model", "quant", "fit", "estimated_bytes", "n_gpu_layers", "ctx", "budget_bytes"} <= set(c)
        assert c["fit"] in ("gpu", "partial", "cpu", "none")
        CAT.model(c["model"])  # a catalogue id
    choice = data["choice"]
    assert choice is not None, data["reason"]
    assert {"model", "quant", "n_gpu_layers", "ctx", "estimated_bytes", "budget_bytes"} <= set(choice)
    assert choice["estimated_bytes"] <= choice["budget_bytes"] and choice["ctx"] >= 4096
    assert data["reason"] and data["embedder"]["id"] in {e.id for e in CAT.embedders}
    assert data["ocr"] == {"available": True}  # the test extra installs localrag[ocr]'s packages


@pytest.mark.parametrize(
    "args, model, quant, where",
    [
        (["--gpu", "nvidia", "--vram", "24GiB", "--ram", "64GiB"], "r1-distill-qwen-32b", "Q4_K_M", "gpu"),
        (["--gpu", "amd", "--vram", "48GB", "--ram", "64GB"], "r1-distill-llama-70b", "Q4_K_M", "gpu"),
        (["--gpu", "apple", "--ram", "128GiB"], "r1-distill-llama-70b", "Q4_K_M", "gpu"),
        (["--vram", "12GiB"], "r1-distill-qwen-14b", "Q4_K_M", "gpu"),
    ],
)
def test_doctor_simulated(home, args, model, quant, where):
    result = _doctor(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["simulated"] is True
    assert (data["choice"]["model"], data["choice"]["quant"], data["choice"]["fit"]) == (model, quant, where)


def test_doctor_simulated_rich(home):
    result = _doctor("--gpu", "nvidia", "--vram", "8GiB")
    assert result.exit_code == 0, result.output
    assert "Hardware (simulated)" in result.output and "NVIDIA GPU (simulated)" in result.output


def test_doctor_cores_feed_the_cpu_speed_rule(home):
    # The same 64 GiB CPU-only machine: on 2 cores the speed rule keeps the 1.5B; on 32 cores a
    # stronger distill is fast enough. The plan counts the cores asked for, not this machine's.
    def choice(cores):
        result = _doctor("--gpu", "none", "--ram", "64GiB", "--cores", str(cores), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["simulated"] and data["hardware"]["cpu_cores_physical"] == cores
        return data["choice"]

    few, many = choice(2), choice(32)
    assert few["model"] == "r1-distill-qwen-1.5b"
    assert strength(many["model"]) > strength(few["model"]) and many["fit"] == "cpu"


def test_doctor_forced_ctx(home):
    data = json.loads(_doctor("--ctx", "32768", "--json").output)
    assert all(c["ctx"] == 32768 for c in data["candidates"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vram", "8XB"], "not a size"),
        (["--ram", "lots"], "not a size"),
        (["--gpu", "intel"], "unknown GPU kind"),
        (["--gpu", "none", "--vram", "8GiB"], "contradict"),
        (["--gpu", "nvidia"], "needs --vram"),
        (["--ctx", "100"], "too small"),
        (["--cores", "0"], "cores must be 1 or more"),
    ],
)
def test_doctor_bad_flags_exit_2(home, args, message):
    if args == ["--gpu", "nvidia"]:
        from localrag.models.hardware import detect

        if any(g.vendor == "nvidia" for g in detect(home).gpus):
            pytest.skip("this machine has an NVIDIA GPU to plan with")
    result = _doctor(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_two_gpus_pool_their_memory():
    one = machine("nvidia", 24, ram_gib=64)
    two = dataclasses.replace(one, gpus=one.gpus * 2)
    p1, p2 = fit.plan(CAT, one), fit.plan(CAT, two)
    assert _rank(p2.choice) > _rank(p1.choice)
    _assert_within_budget(p2.choice)
    assert p2.choice.model == "r1-distill-llama-70b" and p2.choice.fit == "gpu"


def test_doctor_gpu_found_but_cpu_only_build(home, tmp_path, monkeypatch):
    """A real NVIDIA card (nvidia-smi on PATH) with this CPU-only llama-cpp-python: said, and planned for the CPU."""
    import types

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: (_ for _ in ()).throw(RuntimeError("no NVML"))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat '{Path(__file__).parent / 'data/hw/nvidia-smi-1gpu.csv'}'\n", encoding="utf-8")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    result = _doctor()
    assert result.exit_code == 0, result.output
    assert "RTX 3060" in result.output and "CPU-only" in result.output and "GGML_CUDA" in result.output
    data = json.loads(_doctor("--json").output)
    assert data["hardware"]["gpus"][0]["name"] == "NVIDIA GeForce RTX 3060"
    assert data["hardware"]["gpu_usable"] is False
    assert data["choice"]["fit"] == "cpu" and data["choice"]["n_gpu_layers"] == 0
    assert data["embedder"]["device"] == "cpu"
