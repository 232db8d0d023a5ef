"""Read a GGUF header -- from a local file or over HTTP Range -- into a :class:`ModelSpec`.

Only the header bytes are read: key/value metadata and the tensor table.  From the table we know the
exact bytes of every tensor (ggml block size x elements), grouped into input (token embeddings),
per-layer (``blk.N.*``) and output tensors.  The parser is defensive: a file that is not GGUF, a
corrupted header (absurd counts or lengths) or a truncated file raises :class:`GGUFError` with a
message a person can act on, never a hang or a MemoryError.
"""

from __future__ import annotations

import re
import struct
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

GGUF_MAGIC = b"GGUF"
_MAX_COUNT = 1 << 24  # tensors / kv pairs: real models have thousands, not millions
_MAX_ARRAY = 1 << 26  # vocabularies reach ~260k entries; 64M is far past anything real
_MAX_STRING = 1 << 26  # chat templates are KBs; 64 MB means a corrupted length
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


class GGUFError(Exception):
    """The bytes are not a usable GGUF model; the message says why in plain words."""


class _NeedMore(Exception):
    pass


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: its name, shape, ggml type and exact size in bytes."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"

    @property
    def layer(self) -> int | None:
        m = _LAYER_RE.match(self.name)
        return int(m.group(1)) if m else None


@dataclass
class ModelSpec:
    """What the header says about a model: shape, context, vocabulary and every tensor's bytes."""

    source: str
    architecture: str
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int | list[int]
    head_dim_k: int
    head_dim_v: int
    n_swa: int
    n_ctx_train: int
    n_vocab: int
    file_type: int | None
    tensors: list[TensorInfo]
    metadata: dict[str, Any] = field(repr=False)
    data_offset: int = 0
    header_bytes_read: int = 0
    file_sizes: list[int] = field(default_factory=list)
    # The header itself (kept by read_url): enough to rebuild a header-only file for a dry run.
    raw_header: bytes = field(default=b"", repr=False, compare=False)

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def quant(self) -> str:
        """The quant label from ``general.file_type`` (Q4_K_M, Q8_0, F16, ...)."""
        return quant_label(self.file_type) or "unknown"

    @property
    def weights_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def bits_per_weight(self) -> float:
        n = self.n_params
        return 8.0 * self.weights_bytes / n if n else 0.0

    def layer_bytes(self) -> list[int]:
        """Bytes of each repeating layer ``blk.N``, index N."""
        out = [0] * self.n_layer
        for t in self.tensors:
            if t.layer is not None and t.layer < self.n_layer:
                out[t.layer] += t.nbytes
        return out

    @property
    def input_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.name.startswith("token_embd"))

    @property
    def output_bytes(self) -> int:
        """Output head and final norm: on the GPU only when every layer is offloaded."""
        return sum(
            t.nbytes
            for t in self.tensors
            if t.layer is None and not t.name.startswith("token_embd")
        )

    def n_head_kv_of(self, layer: int) -> int:
        if isinstance(self.n_head_kv, list):
            return self.n_head_kv[layer] if layer < len(self.n_head_kv) else self.n_head_kv[-1]
        return self.n_head_kv


def quant_label(file_type: int | None) -> str | None:
    if file_type is None:
        return None
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return None
    return name.replace("MOSTLY_", "").replace("ALL_", "")


def tensor_nbytes(ggml_type: int, shape: tuple[int, ...]) -> int:
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GGUFError(
            f"unknown tensor type {ggml_type} (corrupted header or newer format)"
        ) from None
    n = 1
    for d in shape:
        n *= d
    if shape and shape[0] % block:
        raise GGUFError(f"tensor row of {shape[0]} is not a multiple of its block size {block}")
    return n // block * size


class _Cursor:
    """Sequential reader over a growing byte buffer; raises _NeedMore at its end."""

    def __init__(self, data: bytes, limit: int | None) -> None:
        self.data = data
        self.pos = 0
        self.limit = limit  # total size of the source when known

    def take(self, n: int) -> bytes:
        if n < 0:
            raise GGUFError("corrupted header (negative length)")
        end = self.pos + n
        if end > len(self.data):
            if self.limit is not None and end > self.limit:
                raise GGUFError(
                    f"the file ends inside its header (needs {end} bytes, has {self.limit}): "
                    "it is truncated or corrupted"
                )
            raise _NeedMore
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > _MAX_STRING:
            raise GGUFError(f"corrupted header: a string claims {n} bytes")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            itype = self.scalar("<I")
            n = self.scalar("<Q")
            if n > _MAX_ARRAY:
                raise GGUFError(f"corrupted header: an array claims {n} items")
            if itype in _SCALARS:
                fmt = _SCALARS[itype]
                size = struct.calcsize(fmt)
                raw = self.take(size * n)
                return list(struct.unpack(f"<{n}{fmt[1]}", raw))
            return [self.value(itype, depth + 1) for _ in range(n)]
        raise GGUFError(f"corrupted header: unknown value type {vtype}")


def _parse(data: bytes, limit: int | None, source: str) -> ModelSpec:
    cur = _Cursor(data, limit)
    magic = cur.take(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{source} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    version = cur.scalar("<I")
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version} (corrupted header?)")
    n_tensors = cur.scalar("<Q")
    n_kv = cur.scalar("<Q")
    if n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise GGUFError(
            f"corrupted header: it claims {n_tensors} tensors and {n_kv} metadata entries"
        )
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = cur.value(cur.scalar("<I"))
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.scalar("<I")
        if n_dims > 8:
            raise GGUFError(f"corrupted header: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
        gtype = cur.scalar("<I")
        offset = cur.scalar("<Q")
        tensors.append(TensorInfo(name, shape, gtype, offset, tensor_nbytes(gtype, shape)))
    align = int(meta.get("general.alignment", 32) or 32)
    data_offset = (cur.pos + align - 1) // align * align
    return _spec_from(meta, tensors, source, data_offset, cur.pos)


def _spec_from(
    meta: dict[str, Any], tensors: list[TensorInfo], source: str, data_offset: int, read: int
) -> ModelSpec:
    arch = str(meta.get("general.architecture", "unknown"))

    def key(name: str, default: Any = 0) -> Any:
        return meta.get(f"{arch}.{name}", default)

    n_embd = int(key("embedding_length", 0))
    n_head = int(_first(key("attention.head_count", 0)))
    n_head_kv_raw = key("attention.head_count_kv", n_head)
    n_head_kv = (
        [int(x) for x in n_head_kv_raw] if isinstance(n_head_kv_raw, list) else int(n_head_kv_raw)
    )
    head_dim = n_embd // n_head if n_head else 0
    vocab = meta.get("tokenizer.ggml.tokens")
    n_vocab = int(key("vocab_size", len(vocab) if isinstance(vocab, list) else 0))
    ftype = meta.get("general.file_type")
    return ModelSpec(
        source=source,
        architecture=arch,
        name=str(meta.get("general.name", "")),
        n_layer=int(key("block_count", 0)),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=int(key("attention.key_length", head_dim)),
        head_dim_v=int(key("attention.value_length", head_dim)),
        n_swa=int(key("attention.sliding_window", 0) or 0),
        n_ctx_train=int(key("context_length", 0)),
        n_vocab=n_vocab,
        file_type=int(ftype) if ftype is not None else None,
        tensors=tensors,
        metadata=meta,
        data_offset=data_offset,
        header_bytes_read=read,
    )


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _read_progressively(fetch: Callable[[int, int], bytes], size: int | None, source: str):
    """Parse with as few bytes as possible: start small, double until the header fits."""
    data = b""
    want = 256 * 1024
    while True:
        if size is not None:
            want = min(want, size)
        if want > len(data):
            data += fetch(len(data), want)
        try:
            return _parse(data, size if (size is None or len(data) >= size) else None, source), data
        except _NeedMore:
            if size is not None and len(data) >= size:
                raise GGUFError(
                    f"{source} ends inside its header: truncated or corrupted"
                ) from None
            if len(data) < want:  # source gave fewer bytes than asked: it has no more
                raise GGUFError(
                    f"{source} ends inside its header: truncated or corrupted"
                ) from None
            want *= 2


def read_local(path: str | Path, *, check_size: bool = True) -> ModelSpec:
    """Read a local file's header; with ``check_size``, refuse a file shorter than its tensors."""
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise GGUFError(f"cannot open {path}: {exc.strerror or exc}") from exc
    with handle:

        def fetch(start: int, end: int) -> bytes:
            handle.seek(start)
            return handle.read(end - start)

        spec, _ = _read_progressively(fetch, size, path.name)
    spec.file_sizes = [size]
    if check_size:
        _check_complete(spec, size, path.name)
    return spec


def _check_complete(spec: ModelSpec, size: int, label: str) -> None:
    needed = spec.data_offset + max((t.offset + t.nbytes for t in spec.tensors), default=0)
    if size < needed:
        raise GGUFError(
            f"{label} is truncated: it is {size:,} bytes but its tensors need {needed:,} bytes "
            "(an incomplete download?)"
        )


def read_url(url: str, *, headers: dict[str, str] | None = None, timeout: float = 30) -> ModelSpec:
    """Read a remote header with HTTP Range requests -- only the header bytes travel."""
    total = 0

    def fetch(start: int, end: int) -> bytes:
        nonlocal total
        req = urllib.request.Request(
            url, headers={**(headers or {}), "Range": f"bytes={start}-{end - 1}"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # TLS verified by default
            if resp.status == 200 and start > 0:
                raise GGUFError(f"{url}: the server ignores Range requests")
            body = resp.read(end - start)
        total += len(body)
        return body

    try:
        spec, data = _read_progressively(fetch, None, url.rsplit("/", 1)[-1])
    except OSError as exc:
        raise GGUFError(f"cannot read the header of {url}: {exc}") from exc
    spec.raw_header = data[: spec.data_offset]
    spec.header_bytes_read = total
    return spec


def shard_urls(url: str) -> list[str]:
    """All shard URLs of a split GGUF given any one of them (or just ``[url]``)."""
    m = _SHARD_RE.search(url)
    if not m:
        return [url]
    count = int(m.group(2))
    return [url[: m.start()] + f"-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def merge_shards(specs: list[ModelSpec]) -> ModelSpec:
    """One spec for a split model: metadata of the first shard, tensors of all of them."""
    first = specs[0]
    tensors = [t for s in specs for t in s.tensors]
    merged = _spec_from(first.metadata, tensors, first.source, first.data_offset, 0)
    merged.header_bytes_read = sum(s.header_bytes_read for s in specs)
    merged.file_sizes = [x for s in specs for x in s.file_sizes]
    return merged


def read_spec(source: str | Path, *, headers: dict[str, str] | None = None) -> ModelSpec:
    """A ModelSpec from a local path or an http(s) URL; split models are read shard by shard."""
    text = str(source)
    if text.startswith(("http://", "https://")):
        specs = [read_url(u, headers=headers) for u in shard_urls(text)]
    else:
        specs = [read_local(p) for p in shard_urls(text)]
    return specs[0] if len(specs) == 1 else merge_shards(specs)
