"""What llama.cpp tells in its log, read in one place: KV cache types and buffer-size lines.

The engine child captures llama.cpp's log at every load (real or dry run); the planner and the
load report both read buffer sizes from it through :func:`buffer_lines`.  :data:`KV_TYPES` is the
one table of KV cache types: the ggml type id llama.cpp wants and the bytes a row of them takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIB = 1 << 20


@dataclass(frozen=True)
class KVType:
    """A KV cache element type: its ggml id and its block layout (elements, bytes per block)."""

    ggml_type: int
    block: int
    block_bytes: int


# The types llama.cpp accepts for --cache-type-k/-v (ggml.h's enum ggml_type ids).
KV_TYPES: dict[str, KVType] = {
    "f32": KVType(0, 1, 4),
    "f16": KVType(1, 1, 2),
    "bf16": KVType(30, 1, 2),
    "q8_0": KVType(8, 32, 34),
    "q4_0": KVType(2, 32, 18),
    "q4_1": KVType(3, 32, 20),
    "q5_0": KVType(6, 32, 22),
    "q5_1": KVType(7, 32, 24),
    "iq4_nl": KVType(20, 32, 18),
}

# "load_tensors:   CPU_Mapped model buffer size =   120.00 MiB", "llama_context: CPU  output buffer
# size = 0.12 MiB", "llama_kv_cache: CPU KV buffer size = 18.00 MiB", "... CUDA0 compute buffer ..."
_BUFFER = re.compile(r"(?:^|\s)(\S+)\s+(\w+) buffer size\s*=\s*([\d.]+)\s*MiB")
_KV_SIZE = re.compile(r"llama_kv_cache(?:_\w+)?: size =\s*([\d.]+)\s*MiB \(\s*\d+ cells")


@dataclass(frozen=True)
class BufferLine:
    """One ``<device> <kind> buffer size = N MiB`` line (kind: model, compute, output, KV, RS...)."""

    device: str
    kind: str
    nbytes: int

    @property
    def name(self) -> str:
        return f"{self.device} {self.kind}"


def mib_bytes(mib: str | float) -> int:
    return int(round(float(mib) * MIB))


def buffer_lines(lines: list[str]) -> list[BufferLine]:
    """Every buffer-size line of a log, in order."""
    out = []
    for line in lines:
        m = _BUFFER.search(line)
        if m:
            out.append(BufferLine(m.group(1), m.group(2), mib_bytes(m.group(3))))
    return out


def kv_cache_sizes(lines: list[str]) -> list[int]:
    """The size of each KV cache llama.cpp reports (``llama_kv_cache: size = ...``; one per cache:
    a windowed model has a full and a sliding-window one)."""
    return [mib_bytes(m.group(1)) for line in lines if (m := _KV_SIZE.search(line))]


# "llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells", "llama_kv_cache: layer   5: dev
# = CPU" (or ": filtered"), "llama_kv_cache: size = 2.50 MiB (2048 cells, 5 layers, 1/1 seqs), ...",
# "llama_memory_recurrent, layer   0: dev = CPU", "llama_memory_recurrent: size = 0.02 MiB (1 cells,
# 6 layers, 1 seqs 0 rs_seq), R (f32): ...", "load_tensors: layer   3 assigned to device CPU, is_swa = 1"
_ISWA_CREATE = re.compile(r"llama_kv_cache_iswa: creating\s+(non-SWA|SWA) KV cache")
_CACHE_LAYER = re.compile(r"(llama_kv_cache|llama_memory_recurrent)[:,] layer\s+(\d+): dev = (\S+)")
_CACHE_SIZE = re.compile(
    r"(llama_kv_cache|llama_memory_recurrent): size =\s*([\d.]+)\s*MiB \(\s*(\d+) cells"
)
_IS_SWA = re.compile(r"load_tensors: layer\s+(\d+) assigned to device (\S+), is_swa = (\d)")
# What each cache is made of, in llama.cpp's own words.
CACHE_LOG_KEYS = ("llama_kv_cache", "llama_memory_recurrent", "is_swa", "buffer size")


@dataclass(frozen=True)
class CacheInfo:
    """One memory cache llama.cpp allocates for a context.

    ``kind``: ``full`` (attention over the whole context), ``swa`` (the sliding-window layers'
    cache) or ``state`` (recurrent layers' fixed state, llama.cpp's RS buffers).  ``layers``: the
    repeating layers it holds, each on the device of ``devices`` at the same index.
    """

    kind: str
    nbytes: int
    cells: int
    layers: tuple[int, ...]
    devices: tuple[str, ...] = ()


def memory_caches(lines: list[str]) -> list[CacheInfo]:
    """Every KV cache and recurrent state of a context, in the order llama.cpp creates them."""
    out: list[CacheInfo] = []
    kind = "full"
    layers: list[int] = []
    devices: list[str] = []
    for line in lines:
        if m := _ISWA_CREATE.search(line):
            kind = "full" if m.group(1) == "non-SWA" else "swa"
            layers, devices = [], []
        elif m := _CACHE_LAYER.search(line):
            layers.append(int(m.group(2)))
            devices.append(m.group(3))
        elif m := _CACHE_SIZE.search(line):
            what = "state" if m.group(1) == "llama_memory_recurrent" else kind
            nbytes = mib_bytes(m.group(2))
            out.append(CacheInfo(what, nbytes, int(m.group(3)), tuple(layers), tuple(devices)))
            kind, layers, devices = "full", [], []
    return out


def swa_layers(lines: list[str]) -> tuple[int, ...]:
    """The layers llama.cpp treats as sliding-window ones (its per-architecture pattern)."""
    return tuple(
        int(m.group(1)) for line in lines if (m := _IS_SWA.search(line)) and m.group(3) == "1"
    )


FLASH_LOG_KEYS = ("flash_attn", "Flash Attention")  # the lines flash_attn_in_force reads
_FLASH_ASKED = re.compile(r"flash_attn\s+=\s+(auto|enabled|disabled)\b")
_FLASH_RESOLVED = re.compile(r"Flash Attention (enabled|not supported)")


def flash_attn_in_force(lines: list[str]) -> bool | None:
    """Whether a context llama.cpp created uses flash attention, from its log: the type it was
    created with (after its own fix-ups, such as on for a quantized V cache) and, for ``auto``,
    what it resolved to once it knew where each layer's attention runs.  None: no such line."""
    asked = [m.group(1) for line in lines if (m := _FLASH_ASKED.search(line))]
    if not asked:
        return None
    if asked[-1] != "auto":
        return asked[-1] == "enabled"
    resolved = [m.group(1) for line in lines if (m := _FLASH_RESOLVED.search(line))]
    return resolved[-1] == "enabled" if resolved else None
