"""Hardware detection: parsers on captured tool outputs, the probes through fake tools on PATH,
and the real probe on this machine."""

from __future__ import annotations

import json
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from localrag.models import hardware
from localrag.models.hardware import Hardware, parse_nvidia_smi, parse_rocm_smi, parse_sysctl
from localrag.units import GiB, MiB, format_size, parse_size

HW = Path(__file__).parent / "data" / "hw"


def read(name: str) -> str:
    return (HW / name).read_text(encoding="utf-8")


# --- parsers ----------------------------------------------------------------------------------


def test_nvidia_smi_one_gpu():
    (gpu,) = parse_nvidia_smi(read("nvidia-smi-1gpu.csv"))
    assert (gpu.vendor, gpu.name, gpu.vram_total, gpu.vram_free) == ("nvidia", "NVIDIA GeForce RTX 3060", 12288 * MiB, 11842 * MiB)


def test_nvidia_smi_two_gpus():
    gpus = parse_nvidia_smi(read("nvidia-smi-2gpu.csv"))
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"]
    assert [g.vram_total for g in gpus] == [24564 * MiB, 24576 * MiB]


def test_nvidia_smi_real_h100_capture():
    (gpu,) = parse_nvidia_smi(read("real-h100-nvidia-smi-query.csv"))
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.vram_total == 81559 * MiB and gpu.vram_free == 81079 * MiB


@pytest.mark.parametrize("name", ["nvidia-smi-driver-error.txt", "empty.txt", "real-h100-nvidia-smi.txt", "rocm-smi-1gpu.json"])
def test_nvidia_smi_garbage_is_no_gpu(name):
    assert parse_nvidia_smi(read(name)) == []


def test_nvidia_smi_skips_na_rows():
    gpus = parse_nvidia_smi(read("nvidia-smi-na.csv"))
    assert [g.name for g in gpus] == ["NVIDIA RTX A4000"]


def test_rocm_smi_one_gpu():
    (gpu,) = parse_rocm_smi(read("rocm-smi-1gpu.json"))
    assert gpu.vendor == "amd" and gpu.name.startswith("Navi 21")
    assert gpu.vram_total == 17163091968 and gpu.vram_free == 17163091968 - 1047597056


def test_rocm_smi_newer_key_spelling_two_gpus():
    gpus = parse_rocm_smi(read("rocm-smi-2gpu-newer.json"))
    assert [g.name for g in gpus] == ["Aldebaran/MI200 [Instinct MI210]"] * 2
    assert gpus[1].vram_free == 0  # fully used card: zero, never negative


@pytest.mark.parametrize("name", ["rocm-smi-garbage.txt", "empty.txt", "nvidia-smi-1gpu.csv"])
def test_rocm_smi_garbage_is_no_gpu(name):
    assert parse_rocm_smi(read(name)) == []


def test_apple_m3_16gb_working_set_two_thirds():
    gpu = hardware.apple_gpu_from_sysctl(parse_sysctl(read("sysctl-m3-16gb.txt")))
    assert gpu.vendor == "apple" and gpu.unified and gpu.name == "Apple M3 GPU"
    # reported: ~10.67 GiB usable by Metal on a 16 GB M-series Mac
    assert gpu.vram_total == pytest.approx(10.67 * GiB, rel=0.01)


def test_apple_wired_limit_is_what_metal_reports():
    gpu = hardware.apple_gpu_from_sysctl(parse_sysctl(read("sysctl-m3max-128gb-raised.txt")))
    assert gpu.vram_total == 114688 * MiB == 112 * GiB


def test_apple_large_machine_three_quarters():
    assert hardware.apple_working_set(128 * GiB) == 96 * GiB
    assert hardware.apple_working_set(64 * GiB) == 48 * GiB


@pytest.mark.parametrize("name", ["sysctl-intel-mac.txt", "empty.txt", "rocm-smi-garbage.txt"])
def test_no_apple_gpu_on_intel_or_garbage(name):
    assert hardware.apple_gpu_from_sysctl(parse_sysctl(read(name))) is None


@pytest.mark.parametrize(
    "text, value",
    [("8GiB", 8 * GiB), ("16GB", 16 * GiB), ("1.5TiB", int(1.5 * 1024**4)), ("512 MiB", 512 * MiB),
     ("8g", 8 * GiB), ("24 gb", 24 * GiB), ("1024", 1024), ("100b", 100)],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "8XB", "-1GB", "0GiB", "8 G B", "GB8", "8i"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- probes -------------------------------------------------------------------------------------


def _fake_tool(tmp_path: Path, name: str, capture: str, monkeypatch) -> None:
    """An executable ``name`` on PATH that prints a captured output (a real subprocess)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / name
    script.write_text(f"#!/bin/sh\ncat '{HW / capture}'\n", encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def _no_nvml(monkeypatch):
    fake = types.ModuleType("pynvml")

    def fail():
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def test_detect_this_machine(tmp_path):
    hw = hardware.detect(tmp_path / "models" / "not-yet")
    assert hw.cpu_cores_logical >= hw.cpu_cores_physical >= 1
    assert 0 < hw.ram_available <= hw.ram_total
    assert hw.disk_free > 0  # measured on the nearest existing parent
    assert hw.gpu_offload_supported is False  # this llama-cpp-python is the CPU build
    assert hw.system == "Linux"
    if not hw.gpus:
        assert hw.notes == []


def test_nvidia_smi_fallback_when_nvml_missing(tmp_path, monkeypatch):
    _no_nvml(monkeypatch)
    _fake_tool(tmp_path, "nvidia-smi", "nvidia-smi-2gpu.csv", monkeypatch)
    hw = hardware.detect(tmp_path)
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"]
    assert all(g.source == "nvidia-smi" for g in hw.gpus)
    # a GPU, but this build of llama-cpp-python cannot offload: said so, and planned for the CPU
    assert hw.gpu_offload_supported is False
    assert "CPU-only" in hw.notes[0]


def test_nvml_preferred(tmp_path, monkeypatch):
    """NVML through a stand-in pynvml fed the real H100 capture (no NVIDIA driver here)."""
    (real,) = json.loads(read("real-h100-nvml.json"))
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlShutdown = lambda: None
    fake.nvmlDeviceGetCount = lambda: 1
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetName = lambda h: real["name"].encode()
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=real["total"], free=real["free"], used=real["used"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    _fake_tool(tmp_path, "nvidia-smi", "nvidia-smi-1gpu.csv", monkeypatch)  # must not be used
    hw = hardware.detect(tmp_path)
    (gpu,) = [g for g in hw.gpus if g.vendor == "nvidia"]
    assert (gpu.name, gpu.vram_total, gpu.vram_free, gpu.source) == (real["name"], real["total"], real["free"], "nvml")


def test_rocm_smi_probe(tmp_path, monkeypatch):
    _no_nvml(monkeypatch)
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import fails -> rocm-smi
    _fake_tool(tmp_path, "rocm-smi", "rocm-smi-1gpu.json", monkeypatch)
    hw = hardware.detect(tmp_path)
    assert [(g.vendor, g.source) for g in hw.gpus] == [("amd", "rocm-smi")]


def test_broken_tool_means_no_gpu(tmp_path, monkeypatch):
    _no_nvml(monkeypatch)
    _fake_tool(tmp_path, "nvidia-smi", "nvidia-smi-driver-error.txt", monkeypatch)
    assert hardware.detect(tmp_path).gpus == []


# --- simulation ---------------------------------------------------------------------------------


def _base() -> Hardware:
    return Hardware(8, 16, 32 * GiB, 28 * GiB, 500 * GiB, [], False, cpu_name="test", system="Linux")


def test_simulate_nvidia():
    hw = hardware.simulate(_base(), gpu="nvidia", vram=8 * GiB, ram=16 * GiB)
    assert hw.simulated and hw.gpu_offload_supported
    assert [(g.vendor, g.vram_total) for g in hw.gpus] == [("nvidia", 8 * GiB)]
    assert hw.ram_total == 16 * GiB and hw.ram_available == 16 * GiB - int(1.6 * GiB)


def test_simulate_apple_from_ram():
    hw = hardware.simulate(_base(), gpu="apple", ram=36 * GiB)
    assert hw.unified_memory and hw.gpus[0].vram_total == 24 * GiB


def test_simulate_none_and_errors():
    assert hardware.simulate(_base(), gpu="none", ram=8 * GiB).gpus == []
    with pytest.raises(ValueError, match="nvidia, amd, apple or none"):
        hardware.simulate(_base(), gpu="intel")
    with pytest.raises(ValueError, match="needs --vram"):
        hardware.simulate(_base(), gpu="amd")


def test_simulate_cores():
    hw = hardware.simulate(_base(), gpu="none", ram=64 * GiB, cores=32)
    assert (hw.cpu_cores_physical, hw.cpu_cores_logical, hw.simulated) == (32, 64, True)
    assert hardware.simulate(_base(), cores=2).ram_total == 32 * GiB  # the rest stays this machine's
    with pytest.raises(ValueError, match="cores must be 1 or more"):
        hardware.simulate(_base(), cores=0)


@pytest.mark.parametrize(
    "n, text", [(17, "17 B"), (2048, "2.0 KiB"), (512 * MiB, "512.0 MiB"), (int(4.4 * GiB), "4.4 GiB"), (3 * 1024**4, "3.0 TiB")]
)
def test_format_size_in_binary_units(n, text):
    assert format_size(n) == text
