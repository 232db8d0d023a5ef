"""How fast a model will write on this machine, before it is downloaded.

Generating one token reads every weight the model uses once (and the KV cache so far), so on a
CPU the speed is bounded by memory bandwidth: tokens/s ~ bandwidth / bytes read per token.  The
bandwidth is measured here with a short copy of a buffer far larger than any CPU cache (about a
third of a second, once; the figure is cached for 30 days).  A single-threaded copy is a
conservative figure: llama.cpp's threads together usually reach somewhat more, so real speeds
tend to be at or above the estimate.

A variant already on this computer can do better than an estimate: each comparison run records
its measured generation speed (:func:`record_measured`), and the rule prefers that figure.

GPU memory is not probed: layers on a GPU are counted at :data:`ASSUMED_VRAM_BANDWIDTH`, well
below any current discrete GPU's, so the CPU part dominates the estimate as it does in practice.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from app.core import paths
from app.core.fit import MemoryPlan

ASSUMED_VRAM_BANDWIDTH = 200e9  # bytes/s
PROBE_BYTES = 192 * 1000 * 1000  # far beyond the last-level cache of desktop and server CPUs
CACHE_FILE = "bandwidth.json"
MEASURED_FILE = "measured-speed.json"
CACHE_MAX_AGE_S = 30 * 86400
_lock = threading.Lock()


def measure_bandwidth(nbytes: int = PROBE_BYTES, repeats: int = 3) -> float:
    """Bytes per second a buffer copy moves through memory (read + write), best of ``repeats``."""
    import numpy as np

    src = np.ones(nbytes // 8, dtype=np.float64)  # touched: the pages are really there
    dst = np.empty_like(src)
    dst[:] = 0.0
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / max(best, 1e-9)


def _machine_key() -> str:
    import platform

    return f"{platform.machine()}:{platform.processor()}:{os.cpu_count()}"


def memory_bandwidth(cache_dir: Path | None = None, refresh: bool = False) -> float:
    """This machine's memory bandwidth in bytes/s: cached, measured when missing or old."""
    path = (cache_dir or paths.cache_dir()) / CACHE_FILE
    with _lock:  # two pages asking at once measure once
        if not refresh:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                fresh = time.time() - float(data["measured_at"]) < CACHE_MAX_AGE_S
                if fresh and data.get("machine") == _machine_key() and data["bytes_per_s"] > 0:
                    return float(data["bytes_per_s"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # missing or damaged: measure again
        value = measure_bandwidth()
        record = {"bytes_per_s": value, "measured_at": time.time(), "machine": _machine_key()}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(record), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs a new measurement next time
        return value


def _read_measured(path: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_measured(model: str | Path, gen_tok_s: float, cache_dir: Path | None = None) -> None:
    """Keep the generation speed a real run of ``model`` reached (the latest run wins)."""
    model = Path(model)
    try:
        size = model.stat().st_size
    except OSError:
        return  # the file went away: nothing to attach the figure to
    path = (cache_dir or paths.cache_dir()) / MEASURED_FILE
    with _lock:
        data = _read_measured(path)
        data[str(model.resolve())] = {
            "gen_tok_s": float(gen_tok_s),
            "size": size,
            "at": time.time(),
        }
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only loses the measurement


def measured_speed(model: str | Path, cache_dir: Path | None = None) -> float | None:
    """The last measured generation speed of ``model`` (None if never run, or the file changed)."""
    model = Path(model)
    entry = _read_measured((cache_dir or paths.cache_dir()) / MEASURED_FILE).get(
        str(model.resolve())
    )
    try:
        if entry and entry["size"] == model.stat().st_size and entry["gen_tok_s"] > 0:
            return float(entry["gen_tok_s"])
    except (OSError, KeyError, TypeError):
        pass
    return None


def bytes_per_token(plan: MemoryPlan) -> tuple[int, int]:
    """``(RAM bytes, VRAM bytes)`` read for one generated token: the weights each side holds and
    half the KV cache (its average fill over a conversation that reaches the context)."""
    cpu = plan.weights_cpu_bytes + plan.kv_cpu_bytes // 2
    gpu = plan.weights_gpu_bytes + plan.kv_gpu_bytes // 2
    return cpu, gpu


@dataclass(frozen=True)
class SpeedRule:
    """ "The highest quality that fits with headroom and runs at >= ``min_tok_s`` tokens/s"."""

    min_tok_s: float
    ram_bandwidth: float  # bytes/s, measured (:func:`memory_bandwidth`)
    vram_bandwidth: float = ASSUMED_VRAM_BANDWIDTH
    measured: Mapping[str, float] = field(default_factory=dict)  # variant file -> tokens/s

    def rate(self, file: str, plan: MemoryPlan) -> float:
        """The measured speed of ``file`` when a run measured it, else the estimate."""
        return self.measured.get(file) or self.tokens_per_s(plan)

    def tokens_per_s(self, plan: MemoryPlan) -> float:
        """Estimated generation speed of ``plan`` (tokens/s)."""
        cpu, gpu = bytes_per_token(plan)
        seconds = cpu / max(self.ram_bandwidth, 1.0) + gpu / max(self.vram_bandwidth, 1.0)
        return 1.0 / seconds if seconds > 0 else float("inf")

    def describe(self) -> str:
        """The rule and where its figures come from, in words."""
        return (
            f"Rule: the highest quality that fits with headroom and writes at least "
            f"{self.min_tok_s:g} tokens/s (change it in Settings). Speeds are estimated from the "
            f"bytes each token reads and this machine's measured memory speed "
            f"({self.ram_bandwidth / 1e9:.1f} GB/s)"
            + (", or measured in a comparison for variants already here." if self.measured else ".")
        )
