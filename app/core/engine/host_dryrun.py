"""Engine-child handler for :class:`DryRunRequest`: llama.cpp's own memory plan, no weights loaded.

The model is opened with ``no_alloc`` (tensors are described, never allocated or read) and mmap
off -- with mmap on, llama.cpp aborts on ``GGML_ASSERT(!ml.no_alloc)``, which is one reason this runs
in the engine child.  A context is then created with the settings a real load would use (the same
batch sizes and flash-attention choice as ``host._load``), and the log lines llama.cpp prints while
reserving its buffers are parsed: compute and output buffers per device, the KV cache size, and the
names of the weight buffers (which tell which CPU repacking buffers this build and CPU use).
The file may be a header-only sparse file: nothing past the header is read.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace

from app.core.engine.host import RequestError, State, current_rss, heap_in_use
from app.core.engine.protocol import DryRunRequest, MemorySettings
from app.core.errors import ErrorKind
from app.core.fit import MOE_EXPERTS, DryRun, flash_attn_on
from app.core.llama_log import (
    CACHE_LOG_KEYS,
    FLASH_LOG_KEYS,
    KV_TYPES,
    buffer_lines,
    flash_attn_in_force,
    kv_cache_sizes,
    memory_caches,
    swa_layers,
)

_HOST_MODEL_BUFFERS = {"CPU", "CPU_Mapped"}


def handle(state: State, req: DryRunRequest) -> DryRun:
    lc = state.llama_cpp
    if not os.path.exists(req.path):
        raise RequestError(f"no such file: {req.path}", "load")
    m = req.memory
    base = getattr(state, "dryrun_base_rss", None)
    if base is None and state.llm is None:
        # The runtime's own footprint (interpreter, llama.cpp libraries) before any model: part
        # of what a real load needs resident.  Measured once, before dry runs add their crumbs.
        base = current_rss()
        state.dryrun_base_rss = base  # type: ignore[attr-defined]
    lines: list[str] = []
    _capture(state, lines)
    try:
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = req.n_gpu_layers
        mp.no_alloc = True
        mp.load_mode = lc.LLAMA_LOAD_MODE_NONE
        overrides = cpu_moe_overrides(state, m.cpu_moe_layers, m.cpu_moe_extra)
        if overrides is not None:
            mp.tensor_buft_overrides = overrides
        heap0 = heap_in_use()
        model = lc.llama_model_load_from_file(req.path.encode(), mp)
        if not model:
            raise _load_error(lines, req.path)
        # What the model holds on the heap besides its (here unallocated) weights: the
        # vocabulary above all; a real load holds the same.  (Not the context's: its big blocks,
        # such as the graph metadata, are allocated but barely touched.)
        heap1 = heap_in_use()
        host_bytes = max(0, heap1 - heap0) if heap0 is not None and heap1 is not None else 0
        model_bytes = int(lc.llama_model_size(model))
        try:
            cp = lc.llama_context_default_params()
            # Same derivation as llama_cpp.Llama (what host._load uses), so the buffers match a load.
            n_batch = min(req.n_ctx, req.n_batch)
            cp.n_ctx = req.n_ctx
            cp.n_batch = n_batch
            cp.n_ubatch = min(n_batch, m.n_ubatch)
            arch = _model_metadata(lc, model, ("general.architecture",))
            meta = {
                **arch,
                **_model_metadata(lc, model, (f"{arch.get('general.architecture')}.pooling_type",)),
            }
            n_outputs_max = outputs_for(m.n_outputs_max, meta)
            for name, value in context_fields(lc, m, n_outputs_max).items():
                setattr(cp, name, value)
            ctx = lc.llama_init_from_model(model, cp)
            if not ctx:
                raise RequestError(
                    f"llama.cpp could not plan a context of {req.n_ctx} tokens", "request"
                )
            lc.llama_free(ctx)
        finally:
            lc.llama_model_free(model)
    finally:
        state._install_log_capture()  # back to the engine's own log capture
    return replace(
        parse_log(lines, base or 0),
        model_bytes=model_bytes,
        cpu_features=cpu_features(state),
        flash_attn=resolved_flash_attn(lines, m),
        swa_full=m.swa_full,
        n_ubatch=min(req.n_ctx, req.n_batch, m.n_ubatch),
        n_outputs_max=n_outputs_max,
        host_model_bytes=host_bytes,
    )


_FEATURES = ("avx2", "avx512", "amx_int8", "neon", "dotprod", "matmul_int8", "sve")


def cpu_features(state: State) -> tuple[str, ...]:
    """The CPU features ggml-cpu was built for and detects: they decide which weights it repacks."""
    found = getattr(state, "dryrun_cpu_features", None)
    if found is not None:
        return found
    lib_dir = os.path.join(os.path.dirname(str(state.llama_cpp.__file__)), "lib")
    found = ()
    try:
        names = [n for n in os.listdir(lib_dir) if n.startswith(("libggml-cpu", "ggml-cpu"))]
        lib = ctypes.CDLL(os.path.join(lib_dir, sorted(names)[0]))
        found = tuple(f for f in _FEATURES if getattr(lib, f"ggml_cpu_has_{f}")())
    except (OSError, IndexError, AttributeError):
        pass  # an unusual build: fit.py falls back to the x86 AVX2 baseline rules
    state.dryrun_cpu_features = found  # type: ignore[attr-defined]
    return found


def _capture(state: State, lines: list[str]) -> None:
    """Keep only the lines a plan needs: a dry run logs thousands of graph-reservation lines."""
    lc = state.llama_cpp
    partial: list[str] = []
    keep = (*CACHE_LOG_KEYS, *FLASH_LOG_KEYS, "error", "failed", "warning")

    @lc.llama_log_callback
    def _cb(level: int, text: bytes, user_data: object) -> None:
        partial.append(text.decode("utf-8", errors="replace"))
        if partial[-1].endswith("\n"):
            line = "".join(partial).rstrip("\n")
            partial.clear()
            if any(k in line for k in keep):
                lines.append(line)
                if "layer" not in line:  # per-layer lines: hundreds on a big model
                    sys.stderr.write(line + "\n")

    state._dryrun_log_cb = _cb  # type: ignore[attr-defined]  # ctypes frees unreferenced thunks
    lc.llama_log_set(_cb, None)


def parse_log(lines: list[str], base_rss: int = 0) -> DryRun:
    """Buffers from llama.cpp's log of one load (dry or real)."""
    compute: dict[str, int] = {}
    output = 0
    model_buffers: list[str] = []
    for b in buffer_lines(lines):
        if b.kind == "compute":
            compute[b.device] = compute.get(b.device, 0) + b.nbytes
        elif b.kind == "output":
            output += b.nbytes
        elif b.kind == "model" and b.device not in model_buffers:
            model_buffers.append(b.device)
    kv = sum(kv_cache_sizes(lines))
    extras = tuple(n for n in model_buffers if n not in _HOST_MODEL_BUFFERS and _host_extra(n))
    gpu = any(not (d.upper().startswith("CPU") or d.endswith("_Host")) for d in compute)
    caches = tuple(memory_caches(lines))
    return DryRun(
        compute=compute,
        output_bytes=output,
        kv_bytes=kv,
        extra_buffers=extras,
        base_rss_bytes=base_rss,
        measured_gpu=gpu,
        caches=caches,
        swa_layers=swa_layers(lines),
    )


_UNKNOWN_ARCH = re.compile(r"unknown model architecture: '([^']*)'")


def _load_error(lines: list[str], path: str) -> RequestError:
    """Why llama.cpp refused a header: an architecture this build does not know is its own kind,
    so the planner can say so before anything is downloaded."""
    for line in lines:
        if m := _UNKNOWN_ARCH.search(line):
            return RequestError(
                f"the {m.group(1)!r} architecture is not supported by this llama.cpp build "
                f"(llama-cpp-python {_llama_cpp_version()}): it cannot load "
                f"{os.path.basename(path)}",
                ErrorKind.UNSUPPORTED,
            )
    return RequestError(f"llama.cpp could not read {os.path.basename(path)}", "load")


def _llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # an unusual install: the message still names the architecture
        return "unknown version"


def context_fields(lc: object, m: MemorySettings, n_outputs_max: int) -> dict[str, object]:
    """The ``llama_context_params`` fields ``m`` decides besides the batch sizes, for a dry run and
    a load alike, so the two reserve the same buffers (an unknown KV cache type is refused)."""
    if m.type_k not in KV_TYPES or m.type_v not in KV_TYPES:
        raise RequestError(f"unknown KV cache type {m.type_k}/{m.type_v}", "request")
    return {
        "type_k": KV_TYPES[m.type_k].ggml_type,
        "type_v": KV_TYPES[m.type_v].ggml_type,
        "flash_attn_type": flash_attn_type(lc, m.flash_attn),
        "swa_full": m.swa_full,
        "n_outputs_max": n_outputs_max,
    }


def flash_attn_type(lc: object, flash_attn: bool | None) -> int:
    """llama.cpp's ``flash_attn_type`` for a setting: on, off, or (None) llama.cpp's own
    automatic choice -- on wherever the backend of each layer runs it."""
    if flash_attn is None:
        return int(lc.LLAMA_FLASH_ATTN_TYPE_AUTO)  # type: ignore[attr-defined]
    name = "ENABLED" if flash_attn else "DISABLED"
    return int(getattr(lc, f"LLAMA_FLASH_ATTN_TYPE_{name}"))


def resolved_flash_attn(lines: list[str], m: MemorySettings) -> bool:
    """Whether the context just created (its log is ``lines``) uses flash attention.  A log
    without the line (another llama.cpp) is taken as llama.cpp's fix-up rule: a quantized V
    cache needs it; otherwise off, which the plan counts the larger work buffer for."""
    found = flash_attn_in_force(lines)
    return found if found is not None else flash_attn_on(m.flash_attn, m.type_v)


_MOE_EXPERTS = MOE_EXPERTS  # one pattern for the plan (fit.is_expert_tensor) and the load


def cpu_moe_overrides(state: State, n_layers: int, extra: tuple[str, ...] = ()) -> int | None:
    r"""``tensor_buft_overrides`` keeping the expert tensors of layers ``0..n_layers-1`` in RAM.

    The same rule as llama.cpp's ``--n-cpu-moe N`` (common/arg.cpp: ``blk\.N\.ffn_(up|down|
    gate)_(ch|)exps`` to the CPU buffer type).  The array and its strings must outlive the model
    load, so they are kept on ``state``.
    """
    if n_layers <= 0 and not extra:
        return None
    cpu_buft = _cpu_buffer_type(state)
    patterns = [f"^blk\\.{il}{_MOE_EXPERTS}".encode() for il in range(n_layers)]
    patterns += [f"^blk\\.{n_layers}\\.{re.escape(name)}$".encode() for name in extra]
    arr = (_BuftOverride * (len(patterns) + 1))()
    for i, pat in enumerate(patterns):
        arr[i].pattern = pat
        arr[i].buft = cpu_buft
    arr[len(patterns)].pattern = None  # the list ends with a NULL pattern
    state._moe_overrides = (arr, patterns)  # type: ignore[attr-defined]
    return ctypes.cast(arr, ctypes.c_void_p).value


class _BuftOverride(ctypes.Structure):
    """llama.h's ``struct llama_model_tensor_buft_override`` (llama_cpp does not bind it)."""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def outputs_for(n_outputs_max: int, metadata: dict[str, object]) -> int:
    """The ``n_outputs_max`` a load asks llama.cpp for: an embedding model (one that pools)
    outputs every position of a batch, so it is never capped; llama.cpp aborts on a batch with
    more outputs than that (``GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)``)."""
    arch = metadata.get("general.architecture")
    try:
        pooling = int(str(metadata.get(f"{arch}.pooling_type", 0)))
    except ValueError:
        pooling = 0
    return 0 if pooling > 0 else n_outputs_max


def _model_metadata(lc: object, model: object, keys: tuple[str, ...]) -> dict[str, object]:
    """Values of ``keys`` from a loaded model's metadata (as llama.cpp read them)."""
    out: dict[str, object] = {}
    buf = ctypes.create_string_buffer(256)
    for key in keys:
        n = lc.llama_model_meta_val_str(model, key.encode(), buf, len(buf))  # type: ignore[attr-defined]
        if n >= 0:
            out[key] = buf.value.decode("utf-8", errors="replace")
    return out


@contextlib.contextmanager
def load_params(state: State, m: MemorySettings, context: dict[str, object]) -> Iterator[None]:
    """While a ``llama_cpp.Llama`` is created: its model params carry ``m``'s expert overrides
    and its context params ``context`` (:func:`context_fields`, as the dry run sets them)."""
    overrides = cpu_moe_overrides(state, m.cpu_moe_layers, m.cpu_moe_extra)
    model = {"tensor_buft_overrides": overrides} if overrides is not None else {}
    with (
        _params_set("llama_model_load_from_file", model),
        _params_set("llama_init_from_model", context),
    ):
        yield


@contextlib.contextmanager
def _params_set(function: str, values: Mapping[str, object]) -> Iterator[None]:
    """While a ``llama_cpp.Llama`` is created: llama.cpp's ``function(first, params)`` -- the
    model load or the context creation -- receives its params with ``values`` set.

    ``Llama`` has no argument for some fields (``tensor_buft_overrides``, ``n_outputs_max``) and
    only on or off for ``flash_attn_type``, and it fills the params after reading llama.cpp's
    defaults, so the call that receives them is wrapped, for the one load.
    """
    import llama_cpp.llama_cpp as lc  # the module llama_cpp's own classes call through

    original = getattr(lc, function)

    def call(first: object, params: object) -> object:
        for name, value in values.items():
            setattr(params, name, value)
        return original(first, params)

    setattr(lc, function, call)
    try:
        yield
    finally:
        setattr(lc, function, original)


def _cpu_buffer_type(state: State) -> ctypes.c_void_p:
    """libggml-cpu's ``ggml_backend_cpu_buffer_type()`` (llama_cpp ships the library)."""
    found = getattr(state, "_cpu_buft", None)
    if found is not None:
        return found
    lib_dir = os.path.join(os.path.dirname(str(state.llama_cpp.__file__)), "lib")
    names = sorted(n for n in os.listdir(lib_dir) if n.startswith(("libggml-cpu", "ggml-cpu")))
    if not names:
        raise RequestError("this llama.cpp build has no CPU backend library", "load")
    lib = ctypes.CDLL(os.path.join(lib_dir, names[0]))
    fn = lib.ggml_backend_cpu_buffer_type
    fn.restype = ctypes.c_void_p
    fn.argtypes = []
    buft = ctypes.c_void_p(fn())
    state._cpu_buft = buft  # type: ignore[attr-defined]
    return buft


def _host_extra(name: str) -> bool:
    # CPU extra buffer types (AMX, CPU_REPACK, KLEIDIAI, ...) versus device buffers (CUDA0, Metal).
    return not re.match(r"^(CUDA|Metal|MTL|Vulkan|ROCm|SYCL|CANN|OpenCL|RPC)", name)
