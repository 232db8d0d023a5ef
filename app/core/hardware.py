"""What this machine offers to llama.cpp: CPU, RAM, GPUs, and the backends of the installed build.

Detection never raises: every probe that fails (no driver, no library, no permission) leaves
"not found" and a line in ``HardwareProfile.notes`` saying why.  Nothing here imports llama_cpp: the
build's backends are read from the shared libraries it ships (``llama_cpp/lib/libggml-*``).

* NVIDIA: NVML through nvidia-ml-py (``pynvml``), else ``nvidia-smi``.
* Apple Silicon: the Metal device's ``recommendedMaxWorkingSetSize`` through ctypes and the
  Objective-C runtime (no PyObjC) -- the amount of unified memory the GPU may wire.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import math
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REINSTALL = {
    "cuda": 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir '
    "llama-cpp-python==0.3.36",
    "metal": 'CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir '
    "llama-cpp-python==0.3.36",
}
_SIMD = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "neon")


@dataclass
class CpuInfo:
    name: str
    physical_cores: int
    logical_cores: int
    features: list[str]
    arch: str


@dataclass
class GpuInfo:
    name: str
    backend: str  # "cuda" | "metal"
    total_bytes: int
    free_bytes: int
    driver: str = ""
    unified: bool = False  # shares system RAM (Apple Silicon)


@dataclass
class HardwareProfile:
    """The machine as llama.cpp will see it, plus notes on everything that could not be probed."""

    cpu: CpuInfo
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    llama_backends: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_build(self) -> bool:
        """The installed llama.cpp can offload to some GPU."""
        return any(b not in ("cpu", "blas") for b in self.llama_backends)

    def usable_gpus(self) -> list[GpuInfo]:
        """GPUs the installed llama.cpp build can actually use."""
        return [g for g in self.gpus if g.backend in self.llama_backends]

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": asdict(self.cpu),
            "ram": {
                "total_bytes": self.ram_total_bytes,
                "available_bytes": self.ram_available_bytes,
            },
            "gpus": [
                {
                    "name": g.name,
                    "backend": g.backend,
                    "total_bytes": g.total_bytes,
                    "free_bytes": g.free_bytes,
                    "driver": g.driver,
                    "unified": g.unified,
                }
                for g in self.gpus
            ],
            "llama_backends": list(self.llama_backends),
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


# ---- CPU and RAM --------------------------------------------------------------------------------
def detect_cpu(notes: list[str]) -> CpuInfo:
    logical = os.cpu_count() or 1
    physical = logical
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except Exception as exc:  # psutil missing or unable to read /sys
        notes.append(f"physical core count unknown ({type(exc).__name__})")
    name, flags = platform.processor() or platform.machine(), set()
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
            m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
            name = m.group(1).strip() if m else name
            m = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
            flags = set(m.group(1).split()) if m else set()
            if "asimd" in flags:
                flags.add("neon")
        except OSError as exc:
            notes.append(f"cannot read /proc/cpuinfo: {exc.strerror}")
    elif sys.platform == "darwin":
        name = _sysctl("machdep.cpu.brand_string") or name
        if platform.machine() == "arm64":
            flags.add("neon")
        else:
            flags.update(
                (_sysctl("machdep.cpu.features") + " " + _sysctl("machdep.cpu.leaf7_features"))
                .lower()
                .split()
            )
            flags.update(f.replace(".", "_") for f in list(flags))
    features = [f for f in _SIMD if f in flags]
    return CpuInfo(name, physical, logical, features, platform.machine())


def _sysctl(key: str) -> str:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def detect_ram(notes: list[str]) -> tuple[int, int]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except Exception as exc:
        notes.append(f"psutil unavailable ({type(exc).__name__}); RAM read from /proc/meminfo")
    try:
        info = dict(
            (k, int(v.split()[0]) * 1024)
            for k, v in (ln.split(":", 1) for ln in Path("/proc/meminfo").read_text().splitlines())
        )
        return info.get("MemTotal", 0), info.get("MemAvailable", info.get("MemFree", 0))
    except (OSError, ValueError):
        notes.append("RAM size unknown")
        return 0, 0


# ---- NVIDIA -------------------------------------------------------------------------------------
def detect_nvidia(notes: list[str]) -> list[GpuInfo]:
    try:
        import pynvml
    except ImportError:
        notes.append("NVML: nvidia-ml-py is not installed")
        return _nvidia_smi(notes)
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        notes.append(f"NVML: not available ({_nvml_reason(exc)})")
        return _nvidia_smi(notes)
    gpus: list[GpuInfo] = []
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            gpus.append(
                GpuInfo(
                    _text(pynvml.nvmlDeviceGetName(h)),
                    "cuda",
                    int(mem.total),
                    int(mem.free),
                    driver,
                )
            )
    except Exception as exc:
        notes.append(f"NVML: query failed ({_nvml_reason(exc)})")
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return gpus


def _nvml_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("\n", " ")[:200]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _nvidia_smi(notes: list[str]) -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        notes.append("nvidia-smi: not found")
        return []
    query = "--query-gpu=name,memory.total,memory.free,driver_version"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"nvidia-smi failed: {exc}")
        return []
    if out.returncode != 0:
        notes.append(f"nvidia-smi failed: {(out.stderr or out.stdout).strip()[:200]}")
        return []
    return parse_nvidia_smi(out.stdout, notes)


def parse_nvidia_smi(text: str, notes: list[str]) -> list[GpuInfo]:
    """Rows of ``name, total MiB, free MiB, driver``; unreadable rows become notes."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        try:
            name, total, free, driver = parts[0], int(parts[1]), int(parts[2]), parts[3]
        except (IndexError, ValueError):
            notes.append(f"nvidia-smi: unreadable line {line!r}")
            continue
        gpus.append(GpuInfo(name, "cuda", total << 20, free << 20, driver))
    return gpus


# ---- Apple Metal --------------------------------------------------------------------------------
def detect_metal(notes: list[str], ram_total: int) -> list[GpuInfo]:
    if sys.platform != "darwin":
        return []
    try:
        metal = ctypes.CDLL("/System/Library/Frameworks/Metal.framework/Metal")
        objc = ctypes.CDLL(ctypes.util.find_library("objc") or "/usr/lib/libobjc.A.dylib")
        metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
        device = metal.MTLCreateSystemDefaultDevice()
        if not device:
            notes.append("Metal: no default device")
            return []
        objc.sel_registerName.restype = ctypes.c_void_p
        objc.sel_registerName.argtypes = [ctypes.c_char_p]
        send = objc.objc_msgSend
        send.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

        def call(selector: bytes, restype: Any) -> Any:
            send.restype = restype
            return send(device, objc.sel_registerName(selector))

        limit = int(call(b"recommendedMaxWorkingSetSize", ctypes.c_uint64))
        unified = bool(call(b"hasUnifiedMemory", ctypes.c_bool))
        name_obj = call(b"name", ctypes.c_void_p)
        send.restype = ctypes.c_char_p
        name = send(name_obj, objc.sel_registerName(b"UTF8String")) if name_obj else b"Apple GPU"
        allocated = int(call(b"currentAllocatedSize", ctypes.c_uint64))
    except (OSError, AttributeError, ValueError) as exc:
        notes.append(f"Metal: not available ({exc})")
        return []
    total = limit or ram_total
    return [GpuInfo(_text(name), "metal", total, max(0, total - allocated), "", unified)]


# ---- the llama.cpp build ------------------------------------------------------------------------
_BACKEND_LIBS = {
    "cuda": "ggml-cuda",
    "metal": "ggml-metal",
    "vulkan": "ggml-vulkan",
    "hip": "ggml-hip",
    "sycl": "ggml-sycl",
    "opencl": "ggml-opencl",
    "blas": "ggml-blas",
    "cpu": "ggml-cpu",
}


def llama_lib_dir() -> Path | None:
    """``llama_cpp/lib`` of the installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return lib if lib.is_dir() else None


def detect_backends(notes: list[str], lib_dir: Path | None = None) -> list[str]:
    lib_dir = lib_dir or llama_lib_dir()
    if lib_dir is None:
        notes.append("llama-cpp-python is not installed: no llama.cpp backend")
        return []
    names = [p.name for p in lib_dir.iterdir()]
    found = [b for b, stem in _BACKEND_LIBS.items() if any(stem in n for n in names)]
    if "metal" not in found and sys.platform == "darwin" and any("ggml" in n for n in names):
        # Metal may be linked into libggml itself rather than shipped as its own library.
        if any(_binary_mentions(lib_dir / n, b"MTLCreateSystemDefaultDevice") for n in names):
            found.append("metal")
    return found


def _binary_mentions(path: Path, needle: bytes) -> bool:
    try:
        return needle in path.read_bytes()
    except OSError:
        return False


def detect(lib_dir: Path | None = None) -> HardwareProfile:
    """Probe everything; never raises."""
    notes: list[str] = []
    try:
        cpu = detect_cpu(notes)
    except Exception as exc:  # a platform we did not foresee: still answer
        notes.append(f"CPU detection failed: {exc}")
        cpu = CpuInfo(
            platform.machine(), os.cpu_count() or 1, os.cpu_count() or 1, [], platform.machine()
        )
    total, available = detect_ram(notes)
    gpus: list[GpuInfo] = []
    for probe in (lambda: detect_nvidia(notes), lambda: detect_metal(notes, total)):
        try:
            gpus += probe()
        except Exception as exc:
            notes.append(f"GPU probe failed: {type(exc).__name__}: {exc}")
    try:
        backends = detect_backends(notes, lib_dir)
    except OSError as exc:
        notes.append(f"cannot list the llama.cpp libraries: {exc}")
        backends = []
    return HardwareProfile(
        cpu, total, available, gpus, backends, build_warnings(gpus, backends), notes
    )


def build_warnings(gpus: list[GpuInfo], backends: list[str]) -> list[str]:
    """A GPU the installed build cannot use is worth telling, with the command that fixes it."""
    out = []
    for kind in sorted({g.backend for g in gpus}):
        if kind not in backends and kind in REINSTALL:
            names = ", ".join(g.name for g in gpus if g.backend == kind)
            out.append(
                f"{names} found, but the installed llama.cpp build has no {kind.upper()} backend "
                f"(it has: {', '.join(backends) or 'none'}); models will run on the CPU only. "
                f"To use the GPU, reinstall: {REINSTALL[kind]}"
            )
    return out


BUSY_PERCENT = 60.0  # a CPU above this while we sample is held by another program


def threads_for(physical_cores: int, per_cpu_percent: list[float]) -> int:
    """Threads for llama.cpp: the physical cores less those other programs keep busy.

    llama.cpp's threads wait for each other at every step of a token, so one thread on a core
    another program holds slows them all: on this 2-core machine with one core busy, 2 threads
    generated 19 tokens/s and 1 thread 45 (bench/engine_overhead.py --busy 1).
    """
    logical = max(1, len(per_cpu_percent))
    busy = sum(1 for p in per_cpu_percent if p > BUSY_PERCENT)
    # logical CPUs map onto cores evenly; a core with one busy hyperthread counts as busy
    busy_cores = math.ceil(busy * physical_cores / logical)
    return max(1, physical_cores - busy_cores)


def suggested_threads(sample_s: float = 0.25) -> int:
    """:func:`threads_for` this machine now (samples the CPUs for ``sample_s`` seconds)."""
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return threads_for(physical, psutil.cpu_percent(interval=sample_s, percpu=True))
