"""The per-device split planner: which layers go to this GPU, this RAM and each worker, and why.

llama.cpp's placement (``llama_model::load_tensors``) is what this mirrors: with ``n_gpu_layers``
= G of the ``n_layer + 1`` layers (the output layer counts as the last), the first
``n_layer + 1 - G`` layers and the input embeddings stay on the CPU, and the last G are divided
among the offload devices in their order -- RPC workers first (in registration order), then local
GPUs -- by the cumulative shares of ``tensor_split``.  Giving each device its layer count as its
share reproduces the counts exactly.

The planner fills the fastest places first: the local GPU from the end (it gets the output layer),
then this computer's RAM from the start, and only the layers left over go to the workers, each up
to its budget (what it reports free, which ``quantdesk worker --mem`` limits, less a margin).
Per device it counts the weights of its layers (exact, from the GGUF header), their KV cache (from
the dry run's cache layout: app.core.fit.kv_from_dry_run) and a compute buffer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from app.core.fit import DryRun, kv_from_dry_run
from app.core.gguf_header import ModelSpec
from app.core.units import human_bytes

MIB = 1024 * 1024
WORKER_MARGIN = 64 * MIB  # the worker process itself and allocator slack
# A worker's compute buffer, relative to the dry run's CPU one: llama.cpp's scheduler reserves a
# graph on each offload device (measured on the generated models: 1.0-1.8x the CPU figure).
WORKER_COMPUTE_FACTOR = 2.0


@dataclass(frozen=True)
class SplitDevice:
    """A place layers can go: ``kind`` is "gpu", "ram" (this computer) or "worker"."""

    name: str
    kind: str
    budget_bytes: int
    address: str = ""


@dataclass(frozen=True)
class DeviceShare:
    """What one device holds under a split, and its budget."""

    name: str
    kind: str
    address: str
    first_layer: int
    n_layers: int  # counting the output layer (index n_layer) where it lands here
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    budget_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"total_bytes": self.total_bytes}


@dataclass(frozen=True)
class SplitPlan:
    """Layers per device in llama.cpp's terms (``n_gpu_layers``, ``tensor_split``), and why."""

    fits: bool
    n_gpu_layers: int
    tensor_split: tuple[float, ...]
    rpc_servers: tuple[str, ...]
    shares: tuple[DeviceShare, ...]
    reason: str
    n_computers: int = 1
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shares"] = [s.to_json() for s in self.shares]
        return d


def layer_weights(spec: ModelSpec) -> tuple[list[int], int, int]:
    """Bytes of each repeating layer, of the output layer (norm + head) and of the embeddings."""
    per = [0] * spec.n_layer
    out = embd = 0
    for t in spec.tensors:
        layer = t.layer
        if layer is not None and 0 <= layer < spec.n_layer:
            per[layer] += t.nbytes
        elif t.name.startswith("token_embd"):
            embd += t.nbytes
        else:
            out += t.nbytes
    if not any(t.name.startswith("output.weight") for t in spec.tensors):
        out += embd  # tied embeddings: the offloaded head is a copy of token_embd
    return per, out, embd


def plan_split(
    spec: ModelSpec,
    dry: DryRun,
    n_ctx: int,
    devices: list[SplitDevice],
    type_k: str = "f16",
    type_v: str = "f16",
) -> SplitPlan:
    """Assign layers to ``devices`` (any of: one "gpu", one "ram", then "worker"s in order)."""
    per, out_w, embd_w = layer_weights(spec)
    kv = kv_from_dry_run(spec, dry, n_ctx, type_k, type_v, dry.n_ubatch or 512)
    kv_l = [a + b for a, b in zip(kv.per_layer, kv.state_per_layer, strict=True)] + [0]
    w_l = per + [out_w]  # unit n_layer is the output layer
    units = spec.n_layer + 1
    gpu = next((d for d in devices if d.kind == "gpu"), None)
    ram = next((d for d in devices if d.kind == "ram"), None)
    workers = [d for d in devices if d.kind == "worker"]
    cpu_fixed = embd_w + dry.cpu_compute_bytes + dry.output_bytes + dry.base_rss_bytes
    off_compute = int(dry.cpu_compute_bytes * WORKER_COMPUTE_FACTOR)

    def cost(a: int, b: int) -> int:
        return sum(w_l[a:b]) + sum(kv_l[a:b])

    # The local GPU from the end: as many layers as its budget holds.
    g = 0
    if gpu is not None and gpu.budget_bytes > off_compute:
        while g < units and cost(units - g - 1, units) + off_compute <= gpu.budget_bytes:
            g += 1
    # This computer's RAM from the start.
    c = 0
    ram_budget = ram.budget_bytes if ram else 0
    while c < units - g and cpu_fixed + cost(0, c + 1) <= ram_budget:
        c += 1
    # The rest, in order, to the workers.
    counts: list[int] = []
    start = c
    for w in workers:
        n = 0
        while (
            start + n < units - g
            and cost(start, start + n + 1) + off_compute + WORKER_MARGIN <= w.budget_bytes
        ):
            n += 1
        counts.append(n)
        start += n
    left = units - g - start
    if cpu_fixed > ram_budget:
        # The input embeddings, the logits and the runtime stay here whatever the split.
        reason = (
            f"does not fit: this computer must keep {human_bytes(cpu_fixed)} (embeddings, compute "
            f"and output buffers, runtime) but its RAM budget is {human_bytes(ram_budget)}"
        )
        return SplitPlan(False, 0, (), (), (), reason)
    shares: list[DeviceShare] = []
    local_name = ram.name if ram else "this computer's RAM"
    shares.append(
        DeviceShare(
            local_name,
            "ram",
            "",
            0,
            c,
            embd_w + sum(w_l[:c]),
            sum(kv_l[:c]),
            dry.cpu_compute_bytes + dry.output_bytes + dry.base_rss_bytes,
            ram_budget,
        )
    )
    pos = c
    for w, n in zip(workers, counts, strict=True):
        shares.append(
            DeviceShare(
                w.name,
                "worker",
                w.address,
                pos,
                n,
                sum(w_l[pos : pos + n]),
                sum(kv_l[pos : pos + n]),
                off_compute if n else 0,
                w.budget_bytes,
            )
        )
        pos += n
    if gpu is not None:
        shares.append(
            DeviceShare(
                gpu.name,
                "gpu",
                "",
                units - g,
                g,
                sum(w_l[units - g :]),
                sum(kv_l[units - g :]),
                off_compute if g else 0,
                gpu.budget_bytes,
            )
        )
    used = [(w, n) for w, n in zip(workers, counts, strict=True) if n]
    split: list[float] = [float(n) for _, n in used]
    if gpu is not None and used:
        split.append(float(g))
    n_gpu = units - c if left == 0 else units - c - left
    where = ", ".join(f"{s.n_layers} on {s.name}" for s in shares if s.n_layers)
    if left:
        room = sum(max(0, w.budget_bytes - off_compute - WORKER_MARGIN) for w in workers)
        reason = (
            f"does not fit: {left} of {units} layers have no place "
            f"({human_bytes(cost(units - g - left, units - g))} more than this computer and "
            f"{len(workers)} worker(s) can hold; the workers have {human_bytes(room)} for layers)"
        )
        return SplitPlan(
            False, n_gpu, tuple(split), tuple(w.address for w, _ in used), tuple(shares), reason
        )
    n_comp = 1 + len(used)
    reason = f"{units} layers: {where}"
    if used:
        reason = f"split over {n_comp} computers: " + reason
    return SplitPlan(
        True,
        units - c,
        tuple(split),
        tuple(w.address for w, _ in used),
        tuple(shares),
        reason,
        n_comp,
    )
