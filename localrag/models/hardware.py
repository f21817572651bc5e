"""What this machine has: CPU cores, RAM, free disk, GPUs and their memory, and whether this
llama-cpp-python build can use a GPU at all.

Detection is local only (psutil, NVML, vendor tools, sysctl); it never touches the network and
runs before anything is downloaded. The tool-output parsers are pure functions so they are
tested on captured outputs (tests/data/hw/). Every probe is best effort: a missing or broken tool
means "no such GPU", never a crash.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localrag.units import GiB, MiB

# How long a vendor tool may take; a hung driver must not hang `localrag doctor`.
TOOL_TIMEOUT_S = 5


@dataclass
class GPU:
    vendor: str  # "nvidia" | "amd" | "apple"
    name: str
    vram_total: int  # bytes; on Apple: the Metal working set (what the GPU may wire), not all RAM
    vram_free: int
    unified: bool = False  # memory shared with the CPU (Apple Silicon)
    source: str = ""  # which probe found it: nvml, nvidia-smi, amdsmi, rocm-smi, sysctl, ggml, simulated


@dataclass
class Hardware:
    cpu_cores_physical: int
    cpu_cores_logical: int
    ram_total: int
    ram_available: int
    disk_free: int  # bytes free where models are stored
    gpus: list[GPU]
    gpu_offload_supported: bool  # this llama-cpp-python build has a GPU backend
    cpu_name: str = ""
    system: str = ""  # platform.system(): Linux, Darwin, Windows
    simulated: bool = False  # numbers come from `doctor --gpu/--vram/--ram`, not this machine
    notes: list[str] = field(default_factory=list)  # probe problems worth showing in doctor

    @property
    def unified_memory(self) -> bool:
        return any(g.unified for g in self.gpus)

    @property
    def vram_total(self) -> int:
        return sum(g.vram_total for g in self.gpus)

    @property
    def vram_free(self) -> int:
        return sum(g.vram_free for g in self.gpus)


# --- parsers (pure) ----------------------------------------------------------------------


def parse_nvidia_smi(text: str) -> list[GPU]:
    """``nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits``.

    One line per GPU, sizes in MiB. Lines that do not parse ("[N/A]", driver errors such as
    "NVIDIA-SMI has failed ...") are skipped.
    """
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        name, total, free = ", ".join(parts[:-2]), parts[-2], parts[-1]
        try:
            total_mib, free_mib = float(total), float(free)
        except ValueError:
            continue
        if not name or total_mib <= 0:
            continue
        gpus.append(
            GPU("nvidia", name, int(total_mib * MiB), int(max(0.0, min(free_mib, total_mib)) * MiB), source="nvidia-smi")
        )
    return gpus


def parse_rocm_smi(text: str) -> list[GPU]:
    """``rocm-smi --showmeminfo vram --showproductname --json``.

    {"card0": {"Card series": ..., "VRAM Total Memory (B)": "...", "VRAM Total Used Memory (B)": "..."}, "system": {...}}.
    Key spelling changed across ROCm versions ("Card series"/"Card Series"), so keys are matched
    case-insensitively.
    """
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return []
    if not isinstance(data, dict):
        return []
    gpus = []
    for card in sorted(k for k in data if re.fullmatch(r"card\d+", str(k))):
        info = data[card]
        if not isinstance(info, dict):
            continue
        low = {str(k).strip().lower(): v for k, v in info.items()}
        total = _to_int(low.get("vram total memory (b)"))
        used = _to_int(low.get("vram total used memory (b)")) or 0
        if not total:
            continue
        name = next(
            (str(low[k]).strip() for k in ("card series", "device name", "market name", "card model") if low.get(k)),
            card,
        )
        gpus.append(GPU("amd", name, total, max(0, total - used), source="rocm-smi"))
    return gpus


def parse_sysctl(text: str) -> dict[str, str]:
    """``sysctl hw.memsize iogpu.wired_limit_mb machdep.cpu.brand_string ...`` -> {key: value}."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            values[key.strip()] = value.strip()
    return values


def apple_working_set(ram_total: int, wired_limit_mb: int | None = None) -> int:
    """Metal's recommendedMaxWorkingSetSize: how much of unified memory the GPU may use.

    ``iogpu.wired_limit_mb`` (when set above 0) is exactly what Metal reports. Otherwise macOS
    allows roughly 65-75% (16 GB -> ~10.7 GiB, 24 GB -> 17.8 GiB, 64 GB -> ~48 GB, 128 GB ->
    ~107 GiB on recent macOS); we take the low side of those reports: 2/3 below 64 GiB, 3/4 from
    64 GiB, so a plan made here never needs more than Metal grants.
    """
    if wired_limit_mb and wired_limit_mb > 0:
        return min(ram_total, wired_limit_mb * MiB)
    share = 0.75 if ram_total >= 64 * GiB else 2 / 3
    return int(ram_total * share)


def apple_gpu_from_sysctl(values: dict[str, str]) -> GPU | None:
    """The Apple Silicon GPU described by parsed sysctl output; None when it is no Apple Silicon Mac."""
    memsize = _to_int(values.get("hw.memsize"))
    brand = values.get("machdep.cpu.brand_string", "")
    arm = values.get("hw.optional.arm64") == "1" or brand.startswith("Apple")
    if not memsize or not arm:
        return None
    ws = apple_working_set(memsize, _to_int(values.get("iogpu.wired_limit_mb")))
    return GPU("apple", f"{brand or 'Apple Silicon'} GPU", ws, ws, unified=True, source="sysctl")


def _to_int(value) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


# --- probes (touch the machine) ----------------------------------------------------------


def _run_tool(args: list[str]) -> str | None:
    exe = shutil.which(args[0])
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, *args[1:]], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _nvidia_nvml() -> list[GPU] | None:
    """NVIDIA GPUs via NVML; None when NVML is unavailable (no driver), so nvidia-smi is tried."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable NVIDIA driver
        return None
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GPU("nvidia", name, int(mem.total), int(mem.free), source="nvml"))
        return gpus
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _nvidia() -> list[GPU]:
    gpus = _nvidia_nvml()
    if gpus is not None:
        return gpus
    out = _run_tool(["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"])
    return parse_nvidia_smi(out) if out else []


def _amd_amdsmi() -> list[GPU] | None:
    try:
        import amdsmi
    except Exception:  # ImportError, or the ROCm library behind it missing
        return None
    try:
        amdsmi.amdsmi_init()
    except Exception:
        return None
    try:
        gpus = []
        for handle in amdsmi.amdsmi_get_processor_handles():
            usage = amdsmi.amdsmi_get_gpu_vram_usage(handle)
            total, used = int(usage["vram_total"]), int(usage["vram_used"])
            # amdsmi reports MB (ROCm docs); a value this small cannot be bytes
            if total < 1 << 24:
                total, used = total * MiB, used * MiB
            try:
                name = amdsmi.amdsmi_get_gpu_asic_info(handle).get("market_name") or "AMD GPU"
            except Exception:
                name = "AMD GPU"
            gpus.append(GPU("amd", name, total, max(0, total - used), source="amdsmi"))
        return gpus
    except Exception:
        return None
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except Exception:
            pass


def _amd() -> list[GPU]:
    gpus = _amd_amdsmi()
    if gpus is not None:
        return gpus
    out = _run_tool(["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"])
    return parse_rocm_smi(out) if out else []


def _apple() -> list[GPU]:
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return []
    out = _run_tool(["sysctl", "hw.memsize", "iogpu.wired_limit_mb", "machdep.cpu.brand_string", "hw.optional.arm64"])
    values = parse_sysctl(out or "")
    if "hw.memsize" not in values:
        import psutil

        values["hw.memsize"] = str(psutil.virtual_memory().total)
        values["hw.optional.arm64"] = "1"
    gpu = apple_gpu_from_sysctl(values)
    return [gpu] if gpu else []


def gpu_offload_supported() -> bool:
    """Whether this llama-cpp-python build has a GPU backend (CUDA, ROCm, Metal, Vulkan...)."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        out = _run_tool(["sysctl", "-n", "machdep.cpu.brand_string"])
        if out:
            return out.strip()
    return platform.processor() or platform.machine()


def disk_free(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    import psutil

    path = Path(path).expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return int(psutil.disk_usage(str(candidate)).free)
            except OSError:
                return 0
    return 0


def detect(models_dir: Path) -> Hardware:
    """Probe this machine. Local only; a few seconds at most even with a hung GPU driver."""
    import psutil

    vm = psutil.virtual_memory()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    gpus = _apple() or _nvidia() + _amd()
    hw = Hardware(
        cpu_cores_physical=int(physical),
        cpu_cores_logical=int(logical),
        ram_total=int(vm.total),
        ram_available=int(vm.available),
        disk_free=disk_free(models_dir),
        gpus=gpus,
        gpu_offload_supported=gpu_offload_supported(),
        cpu_name=_cpu_name(),
        system=platform.system(),
    )
    if gpus and not hw.gpu_offload_supported:
        hw.notes.append(
            f"{gpus[0].name} found, but this llama-cpp-python build is CPU-only: planning for the CPU"
        )
    return hw


def simulate(
    base: Hardware,
    *,
    gpu: str | None = None,
    vram: int | None = None,
    ram: int | None = None,
    cores: int | None = None,
) -> Hardware:
    """Another machine for planning (`doctor --gpu/--vram/--ram/--cores`), starting from ``base``:
    every number given replaces this machine's, so the plan describes that machine throughout.

    A simulated GPU is assumed usable (the user is asking "what would this machine run").
    ``ram`` sets total and available (minus what a desktop typically holds: 10%, at most 2 GiB).
    ``cores`` sets the physical cores the CPU speed estimate counts (two threads each).
    """
    import dataclasses

    hw = dataclasses.replace(base, gpus=list(base.gpus), notes=[], simulated=True)
    if cores is not None:
        if cores < 1:
            raise ValueError(f"cores must be 1 or more, got {cores}")
        hw.cpu_cores_physical, hw.cpu_cores_logical = cores, 2 * cores
        hw.cpu_name = f"{cores}-core CPU (simulated)"
    if ram is not None:
        hw.ram_total = ram
        hw.ram_available = ram - min(int(ram * 0.10), 2 * GiB)
    vendor = gpu.lower().strip() if gpu else None
    if vendor is not None and vendor not in ("nvidia", "amd", "apple", "none"):
        raise ValueError(f"unknown GPU kind {gpu!r}: use nvidia, amd, apple or none")
    if vendor is None and vram is not None:
        vendor = base.gpus[0].vendor if base.gpus else "nvidia"
    if vendor == "none":
        hw.gpus, hw.gpu_offload_supported = [], base.gpu_offload_supported
    elif vendor == "apple":
        # unified memory: --vram means the Metal working set; --ram (or the given vram) the whole RAM
        if ram is None and vram is not None:
            hw.ram_total = int(vram / (2 / 3)) if vram < 48 * GiB else int(vram / 0.75)
            hw.ram_available = hw.ram_total - min(int(hw.ram_total * 0.10), 2 * GiB)
        ws = vram if vram is not None else apple_working_set(hw.ram_total)
        hw.gpus = [GPU("apple", "Apple Silicon GPU (simulated)", ws, ws, unified=True, source="simulated")]
        hw.gpu_offload_supported = True
        hw.system = "Darwin"
    elif vendor in ("nvidia", "amd"):
        if vram is None:
            existing = [g for g in base.gpus if g.vendor == vendor]
            if not existing:
                raise ValueError(f"--gpu {vendor} needs --vram (this machine has no {vendor} GPU to measure)")
            hw.gpus = existing
        else:
            label = "NVIDIA" if vendor == "nvidia" else "AMD"
            hw.gpus = [GPU(vendor, f"{label} GPU (simulated)", vram, vram, source="simulated")]
        hw.gpu_offload_supported = True
        if hw.system == "Darwin":
            hw.system = "Linux"
    return hw
