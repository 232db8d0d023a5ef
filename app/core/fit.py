"""Memory plan for a model before it is loaded: weights, KV cache, compute buffers, and the planner.

The figures mirror llama.cpp (0.3.36's vendored build, DESIGN.md section 4):

* weights come from the header, tensor by tensor (exact ggml sizes);
* the KV cache is ``cells x (row(type_k, head_dim_k x n_head_kv) + row(type_v, ...))`` per layer,
  cells = n_ctx padded to 256 (sliding-window layers keep ``min(n_ctx, n_swa + n_ubatch)``, and
  may have their own head size); without flash attention V rows are padded to the widest layer's;
* compute and output buffers are *not* modelled: a llama.cpp dry run (``no_alloc``) on a header-only
  file reports them exactly (:class:`DryRun`, produced by ``app.core.engine.host_dryrun``);
* the CPU backend's work buffer is modelled (:func:`cpu_work_bytes`): ggml allocates it on the
  first big batch, outside the buffers a dry run reports;
* what must stay resident in RAM accounts for CPU weight repacking: tensors that llama.cpp copies
  into an "extra" CPU buffer (AMX, CPU_REPACK) live in anonymous memory, and their mmap'd file pages
  are not read again after loading; every other CPU tensor is read through the mapping and must stay
  in the page cache, in whole page-cache pieces (:data:`FILE_GRANULE`).

The planner picks the largest ``n_gpu_layers`` that fits a VRAM budget less a margin, and the
largest context that fits.  ``n_gpu_layers`` follows llama.cpp: ``k >= 1`` puts the output layer and
the last ``k - 1`` repeating layers on the GPU, so ``n_layer + 1`` means everything.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.errors import StrEnum
from app.core.gguf_header import ModelSpec
from app.core.llama_log import KV_TYPES, CacheInfo
from app.core.units import human_bytes

GIB = 1 << 30
MIB = 1 << 20
CTX_STEP = 256  # llama.cpp pads the KV cache to 256 cells
# CPU "extra" buffer types: which weight types llama.cpp copies into them, and the size of the copy
# relative to the file bytes.  CPU_REPACK follows ggml-cpu's repack.cpp (which type has a repacked
# kernel for which CPU features); AMX was measured on an AMX build (Q8_0 grows by 4 bytes per
# 32-block for its s8s8 compensation).  Whether a buffer is used at all, and the CPU features ggml
# sees, come from the dry run -- the same process kind that will load the model.
AMX_TYPES = {
    "F16": 1.0,
    "Q4_0": 1.0,
    "Q4_1": 1.0,
    "Q8_0": 38 / 34,
    "Q4_K": 1.0,
    "Q5_K": 1.0,
    "Q6_K": 1.0,
    "IQ4_XS": 1.0,
}
_X86_BASELINE = ("avx2",)  # what an older cached dry run (without features) implies


def repacked_types(buffer: str, features: tuple[str, ...]) -> dict[str, float]:
    """Weight types llama.cpp moves into the CPU extra buffer ``buffer`` on a CPU with ``features``."""
    if buffer == "AMX":
        return AMX_TYPES
    if buffer != "CPU_REPACK":
        return {}
    feats = set(features or _X86_BASELINE)
    arm = "neon" in feats and bool(feats & {"dotprod", "matmul_int8"})
    out: dict[str, float] = {}
    if "avx2" in feats or arm:
        out.update({"Q4_0": 1.0, "Q4_K": 1.0, "IQ4_NL": 1.0, "MXFP4": 1.0})
    if arm:  # Apple Silicon and other ARM v8.2+: the K-quants above 4 bits and Q8_0 too
        out.update({"Q5_K": 1.0, "Q6_K": 1.0, "Q8_0": 1.0, "Q1_0": 1.0})
    if "avx512" in feats:
        out["Q2_K"] = 1.0  # q2_K_8x8 kernels exist for AVX-512 only
    return out


DEFAULT_VRAM_MARGIN = GIB  # llama.cpp's own --fit keeps 1 GiB free on each GPU
DEFAULT_RAM_MARGIN = 512 * MIB  # the OS, the GUI and the page cache of other programs
# Metal's recommendedMaxWorkingSetSize is already a limit with headroom, not free memory.
UNIFIED_VRAM_MARGIN = 512 * MIB
FULL_GPU_HOST_COMPUTE_NOTE = (
    "GPU compute buffer estimated from the CPU dry run (same graph, same tensor sizes), as "
    "llama.cpp's own fit does when it cannot measure the device"
)


class Verdict(StrEnum):
    """Where a model runs under a budget (compares equal to its string value)."""

    FULL_GPU = "full_gpu"
    PARTIAL_GPU = "partial_gpu"
    CPU = "cpu"
    NO_FIT = "no_fit"


@dataclass(frozen=True)
class DryRun:
    """What a llama.cpp dry run reported for one (file, context, offload, cache type)."""

    compute: dict[str, int]  # device name (CPU, CUDA0, Metal, CUDA_Host, ...) -> bytes
    output_bytes: int
    kv_bytes: int  # llama.cpp's "KV ... size" line: the cache it would allocate
    extra_buffers: tuple[str, ...]  # CPU extra buffer types used by this build ("AMX", ...)
    base_rss_bytes: int = 0  # resident memory of an engine child with no model (runtime, libs)
    measured_gpu: bool = False  # the compute figures came from a GPU build
    model_bytes: int = 0  # llama_model_size(): llama.cpp's own total of the weights
    cpu_features: tuple[str, ...] = ()  # as ggml-cpu sees them (avx2, avx512, neon, ...)
    # Each cache llama.cpp creates (full and windowed KV, recurrent state), with its layers, and
    # the layers it treats as sliding-window ones: its per-architecture rules, not a formula's.
    caches: tuple[CacheInfo, ...] = ()
    swa_layers: tuple[int, ...] = ()
    # The settings the dry run reserved for (a load with the same ones reserves the same).
    flash_attn: bool | None = None  # None: not recorded (an older cache entry)
    swa_full: bool = True
    n_ubatch: int = 512
    n_outputs_max: int = (
        0  # logit rows per micro-batch reserved for (0: n_batch, llama.cpp's default)
    )
    # Host memory llama.cpp allocated for the model besides its weight buffers (the vocabulary,
    # tensor metadata), measured in the dry run's child; 0 where the C library cannot tell.
    host_model_bytes: int = 0

    @property
    def compute_bytes(self) -> int:
        return sum(self.compute.values())

    @property
    def cpu_compute_bytes(self) -> int:
        return sum(v for k, v in self.compute.items() if _is_host(k))

    @property
    def gpu_compute_bytes(self) -> int:
        return sum(v for k, v in self.compute.items() if not _is_host(k))


def _is_host(device: str) -> bool:
    return device.upper().startswith("CPU") or device.endswith("_Host")


def pad_ctx(n_ctx: int) -> int:
    return max(CTX_STEP, (n_ctx + CTX_STEP - 1) // CTX_STEP * CTX_STEP)


def _row(type_name: str, n: int) -> int:
    try:
        kv = KV_TYPES[type_name.lower()]
        block, size = kv.block, kv.block_bytes
    except KeyError:
        raise ValueError(
            f"unknown KV cache type {type_name!r} (use one of {', '.join(KV_TYPES)})"
        ) from None
    if n % block:
        raise ValueError(f"KV cache type {type_name} needs rows that are multiples of {block}")
    return n // block * size


def kv_layer_bytes(
    spec: ModelSpec,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = 512,
    swa_full: bool = True,
    flash_attn: bool | None = None,
) -> list[int]:
    """Bytes of the KV cache of each repeating layer, as llama.cpp allocates it (a formula: the
    planner takes llama.cpp's own figures from a dry run, :func:`kv_from_dry_run`).

    ``flash_attn`` None (no dry run said what llama.cpp chose) is taken as off unless V is
    quantized: the larger figure."""
    v_trans = not flash_attn_on(flash_attn, type_v)
    out = []
    for il in range(spec.n_layer):
        out.append(
            _layer_cells(spec, il, n_ctx, n_ubatch, swa_full)
            * _kv_row(spec, il, type_k, type_v, v_trans)
        )
    return out


def flash_attn_on(flash_attn: bool | None, type_v: str) -> bool:
    """Flash attention as llama.cpp uses it where no log said (None: on only for a quantized V
    cache, which needs it)."""
    return flash_attn if flash_attn is not None else type_v.lower() != "f16"


def _head_dims(spec: ModelSpec, il: int) -> tuple[int, int]:
    """(K, V) head sizes of layer ``il``: windowed layers may have their own (``key_length_swa``),
    as llama_hparams::n_embd_head_k(il) picks them."""
    if (spec.head_dim_k_swa or spec.head_dim_v_swa) and spec.n_swa and _is_swa_layer(spec, il):
        return spec.head_dim_k_swa or spec.head_dim_k, spec.head_dim_v_swa or spec.head_dim_v
    return spec.head_dim_k, spec.head_dim_v


def _kv_row(spec: ModelSpec, il: int, type_k: str, type_v: str, v_trans: bool = False) -> int:
    """Bytes one cell of layer ``il`` takes (K and V rows).

    Without flash attention llama.cpp stores V transposed, and where the layers' V widths differ
    (gemma4: 8 heads of 256 on windowed layers, 2 of 512 on global ones) it pads every layer's V to
    the widest (llama-kv-cache.cpp, TAG_V_CACHE_VARIABLE).
    """
    heads = spec.n_head_kv_of(il)
    if not heads:
        return 0
    dim_k, dim_v = _head_dims(spec, il)
    v_width = dim_v * heads
    if v_trans:
        v_width = max(
            v_width, max(_head_dims(spec, j)[1] * spec.n_head_kv_of(j) for j in range(spec.n_layer))
        )
    return _row(type_k, dim_k * heads) + _row(type_v, v_width)


def _layer_cells(spec: ModelSpec, il: int, n_ctx: int, n_ubatch: int, swa_full: bool = True) -> int:
    """KV cells of layer ``il``: the padded context, or a window for sliding-window layers."""
    full = pad_ctx(n_ctx)
    if spec.n_swa and not swa_full and _is_swa_layer(spec, il):
        return min(full, pad_ctx(spec.n_swa + n_ubatch))
    return full


@dataclass(frozen=True)
class KVSplit:
    """The KV cache and recurrent state of a context per repeating layer, and per cache."""

    per_layer: list[int]  # attention KV bytes of each repeating layer
    state_per_layer: list[int]  # recurrent state bytes of each layer
    caches: list[dict[str, Any]]  # kind, cells, layers, bytes: llama.cpp's caches as planned
    max_cells: int  # the largest attention cache (what attention at a full context reads)


def kv_from_dry_run(
    spec: ModelSpec,
    dry: DryRun,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = 512,
) -> KVSplit:
    """The KV caches a dry run reported, spread over their layers.

    llama.cpp logs each cache's cells and layers and its size in MiB with two decimals; a cache's
    bytes are ``cells x sum of its layers' rows`` exactly, so that product is taken when it agrees
    with the logged size (a rounding apart) and the logged size otherwise (padded V rows, per-layer
    head sizes this header does not describe).  Without caches in the dry run (an older cache
    entry) the formula of :func:`kv_layer_bytes` stands in.
    """
    n = spec.n_layer
    if not dry.caches:
        per = kv_layer_bytes(
            spec, n_ctx, type_k, type_v, n_ubatch, dry.swa_full, flash_attn=dry.flash_attn
        )
        cells = max(
            (_layer_cells(spec, il, n_ctx, n_ubatch, dry.swa_full) for il in range(n) if per[il]),
            default=0,
        )
        formula = [{"kind": "formula", "cells": pad_ctx(n_ctx), "layers": n, "bytes": sum(per)}]
        return KVSplit(per, [0] * n, formula, cells)
    per, state = [0] * n, [0] * n
    v_trans = not flash_attn_on(dry.flash_attn, type_v)
    caches: list[dict[str, Any]] = []
    max_cells = 0
    for c in dry.caches:
        layers = [il for il in c.layers if il < n]
        nbytes = c.nbytes
        if c.kind != "state":
            try:
                rows = [_kv_row(spec, il, type_k, type_v, v_trans) for il in layers]
            except ValueError:
                rows = []
            exact = c.cells * sum(rows)
            if rows and abs(exact - nbytes) <= 6 * 1024 + nbytes // 1000:
                nbytes = exact
            max_cells = max(max_cells, c.cells)
        target = state if c.kind == "state" else per
        for il in layers:
            target[il] += nbytes // max(len(layers), 1)
        caches.append({"kind": c.kind, "cells": c.cells, "layers": len(layers), "bytes": nbytes})
    return KVSplit(per, state, caches, max_cells)


# llama.cpp's default sliding-window period per architecture when the file has no pattern key
# (src/models/<arch>.cpp: load_swa_pattern(ml, N[, dense_first])): every N-th layer is global.
# Only a fallback: a dry run reports llama.cpp's own per-layer choice (DryRun.swa_layers).
SWA_DEFAULT_PATTERN: dict[str, tuple[int, bool]] = {
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "gemma-embedding": (6, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "gpt-oss": (2, False),
    "llama4": (4, False),
    "exaone4": (4, False),
    "exaone-moe": (4, False),
    "olmo2": (4, False),
    "smallthinker": (4, True),
    "afmoe": (4, False),
    "plamo3": (8, False),
}


def _is_swa_layer(spec: ModelSpec, il: int) -> bool:
    pattern = spec.metadata.get(f"{spec.architecture}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        return bool(pattern[il]) if il < len(pattern) else False
    dense_first = False
    if not (isinstance(pattern, int) and pattern > 0):
        pattern, dense_first = SWA_DEFAULT_PATTERN.get(spec.architecture, (0, False))
    if pattern <= 1:
        return pattern == 1  # llama.cpp's set_swa_pattern: 1 = every layer windowed, 0 = none
    if dense_first:
        return il % pattern != 0
    return (il + 1) % pattern != 0  # every pattern-th layer is a global one


def cpu_work_bytes(
    spec: ModelSpec,
    n_ctx: int,
    type_v: str = "f16",
    n_ubatch: int = 512,
    n_batch: int = 512,
    n_kv_cells: int = 0,
    flash_attn: bool | None = None,
) -> int:
    """The ggml CPU backend's work buffer at its largest: a full batch at a full context.

    Without flash attention (llama.cpp's automatic choice turns it on where the backend runs it,
    which on CPU is every layer; it can be turned off in Settings) the product of
    the attention weights and the f16 V cache first converts the f32 weights
    (``n_kv x n_tokens x n_head``) to f16 in this buffer.  ggml-cpu keeps it at its high-water
    mark; llama.cpp's dry run does not report it (measured on the MEDIUM model with a prompt
    filling 2048 tokens: a 30.9 MiB anonymous block = 2048 x 495 x 16 x 2 bytes).  The other
    conversions (activations to the weights' dot type) are a few MiB at most and fit in it.
    """
    if flash_attn_on(flash_attn, type_v):
        return 0  # flash attention: per-thread scratch rows only
    n_tokens = min(n_ubatch, n_batch, n_ctx)
    layers = [il for il in range(spec.n_layer) if spec.n_head_kv_of(il)]
    n_kv = n_kv_cells or max((_layer_cells(spec, il, n_ctx, n_ubatch) for il in layers), default=0)
    return n_kv * n_tokens * spec.n_head * 2


def kv_bytes(
    spec: ModelSpec,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = 512,
    swa_full: bool = True,
    flash_attn: bool | None = None,
) -> int:
    """The KV formula's total (a fallback and a check: plans take llama.cpp's dry-run figures)."""
    return sum(kv_layer_bytes(spec, n_ctx, type_k, type_v, n_ubatch, swa_full, flash_attn))


def extra_buffer_of(
    tensor_name: str,
    type_name: str,
    shape: tuple[int, ...],
    extras: tuple[str, ...],
    features: tuple[str, ...] = (),
) -> tuple[str, float] | None:
    """Which CPU extra buffer (and size factor) llama.cpp would put a CPU tensor in, or None."""
    # Only matrix-multiplication weights are repacked (token_embd is read with GET_ROWS), and
    # the kernels work on groups of 8 rows.
    if len(shape) != 2 or tensor_name.startswith("token_embd") or shape[1] % 8:
        return None
    for name in extras:
        factor = repacked_types(name, features).get(type_name)
        if factor is not None:
            return name, factor
    return None


@dataclass
class MemoryPlan:
    """Every figure of one configuration, in bytes, and the notes that explain estimates."""

    n_ctx: int
    n_gpu_layers: int
    n_layers_total: int  # n_layer + 1 (the output layer counts, as in llama.cpp)
    type_k: str
    type_v: str
    weights_bytes: int
    weights_cpu_bytes: int
    weights_gpu_bytes: int
    repacked_bytes: int  # anonymous copies in CPU extra buffers
    mapped_resident_bytes: int  # CPU tensors read through mmap, must stay in the page cache
    kv_bytes: int
    kv_cpu_bytes: int
    kv_gpu_bytes: int
    compute_bytes: int
    compute_cpu_bytes: int
    compute_gpu_bytes: int
    output_bytes: int
    overhead_bytes: int
    ram_bytes: int  # what must stay resident in system RAM
    vram_bytes: int
    peak_ram_bytes: int  # while loading: the whole file is read through the page cache once
    notes: list[str] = field(default_factory=list)
    state_bytes: int = 0  # recurrent layers' fixed state (part of kv_bytes), whatever the context
    kv_caches: list[dict[str, Any]] = field(default_factory=list)  # llama.cpp's caches, one by one
    cpu_moe_layers: int = 0  # layers whose expert tensors stay in RAM although the layer is on GPU
    cpu_moe_extra: int = 0  # and this many expert tensors of the next layer (a finer step)
    expert_cpu_bytes: int = 0
    expert_gpu_bytes: int = 0  # the expert tensors that are on the GPU

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PAGE = 4096
# What the page cache keeps or drops as one piece.  Linux caches files in large folios (up to the
# PMD size, 2 MiB, when readahead is large: measured on 6.18/ext4 with 8 MiB readahead, 76 MiB of
# a 147 MiB model mapped in 2 MiB pieces): a piece holding a byte inference reads stays resident
# whole, with the repacked weights beside it.  Other systems map single pages.
FILE_GRANULE = 2 * MIB if sys.platform.startswith("linux") else PAGE


def embedding_resident_bytes(nbytes: int, n_rows: int, n_ctx: int, granule: int = PAGE) -> int:
    """Bytes of the token embeddings a context can keep resident.

    llama.cpp reads token_embd row by row (GET_ROWS) through the mapping: only the rows of tokens
    actually seen are paged in -- at most one per context position, each costing at least a page
    (or the page cache's ``granule``).
    """
    row = nbytes // max(n_rows, 1)
    return min(nbytes, min(n_ctx, n_rows) * max(row, PAGE, granule))


def _resident_extents(extents: list[tuple[int, int]], granule: int) -> int:
    """Bytes of the granules that the (start, end) file ranges touch, each granule counted once."""
    total, cur_start, cur_end = 0, -1, -1
    for start, end in sorted(extents):
        a, b = start // granule * granule, -(-end // granule) * granule
        if a > cur_end:
            total += cur_end - cur_start
            cur_start, cur_end = a, b
        else:
            cur_end = max(cur_end, b)
    return total + cur_end - cur_start


def _gpu_layer_set(n_layer: int, n_gpu_layers: int) -> tuple[set[int], bool]:
    """Repeating layers on the GPU and whether the output layer is there, as llama.cpp assigns."""
    ngl = max(0, min(n_gpu_layers, n_layer + 1))
    start = n_layer + 1 - ngl
    return {il for il in range(n_layer) if il >= start}, ngl >= 1


def plan_memory(
    spec: ModelSpec,
    dry: DryRun,
    n_ctx: int,
    n_gpu_layers: int = 0,
    type_k: str = "f16",
    type_v: str = "f16",
    n_ubatch: int = 512,
    granule: int = FILE_GRANULE,
    cpu_moe_layers: int = 0,
    cpu_moe_extra: int = 0,
) -> MemoryPlan:
    """The memory a load of ``spec`` with these settings needs, split into RAM and VRAM.  Flash
    attention is what the dry run resolved (llama.cpp's automatic choice unless forced)."""
    notes: list[str] = []
    if dry.flash_attn is not None:
        n_ubatch = dry.n_ubatch
        notes.append(
            settings_note(dry.flash_attn, dry.swa_full, dry.n_ubatch, bool(dry.swa_layers))
        )
    gpu_layers, output_on_gpu = _gpu_layer_set(spec.n_layer, n_gpu_layers)
    w_cpu = w_gpu = repacked = mapped = experts_cpu = experts_gpu = 0
    moved_extra = (
        set(expert_kinds(spec, cpu_moe_layers)[:cpu_moe_extra]) if cpu_moe_extra else set()
    )
    extents: list[tuple[int, int]] = []  # file ranges read through the mapping
    base, last, last_end = spec.data_offset, 0, 0
    for t in spec.tensors:
        if t.offset < last:  # the next shard of a split model: its own file
            base = last_end + granule
        last, start = t.offset, base + t.offset
        last_end = start + t.nbytes
        layer = t.layer
        on_gpu = (
            (layer in gpu_layers)
            if layer is not None
            else (output_on_gpu and not t.name.startswith("token_embd"))
        )
        moved = layer is not None and (
            layer < cpu_moe_layers
            or (layer == cpu_moe_layers and t.name.split(".", 2)[2] in moved_extra)
        )
        if on_gpu and moved and is_expert_tensor(t.name):
            on_gpu = False  # --n-cpu-moe: this layer's experts stay in RAM
            experts_cpu += t.nbytes
        if on_gpu:
            w_gpu += t.nbytes
            experts_gpu += t.nbytes if is_expert_tensor(t.name) else 0
            continue
        w_cpu += t.nbytes
        extra = extra_buffer_of(t.name, t.type_name, t.shape, dry.extra_buffers, dry.cpu_features)
        if extra:
            repacked += int(t.nbytes * extra[1])
        elif t.name.startswith("token_embd") and len(t.shape) == 2:
            embd = embedding_resident_bytes(t.nbytes, t.shape[1], n_ctx, granule)
            if embd < t.nbytes:
                mapped += embd  # scattered rows: not one range
            else:
                extents.append((start, start + t.nbytes))
        else:
            extents.append((start, start + t.nbytes))
    if extents:
        mapped += _resident_extents(extents, max(granule, 1))
    kv = kv_from_dry_run(spec, dry, n_ctx, type_k, type_v, n_ubatch)
    kv_layers = [a + b for a, b in zip(kv.per_layer, kv.state_per_layer, strict=True)]
    kv_gpu = sum(b for il, b in enumerate(kv_layers) if il in gpu_layers)
    kv_cpu = sum(kv_layers) - kv_gpu
    state = sum(kv.state_per_layer)
    ngl = max(0, min(n_gpu_layers, spec.n_layer + 1))
    if ngl == 0 or dry.measured_gpu:
        c_cpu, c_gpu = dry.cpu_compute_bytes, dry.gpu_compute_bytes
        if ngl and dry.measured_gpu:
            notes.append("compute buffers measured by a dry run on this GPU build")
    else:
        c_gpu = dry.cpu_compute_bytes
        notes.append(FULL_GPU_HOST_COMPUTE_NOTE)
        if ngl > spec.n_layer and not experts_cpu:
            # Fully offloaded: the host keeps only the input embeddings and the logits staging.
            c_cpu = min(dry.cpu_compute_bytes, 4 * n_ubatch * (spec.n_embd + spec.n_vocab))
        else:
            c_cpu = dry.cpu_compute_bytes  # the CPU runs the layers it keeps: same graph sizes
    work = 0
    if ngl <= spec.n_layer:  # some repeating layers (their attention) run on the CPU
        work = cpu_work_bytes(
            spec, n_ctx, type_v, n_ubatch, n_kv_cells=kv.max_cells, flash_attn=dry.flash_attn
        )
        c_cpu += work
    # The runtime (an engine child with no model), what llama.cpp allocates on the heap for this
    # model (the vocabulary above all, tens of MiB on a large one) and the engine's own share.
    overhead = dry.base_rss_bytes + host_model_bytes(spec, dry)
    ram = repacked + mapped + kv_cpu + c_cpu + dry.output_bytes + overhead
    vram = w_gpu + kv_gpu + c_gpu if ngl else 0
    # Loading reads the whole file once; the pages of copied or offloaded tensors are released
    # only later (they are clean page cache), so the peak counts them too, and the loader's
    # metadata (every token and merge string, once in llama.cpp and once in the engine's check
    # of the header), freed when the load ends.
    peak = ram + (w_cpu - mapped) + w_gpu + load_transient_bytes(spec)
    if work:
        notes.append(
            f"CPU compute includes {human_bytes(work)} of ggml work buffer (attention at a full batch and "
            "context, converted to f16) that llama.cpp allocates outside its reported buffers"
        )
    if state:
        notes.append(
            f"{human_bytes(state)} of recurrent state (fixed size, whatever the context) in the KV figure"
        )
    swa = [c for c in kv.caches if c["kind"] == "swa"]
    if swa:
        notes.append(
            f"sliding-window cache of {swa[0]['layers']} layers holds {swa[0]['cells']} cells"
            + (" (full size: swa_full)" if swa[0]["cells"] >= pad_ctx(n_ctx) else "")
        )
    if repacked:
        notes.append(
            f"{human_bytes(repacked)} of weights are repacked by llama.cpp into anonymous memory "
            f"({', '.join(dry.extra_buffers)}); their file pages are not needed after loading"
        )
    return MemoryPlan(
        n_ctx=n_ctx,
        n_gpu_layers=ngl,
        n_layers_total=spec.n_layer + 1,
        type_k=type_k,
        type_v=type_v,
        weights_bytes=w_cpu + w_gpu,
        weights_cpu_bytes=w_cpu,
        weights_gpu_bytes=w_gpu,
        repacked_bytes=repacked,
        mapped_resident_bytes=mapped,
        kv_bytes=kv_cpu + kv_gpu,
        kv_cpu_bytes=kv_cpu,
        kv_gpu_bytes=kv_gpu,
        compute_bytes=c_cpu + c_gpu,
        compute_cpu_bytes=c_cpu,
        compute_gpu_bytes=c_gpu,
        output_bytes=dry.output_bytes,
        overhead_bytes=overhead,
        ram_bytes=ram,
        vram_bytes=vram,
        peak_ram_bytes=peak,
        notes=notes,
        state_bytes=state,
        kv_caches=kv.caches,
        cpu_moe_layers=min(cpu_moe_layers, spec.n_layer) if experts_cpu else 0,
        cpu_moe_extra=len(moved_extra) if experts_cpu else 0,
        expert_cpu_bytes=experts_cpu,
        expert_gpu_bytes=experts_gpu,
    )


# A scoring pass (app.core.engine.host_score) asks for the logits of every position of a batch:
# llama.cpp grows its output buffer to n_batch rows, and numpy holds copies of the batch's logits
# at the peak (float32 each).  A variant scored against the reference: the log-probabilities and
# log_softmax's exp temporary, two.  The reference itself also compresses them to its top-k form:
# the negated array and argpartition's 8-byte indices besides, four.  (Its compute buffer is the
# dry run's, planned for n_batch output rows: WORKLOAD_OUTPUTS.)
SCORE_LOGIT_COPIES = {"score": 2, "reference": 4}


def scoring_extra_bytes(
    spec: ModelSpec, dry: DryRun, n_ctx: int, n_batch: int = 512, workload: str = "reference"
) -> int:
    """What a comparison's scoring pass holds beyond its plan: the logits of a whole batch."""
    rows = min(n_batch, n_ctx)
    logits = rows * max(spec.n_vocab, 0) * 4
    return max(0, logits - dry.output_bytes) + SCORE_LOGIT_COPIES[workload] * logits


# What each workload asks of llama.cpp, as its n_outputs_max (logit rows per micro-batch): a chat
# needs the last position's logits only; a scoring pass every position's (0 = n_batch).  The dry
# run reserves for the same, so each workload's compute buffer is llama.cpp's own figure.
WORKLOAD_OUTPUTS = {"chat": 1, "score": 0, "reference": 0}
WORKLOADS = tuple(WORKLOAD_OUTPUTS)
# Fallback where the dry run could not measure llama.cpp's host allocations (a C library without
# mallinfo2): the vocabulary's share, measured with vocab-only loads of the sdist's 19 vocab
# files -- BPE about 230 bytes per token and 90 per merge, SentencePiece 155 per token, Unigram
# (T5) 530 -- plus a margin for the tensor metadata.
_VOCAB_TOKEN_BYTES = {"t5": 560}
_TOKEN_BYTES, _MERGE_BYTES = 250, 100


# A loaded engine child holds more than a model-free one besides llama.cpp's model: the Python
# side of the load (llama-cpp-python's objects and its chat handler, the compiled template, the
# graph metadata the first decodes touch) -- measured on six zoo vocabularies (32k to 262k
# tokens) as 10-14 MiB plus 20-80 bytes per token; with 16 MiB and 80 bytes no zoo family's
# filled chat peaks above its plan (bench/fit_accuracy.py --zoo).
ENGINE_LOADED_BYTES = 16 << 20
ENGINE_TOKEN_BYTES = 80
# What a load holds only while it runs (the loader's copy of the metadata, the header check's):
# 19-32 bytes per token or merge measured (bench/fit_accuracy.py --zoo, "load +N").
LOAD_ENTRY_BYTES = 40


def _vocab_entries(spec: ModelSpec) -> tuple[int, int]:
    tokens = spec.metadata.get("tokenizer.ggml.tokens")
    merges = spec.metadata.get("tokenizer.ggml.merges")
    n_tokens = len(tokens) if isinstance(tokens, list) else spec.n_vocab
    return n_tokens, len(merges) if isinstance(merges, list) else 0


def load_transient_bytes(spec: ModelSpec) -> int:
    """What a load holds only while it runs: the loader's copies of the vocabulary."""
    return LOAD_ENTRY_BYTES * sum(_vocab_entries(spec))


def vocab_host_bytes(spec: ModelSpec) -> int:
    """Estimated host memory of llama.cpp's vocabulary for ``spec`` (see ``_TOKEN_BYTES``)."""
    n_tokens, n_merges = _vocab_entries(spec)
    per_token = _VOCAB_TOKEN_BYTES.get(str(spec.metadata.get("tokenizer.ggml.model")), _TOKEN_BYTES)
    return n_tokens * per_token + n_merges * _MERGE_BYTES


def host_model_bytes(spec: ModelSpec, dry: DryRun) -> int:
    """Host memory a loaded engine holds for the model besides its buffers: llama.cpp's own
    allocations (the vocabulary; measured by the dry run) and the engine's (``ENGINE_*``)."""
    llama = dry.host_model_bytes or vocab_host_bytes(spec)
    return llama + ENGINE_LOADED_BYTES + ENGINE_TOKEN_BYTES * _vocab_entries(spec)[0]


def workload_ram_bytes(
    spec: ModelSpec, dry: DryRun, plan: MemoryPlan, workload: str, n_batch: int = 512
) -> int:
    """What one engine child keeps resident for ``workload`` on the CPU (``plan`` at ngl 0).

    ``dry`` (and ``plan``) must be reserved for the workload's outputs (``WORKLOAD_OUTPUTS``):
    then a chat needs the plan as it is, and a comparison's teacher-forced pass (``score``; the
    reference variant's, which keeps its top-k too: ``reference``) holds a batch of logits
    besides (:func:`scoring_extra_bytes`).
    """
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
    if dry.n_outputs_max != WORKLOAD_OUTPUTS[workload]:
        raise ValueError(
            f"a {workload} plan needs a dry run reserved for n_outputs_max="
            f"{WORKLOAD_OUTPUTS[workload]} (this one: {dry.n_outputs_max})"
        )
    if workload in SCORE_LOGIT_COPIES:
        return plan.ram_bytes + scoring_extra_bytes(spec, dry, plan.n_ctx, n_batch, workload)
    return plan.ram_bytes


def settings_note(flash_attn: bool, swa_full: bool, n_ubatch: int, windowed: bool) -> str:
    """The memory settings a plan is made for, in words (the load uses the same)."""
    text = f"settings: flash attention {'on' if flash_attn else 'off'}, n_ubatch {n_ubatch}"
    if windowed:
        text += ", sliding-window cache " + (
            "full size (swa_full: prompt reuse across turns)"
            if swa_full
            else "window only (swa_full off: least memory)"
        )
    return text


@dataclass(frozen=True)
class Budget:
    """Memory a plan may use.  ``unified``: the GPU shares system RAM (Apple Silicon)."""

    ram_bytes: int
    vram_bytes: int = 0
    unified: bool = False
    ram_margin: int = DEFAULT_RAM_MARGIN
    vram_margin: int = DEFAULT_VRAM_MARGIN

    @property
    def ram_usable(self) -> int:
        return max(0, self.ram_bytes - self.ram_margin)

    @property
    def vram_usable(self) -> int:
        return max(0, self.vram_bytes - self.vram_margin) if self.vram_bytes else 0

    def fits(self, plan: MemoryPlan) -> bool:
        if plan.vram_bytes > self.vram_usable:
            return False
        ram = plan.ram_bytes + (plan.vram_bytes if self.unified else 0)
        return ram <= self.ram_usable


# (n_ctx, n_gpu_layers) -> DryRun: a dry run, usually cached (see app.core.dryrun).
DryRunFn = Callable[[int, int], DryRun]


@dataclass
class OffloadPlan:
    """The planner's answer: a verdict, the chosen plan, and the largest context that fits."""

    verdict: Verdict
    plan: MemoryPlan
    max_ctx: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        p = self.plan
        return {
            "verdict": self.verdict,
            "n_ctx": p.n_ctx,
            "n_gpu_layers": p.n_gpu_layers,
            "n_layers_total": p.n_layers_total,
            "weights_bytes": p.weights_bytes,
            "kv_bytes": p.kv_bytes,
            "state_bytes": p.state_bytes,
            "cpu_moe_layers": p.cpu_moe_layers,
            "cpu_moe_extra": p.cpu_moe_extra,
            "kv_caches": p.kv_caches,
            "compute_bytes": p.compute_bytes,
            "ram_bytes": p.ram_bytes,
            "vram_bytes": p.vram_bytes,
            "peak_ram_bytes": p.peak_ram_bytes,
            "max_ctx": self.max_ctx,
            "reason": self.reason,
            "detail": p.to_json(),
        }


def _plan_at(
    spec: ModelSpec,
    dry_fn: DryRunFn,
    n_ctx: int,
    ngl: int,
    type_k: str,
    type_v: str,
    cpu_moe: int = 0,
) -> MemoryPlan:
    """The plan at ``ngl`` with ``cpu_moe`` expert tensors (in layer order) kept in RAM."""
    layers, extra = divmod(cpu_moe, max(expert_tensors_per_layer(spec), 1))
    dry = dry_fn(n_ctx, ngl)
    return plan_memory(
        spec, dry, n_ctx, ngl, type_k, type_v, cpu_moe_layers=layers, cpu_moe_extra=extra
    )


def expert_kinds(spec: ModelSpec, layer: int) -> list[str]:
    """The expert tensors of ``layer`` (``ffn_down_exps.weight``, ...) in the order a partly moved
    layer keeps them in RAM."""
    prefix = f"blk.{layer}."
    return sorted(
        t.name[len(prefix) :]
        for t in spec.tensors
        if t.name.startswith(prefix) and is_expert_tensor(t.name)
    )


def expert_tensors_per_layer(spec: ModelSpec) -> int:
    return max((len(expert_kinds(spec, il)) for il in range(min(spec.n_layer, 4))), default=0)


# llama.cpp's --n-cpu-moe pattern (common/arg.cpp): the plan and the load's overrides share it.
MOE_EXPERTS = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
_MOE_EXPERTS_RE = re.compile(MOE_EXPERTS)


def is_expert_tensor(name: str) -> bool:
    """A MoE expert tensor (``blk.N.ffn_{up,down,gate,gate_up}_{,ch}exps``), as --n-cpu-moe matches."""
    return _MOE_EXPERTS_RE.search(name) is not None


def has_experts(spec: ModelSpec) -> bool:
    return any(is_expert_tensor(t.name) for t in spec.tensors)


def _largest_fitting_ngl(
    spec: ModelSpec,
    budget: Budget,
    dry_fn: DryRunFn,
    n_ctx: int,
    type_k: str,
    type_v: str,
    cpu_moe: int,
) -> int:
    top = spec.n_layer + 1 if budget.vram_usable else 0
    # VRAM use grows with every layer offloaded, so bisect on the largest that fits VRAM.
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        plan = _plan_at(spec, dry_fn, n_ctx, mid, type_k, type_v, cpu_moe)
        if plan.vram_bytes <= budget.vram_usable:
            lo = mid
        else:
            hi = mid - 1
    return lo


def best_gpu_layers(
    spec: ModelSpec, budget: Budget, dry_fn: DryRunFn, n_ctx: int, type_k: str, type_v: str
) -> MemoryPlan | None:
    """The plan with the most layers offloaded that fits ``budget``; None when nothing fits.

    A mixture-of-experts model first keeps the expert tensors of its first N layers in RAM
    (llama.cpp's ``--n-cpu-moe N``: the attention, norms and shared tensors of every layer stay on
    the GPU, where each token needs them, while only a few experts a token are read from RAM), and
    drops whole layers only when even all experts in RAM leave too little VRAM.
    """
    lo = _largest_fitting_ngl(spec, budget, dry_fn, n_ctx, type_k, type_v, 0)
    plan = _plan_at(spec, dry_fn, n_ctx, lo, type_k, type_v)
    top = spec.n_layer + 1
    if budget.vram_usable and lo < top and has_experts(spec):
        moe = _expert_offload(spec, budget, dry_fn, n_ctx, type_k, type_v)
        if (
            moe is not None
            and budget.fits(moe)
            and gpu_bytes_per_token(spec, moe) > gpu_bytes_per_token(spec, plan)
        ):
            return moe
    # It must also fit RAM; fewer GPU layers only move memory back to RAM.
    return plan if budget.fits(plan) else None


def gpu_bytes_per_token(spec: ModelSpec, plan: MemoryPlan) -> float:
    """The weight bytes each token reads on the GPU: its dense tensors, and of its expert tensors
    only the share of experts a token uses (8 of 128 on a Qwen3 30B-A3B).  What makes offload
    fast: whole layers can hold a few more bytes of VRAM than an expert split does, but most of
    them are experts a token never reads."""
    return plan.weights_gpu_bytes - plan.expert_gpu_bytes * (1.0 - spec.expert_share)


def _expert_offload(
    spec: ModelSpec, budget: Budget, dry_fn: DryRunFn, n_ctx: int, type_k: str, type_v: str
) -> MemoryPlan | None:
    """Every layer on the GPU with the experts of the fewest first layers in RAM, or (when even
    all experts in RAM do not fit) all experts in RAM and the most layers that fit."""
    n, top = spec.n_layer * max(expert_tensors_per_layer(spec), 1), spec.n_layer + 1
    usable = budget.vram_usable
    if _plan_at(spec, dry_fn, n_ctx, top, type_k, type_v, n).vram_bytes <= usable:
        lo, hi = 0, n  # VRAM shrinks with every layer whose experts move to RAM
        while lo < hi:
            mid = (lo + hi) // 2
            if _plan_at(spec, dry_fn, n_ctx, top, type_k, type_v, mid).vram_bytes <= usable:
                hi = mid
            else:
                lo = mid + 1
        return _plan_at(spec, dry_fn, n_ctx, top, type_k, type_v, lo)
    ngl = _largest_fitting_ngl(spec, budget, dry_fn, n_ctx, type_k, type_v, n)
    return _plan_at(spec, dry_fn, n_ctx, ngl, type_k, type_v, n) if ngl else None


def max_context(
    spec: ModelSpec,
    budget: Budget,
    dry_fn: DryRunFn,
    n_gpu_layers: int | None,
    type_k: str = "f16",
    type_v: str = "f16",
    limit: int | None = None,
    cpu_moe: int = 0,
) -> int:
    """Largest context (a multiple of 256, at most ``limit`` or the trained one) that fits.

    With ``n_gpu_layers`` None the offload may change with the context (the planner's choice).
    """
    top = limit or spec.n_ctx_train or 4096

    def ok(n_ctx: int) -> bool:
        if n_gpu_layers is None:
            return best_gpu_layers(spec, budget, dry_fn, n_ctx, type_k, type_v) is not None
        return budget.fits(_plan_at(spec, dry_fn, n_ctx, n_gpu_layers, type_k, type_v, cpu_moe))

    if ok(top):
        return top
    lo, hi = 0, top // CTX_STEP  # in steps of 256; 0 means not even 256 fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid * CTX_STEP):
            lo = mid
        else:
            hi = mid - 1
    return lo * CTX_STEP


def plan_offload(
    spec: ModelSpec,
    budget: Budget,
    dry_fn: DryRunFn,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
) -> OffloadPlan:
    """Verdict and plan at ``n_ctx``: the most GPU layers that fit, or CPU, or no fit."""
    total = spec.n_layer + 1
    plan = best_gpu_layers(spec, budget, dry_fn, n_ctx, type_k, type_v)
    if plan is None:
        cpu = _plan_at(spec, dry_fn, n_ctx, 0, type_k, type_v)
        best = max_context(spec, budget, dry_fn, None, type_k, type_v)
        need = cpu.ram_bytes
        reason = (
            f"needs {human_bytes(need)} of RAM at {n_ctx} tokens of context but the budget allows "
            f"{human_bytes(budget.ram_usable)}"
        )
        if best:
            reason += f"; it would fit with a context of {best} tokens"
        return OffloadPlan(Verdict.NO_FIT, cpu, best, reason)
    ngl = plan.n_gpu_layers
    if ngl >= total:
        verdict = Verdict.FULL_GPU
        where = "unified memory" if budget.unified else "VRAM"
        reason = f"all {total} layers fit in {where} ({human_bytes(plan.vram_bytes)} of {human_bytes(budget.vram_usable)} usable)"
    elif ngl > 0:
        verdict = Verdict.PARTIAL_GPU
        reason = (
            f"{ngl} of {total} layers fit in VRAM ({human_bytes(plan.vram_bytes)}); the rest runs on the "
            f"CPU from {human_bytes(plan.ram_bytes)} of RAM"
        )
    else:
        verdict = Verdict.CPU
        reason = f"runs on the CPU in {human_bytes(plan.ram_bytes)} of RAM"
        if budget.vram_usable:
            reason += " (not even one layer fits the GPU budget)"
    units = 0
    if plan.expert_cpu_bytes:
        part = ""
        if plan.cpu_moe_extra:
            e = expert_tensors_per_layer(spec)
            part = f" and {plan.cpu_moe_extra} of {e} expert tensors of layer {plan.cpu_moe_layers}"
        reason += (
            f"; experts of {plan.cpu_moe_layers} of {spec.n_layer} layers in RAM{part} "
            f"({human_bytes(plan.expert_cpu_bytes)})"
        )
        units = plan.cpu_moe_layers * expert_tensors_per_layer(spec) + plan.cpu_moe_extra
    max_ctx = max_context(spec, budget, dry_fn, ngl, type_k, type_v, cpu_moe=units)
    return OffloadPlan(verdict, plan, max(max_ctx, 0), reason)
