"""Read and validate a GGUF header -- from a local file or over HTTP Range -- into a :class:`ModelSpec`.

Only the header bytes are read: key/value metadata and the tensor table.  From the table we know the
exact bytes of every tensor (ggml block size x elements), grouped into input (token embeddings),
per-layer (``blk.N.*``) and output tensors.

A GGUF file comes from a stranger, so the header is validated with llama.cpp's own rules before
anything trusts it: the container rules of ``ggml/src/gguf.cpp`` (version, no empty or duplicate
keys, known value types, ``general.alignment`` a u32 power of two, tensor names under 64 bytes and
unique, at most 4 dimensions that do not overflow int64, known ggml types whose row is a whole
number of blocks, offsets contiguous and aligned, counts that fit the bytes present) and the model
loader's (the types of the keys it reads, 1..512 layers, per-layer arrays one per layer, at most
1024 experts, a vocabulary without duplicate tokens, and for the llama architecture the tensor set
and shapes it creates).  Every failure is :class:`GGUFError` with a message a person can act on;
nothing raises ``ValueError``/``OverflowError``/``ZeroDivisionError`` on hostile input.

Reads are bounded: the header may take at most :data:`MAX_HEADER_BYTES` (real models need a few MB,
a 262k-token vocabulary about 6 MB), one string :data:`MAX_STRING_BYTES`, one array
:data:`MAX_ARRAY_ITEMS` items; the parser reads the file once, front to back, asking its source for
more bytes in doubling chunks instead of re-parsing from byte 0.  Remote reads go through
huggingface_hub's HTTP session (TLS verified), with its error types mapped to ours.
"""

from __future__ import annotations

import array
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf.constants import GGMLQuantizationType, LlamaFileType

from app.core.errors import ErrorKind, QuantDeskError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3  # the newest version the vendored llama.cpp reads
DEFAULT_ALIGNMENT = 32
MAX_HEADER_BYTES = 64 << 20  # metadata + tensor table; real models: a few MB (~6 MB at 262k tokens)
MAX_STRING_BYTES = 32 << 20  # one string: chat templates are KBs, embedded tokenizer JSON ~10 MB
MAX_ARRAY_ITEMS = 1 << 24  # one array: vocabularies and merge lists reach ~10^6 entries
_FIRST_READ = 256 * 1024
_GGUF_MAX_ELEMENTS = 1 << 30  # gguf.cpp's own limit on one array (and one string)
_MAX_NAME = 64  # GGML_MAX_NAME: a tensor name must be shorter
_MAX_DIMS = 4  # GGML_MAX_DIMS
_TENSOR_ALIGNMENT = 32  # ggml-backend's TENSOR_ALIGNMENT for mapped tensor data
_MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
_MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
_INT64_MAX = (1 << 63) - 1
_SIZE_MAX = (1 << 64) - 1
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<b",  # bool: one byte, any non-zero value is true (as gguf.cpp reads it)
    10: "<Q",
    11: "<q",
    12: "<d",
}
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STRING, _ARRAY, _U64, _I64, _F64 = range(13)
_TYPE_NAMES = {
    _U8: "u8",
    _I8: "i8",
    _U16: "u16",
    _I16: "i16",
    _U32: "u32",
    _I32: "i32",
    _F32: "f32",
    _BOOL: "bool",
    _STRING: "string",
    _ARRAY: "array",
    _U64: "u64",
    _I64: "i64",
    _F64: "f64",
}
_ARRAY_CODES = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "b", 10: "Q", 11: "q"}
_ARRAY_CODES[12] = "d"
_LIST_LIMIT = 1 << 16  # longer numeric arrays stay packed (array.array): 1-8 bytes per item
# ggml type id -> (block size, bytes per block), as in the vendored ggml (ggml.c type_traits).
# Ids 4, 5 and 31-33, 36-38 were removed from ggml: llama.cpp refuses them, and so do we.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
    40: (64, 36),  # NVFP4
    41: (128, 18),  # Q1_0
    42: (64, 18),  # Q2_0
}
_GGML_TYPE_COUNT = 43
_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

# Keys llama.cpp reads with a fixed type (llama-model-loader's get_key is strict: a u32 key stored
# as i32 or u64 is refused).  "{arch}" is the architecture; an entry with "array" also takes
# per-layer arrays (get_key_or_arr).  Keys not listed may hold any type.
_GENERAL_TYPES: dict[str, tuple[int, ...]] = {
    "general.architecture": (_STRING,),
    "general.name": (_STRING,),
    "general.alignment": (_U32,),
    "general.file_type": (_U32,),
    "tokenizer.ggml.model": (_STRING,),
    "tokenizer.ggml.pre": (_STRING,),
    "tokenizer.chat_template": (_STRING,),
    "tokenizer.ggml.add_bos_token": (_BOOL,),
    "tokenizer.ggml.add_eos_token": (_BOOL,),
    "split.no": (_U16,),
    "split.count": (_U16,),
    "split.tensors.count": (_I32,),
}
for _tok in ("bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask"):
    _GENERAL_TYPES[f"tokenizer.ggml.{_tok}_token_id"] = (_U32,)
_ARCH_U32 = (
    "context_length",
    "embedding_length",
    "block_count",
    "expert_count",
    "vocab_size",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "rope.dimension_count",
    "rope.scaling.original_context_length",
)
_ARCH_PER_LAYER = (
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "expert_used_count",
)
_ARCH_F32 = (
    "rope.freq_base",
    "rope.scaling.factor",
    "attention.layer_norm_epsilon",
    "attention.layer_norm_rms_epsilon",
)
_ARCH_REQUIRED = ("context_length", "embedding_length", "block_count")
# Array element types llama.cpp accepts for a u32 per-layer array (get_arr into uint32_t).
_PER_LAYER_ITEMS = (_U32, _I32, _BOOL)


class GGUFError(QuantDeskError):
    """The bytes are not a usable GGUF model; the message says why in plain words."""

    default_kind = ErrorKind.INVALID_FILE


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
    # Head sizes of the sliding-window layers (``attention.key_length_swa``, gemma4: 256 where the
    # global layers have 512); 0 = the same as the global layers'.
    head_dim_k_swa: int = 0
    head_dim_v_swa: int = 0

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def quant(self) -> str:
        """The quant label from ``general.file_type`` (Q4_K_M, Q8_0, F16, ...)."""
        return quant_label(self.file_type) or "unknown"

    @property
    def expert_share(self) -> float:
        """The share of a MoE layer's experts one token uses (8 of 128 on a Qwen3 30B-A3B); 1.0
        for a dense model."""
        n_expert, used = expert_counts(self.metadata)
        return used / n_expert if 0 < used <= n_expert else 1.0

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
    """Bytes of a tensor of ``ggml_type`` and ``shape`` (ne0 first), as ggml_nbytes computes them."""
    blocks = GGML_BLOCKS.get(ggml_type)
    if blocks is None:
        raise GGUFError(
            f"unknown tensor type {ggml_type} (a corrupted header, or a format newer than this "
            "llama.cpp build)"
        )
    block, size = blocks
    if shape and shape[0] % block:
        raise GGUFError(
            f"a tensor row of {shape[0]} elements is not a multiple of its block size {block}"
        )
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def _pad(n: int, align: int) -> int:
    return (n + align - 1) // align * align


class _Reader:
    """One pass over the header: asks ``fetch`` for more bytes (doubling) only when it needs them.

    ``size`` is the whole source's size when known (a local file, or a Content-Range answer): a
    count or length that needs more bytes than the file has is then refused before anything is
    allocated for it, as gguf.cpp refuses it.
    """

    def __init__(
        self,
        fetch: Callable[[int, int], bytes],
        size: int | None,
        source: str,
        max_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.fetch = fetch
        self.size = size
        self.source = source
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.pos = 0
        self.exhausted = False  # the source gave fewer bytes than asked: it has no more

    def remaining(self) -> int | None:
        return None if self.size is None else self.size - self.pos

    def _truncated(self) -> GGUFError:
        return GGUFError(
            f"{self.source} ends inside its header (at byte {len(self.buf):,}): it is truncated "
            "or corrupted"
        )

    def ensure(self, end: int) -> None:
        if end <= len(self.buf):
            return
        if self.size is not None and end > self.size:
            raise self._truncated()
        if end > self.max_bytes:
            raise GGUFError(
                f"{self.source} has a header larger than {self.max_bytes >> 20} MiB (real models "
                "need a few MB): it is corrupted or hostile, so it was not read",
                ErrorKind.LIMIT,
            )
        while len(self.buf) < end:
            if self.exhausted:
                raise self._truncated()
            want = max(end, 2 * len(self.buf), _FIRST_READ)
            want = min(want, self.max_bytes)
            if self.size is not None:
                want = min(want, self.size)
            start = len(self.buf)
            got = self.fetch(start, want)
            if len(got) > want - start:
                got = got[: want - start]
            self.buf += got
            if len(got) < want - start:
                self.exhausted = True
                if self.size is None:
                    self.size = len(self.buf)

    def take(self, n: int) -> bytes:
        self.ensure(self.pos + n)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def scalar(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self.ensure(self.pos + n)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def raw_string(self, what: str) -> bytes:
        n = self.scalar("<Q")
        if n > _GGUF_MAX_ELEMENTS:
            raise GGUFError(f"corrupted header: {what} claims {n:,} bytes")
        if n > MAX_STRING_BYTES:
            raise GGUFError(
                f"{what} claims {n:,} bytes, more than this app reads in one string "
                f"({MAX_STRING_BYTES >> 20} MiB): the file is corrupted or hostile",
                ErrorKind.LIMIT,
            )
        left = self.remaining()
        if left is not None and n > left:
            raise GGUFError(
                f"{self.source} ends inside its header ({what} claims {n:,} bytes, only "
                f"{left:,} are left): it is truncated or corrupted"
            )
        return self.take(n)

    def array(self, key: str) -> Any:
        itype = self.scalar("<i")
        n = self.scalar("<Q")
        if itype not in _TYPE_NAMES or itype == _ARRAY:
            raise GGUFError(f"corrupted header: key {key!r} is an array of unknown type {itype}")
        if n > _GGUF_MAX_ELEMENTS:
            raise GGUFError(f"corrupted header: the array {key!r} claims {n:,} items")
        if n > MAX_ARRAY_ITEMS:
            raise GGUFError(
                f"the array {key!r} claims {n:,} items, more than this app reads "
                f"({MAX_ARRAY_ITEMS:,}): the file is corrupted or hostile",
                ErrorKind.LIMIT,
            )
        item = 8 if itype == _STRING else struct.calcsize(_SCALARS[itype])
        left = self.remaining()
        if left is not None and n * item > left:
            raise GGUFError(
                f"{self.source} ends inside its header (the array {key!r} claims {n:,} items, "
                f"more than the {left:,} bytes left hold): it is truncated or corrupted"
            )
        if itype == _STRING:
            return _StrArray(self.raw_string(f"an item of {key!r}") for _ in range(n))
        fmt = _SCALARS[itype]
        self.ensure(self.pos + n * item)
        if n > _LIST_LIMIT:  # packed: a hostile 60 MB array must not become 60M Python ints
            packed = array.array(_ARRAY_CODES[itype])
            packed.frombytes(self.buf[self.pos : self.pos + n * item])
            self.pos += n * item
            return _TypedArray(itype, packed)
        values = list(struct.unpack_from(f"<{n}{fmt[1]}", self.buf, self.pos))
        self.pos += n * item
        if itype == _BOOL:
            values = [v != 0 for v in values]
        return _TypedArray(itype, values)


class _StrArray(list[bytes]):
    """An array of strings as read: the raw bytes of each item (decoded on demand)."""

    itype = _STRING


@dataclass
class _TypedArray:
    itype: int
    values: Any  # list or array.array


@dataclass
class _Header:
    """What the container holds, before any model rule is applied."""

    meta: dict[str, Any]
    types: dict[str, tuple[int, int | None]]  # key -> (value type, array item type)
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    end: int  # bytes of the header as read


def _parse_header(reader: _Reader) -> _Header:
    """The container rules of gguf.cpp (gguf_init_from_reader), in the same order."""
    source = reader.source
    magic = reader.take(4)
    if magic != GGUF_MAGIC:
        raise GGUFError(f"{source} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    version = reader.scalar("<I")
    if version == 0 or version & 0xFFFF == 0:
        raise GGUFError(
            f"{source}: GGUF version {version:#x} is invalid (corrupted, or big-endian)"
        )
    if version == 1:
        raise GGUFError(
            f"{source} is GGUF version 1, which llama.cpp no longer reads: convert it again"
        )
    if version > GGUF_VERSION:
        raise GGUFError(
            f"{source} is GGUF version {version}; this llama.cpp reads up to {GGUF_VERSION}"
        )
    n_tensors = reader.scalar("<q")
    n_kv = reader.scalar("<q")
    if n_tensors < 0 or n_kv < 0:
        raise GGUFError(f"corrupted header: it claims {n_tensors} tensors and {n_kv} entries")
    left = reader.remaining()
    # Each entry needs at least a key length, a type and a value; each tensor 24 bytes or more.
    if left is not None and n_kv * 13 + n_tensors * 24 > left:
        raise GGUFError(
            f"corrupted header: it claims {n_tensors:,} tensors and {n_kv:,} metadata entries, "
            f"which do not fit in the {left:,} bytes of {source}"
        )
    meta: dict[str, Any] = {}
    types: dict[str, tuple[int, int | None]] = {}
    seen: set[bytes] = set()
    for i in range(n_kv):
        raw = reader.raw_string(f"key {i}")
        if not raw:
            raise GGUFError(f"corrupted header: metadata key {i} is empty")
        if raw in seen:
            raise GGUFError(f"corrupted header: the key {_text(raw)!r} appears twice")
        seen.add(raw)
        key = _text(raw)
        vtype = reader.scalar("<i")
        if vtype == _ARRAY:
            value = reader.array(key)
            types[key] = (_ARRAY, value.itype)
        elif vtype == _STRING:
            types[key] = (_STRING, None)
            value = reader.raw_string(f"the value of {key!r}")
        elif vtype in _SCALARS:
            types[key] = (vtype, None)
            value = reader.scalar(_SCALARS[vtype])
            if vtype == _BOOL:
                value = value != 0
        else:
            raise GGUFError(f"corrupted header: key {key!r} has an unknown value type {vtype}")
        meta[key] = value
    if "general.alignment" in types and types["general.alignment"] != (_U32, None):
        raise GGUFError(
            f"general.alignment must be a u32 but is {_type_name(types['general.alignment'])}: "
            "llama.cpp refuses this file"
        )
    align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if align == 0 or align & (align - 1):
        raise GGUFError(f"general.alignment is {align}, not a power of two: llama.cpp refuses it")
    tensors: list[TensorInfo] = []
    names: set[bytes] = set()
    for i in range(n_tensors):
        raw = reader.raw_string(f"the name of tensor {i}")
        name = _text(raw)
        if len(raw) >= _MAX_NAME:
            raise GGUFError(
                f"corrupted header: tensor name {name[:80]!r} is {_MAX_NAME} bytes or longer"
            )
        if raw in names:
            raise GGUFError(f"corrupted header: the tensor {name!r} appears twice")
        names.add(raw)
        n_dims = reader.scalar("<I")
        if n_dims > _MAX_DIMS:
            raise GGUFError(
                f"corrupted header: tensor {name!r} has {n_dims} dimensions (at most 4)"
            )
        shape = tuple(reader.scalar("<q") for _ in range(n_dims))
        if any(d < 0 for d in shape):
            raise GGUFError(f"corrupted header: tensor {name!r} has a negative dimension {shape}")
        n = 1
        for d in shape:
            n *= d
            if n > _INT64_MAX:
                raise GGUFError(
                    f"corrupted header: tensor {name!r} has an impossible shape {shape}"
                )
        gtype = reader.scalar("<i")
        if gtype < 0 or gtype >= _GGML_TYPE_COUNT or gtype not in GGML_BLOCKS:
            raise GGUFError(
                f"tensor {name!r} has unknown tensor type {gtype} (a corrupted header, or a "
                "format newer than this llama.cpp build)"
            )
        try:
            nbytes = tensor_nbytes(gtype, shape)
        except GGUFError as exc:
            raise GGUFError(f"tensor {name!r}: {exc}") from None
        offset = reader.scalar("<Q")
        tensors.append(TensorInfo(name, shape, gtype, offset, nbytes))
    end = reader.pos
    data_offset = _pad(end, align)
    if tensors and reader.size is not None and data_offset > reader.size:
        raise GGUFError(f"{source} ends before its tensor data begins: it is truncated")
    expected = 0
    for t in tensors:
        if (data_offset + t.offset) % _TENSOR_ALIGNMENT:
            # ggml asserts a mapped tensor's address is 32-byte aligned: llama.cpp aborts.
            raise GGUFError(
                f"tensor {t.name!r} data starts at file offset {data_offset + t.offset:,}, not a "
                f"multiple of {_TENSOR_ALIGNMENT} (general.alignment {align}): llama.cpp aborts on it"
            )
        if t.offset != expected:
            raise GGUFError(
                f"corrupted header: tensor {t.name!r} starts at offset {t.offset:,}, where "
                f"llama.cpp expects {expected:,} (tensors must follow each other, aligned to "
                f"{align} bytes)"
            )
        expected += _pad(t.nbytes, align)
        if expected > _SIZE_MAX:
            raise GGUFError(f"corrupted header: the tensor data would exceed {_SIZE_MAX:,} bytes")
    return _Header(meta, types, tensors, align, data_offset, end)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _type_name(t: tuple[int, int | None]) -> str:
    if t[0] == _ARRAY:
        return f"an array of {_TYPE_NAMES.get(t[1] or 0, '?')}"
    return f"a {_TYPE_NAMES.get(t[0], '?')}"


def _python_value(value: Any) -> Any:
    """Metadata as callers use it: str for strings, lists (or packed arrays) for arrays."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, _StrArray):
        return [_text(v) for v in value]
    if isinstance(value, _TypedArray):
        return value.values
    return value


def _check_key_types(h: _Header, source: str) -> None:
    """The types llama.cpp's model loader insists on for the keys it reads."""
    arch_t = h.types.get("general.architecture")
    arch = _text(h.meta["general.architecture"]) if arch_t == (_STRING, None) else ""
    for key, t in h.types.items():
        want: tuple[int, ...] | None = _GENERAL_TYPES.get(key)
        per_layer = False
        if want is None and arch and key.startswith(arch + "."):
            rest = key[len(arch) + 1 :]
            if rest in _ARCH_U32:
                want = (_U32,)
            elif rest in _ARCH_F32:
                want = (_F32,)
            elif rest in _ARCH_PER_LAYER:
                want, per_layer = (_U32,), True
        if want is None:
            continue
        if t[0] in want or (per_layer and t[0] == _ARRAY and t[1] in _PER_LAYER_ITEMS):
            continue
        what = (
            "a u32 or an array of u32 (one per layer)" if per_layer else f"a {_TYPE_NAMES[want[0]]}"
        )
        raise GGUFError(
            f"{source}: the key {key!r} is {_type_name(t)} where llama.cpp needs {what}: "
            "the file is corrupted and llama.cpp would refuse it"
        )
    tok_rules = {
        "tokenizer.ggml.tokens": (_STRING,),
        "tokenizer.ggml.merges": (_STRING,),
        "tokenizer.ggml.scores": (_F32, _I32),
        "tokenizer.ggml.token_type": (_I32,),
    }
    for key, items in tok_rules.items():
        found = h.types.get(key)
        if found is not None and (found[0] != _ARRAY or found[1] not in items):
            raise GGUFError(
                f"{source}: the key {key!r} is {_type_name(found)} where llama.cpp needs an array of "
                f"{' or '.join(_TYPE_NAMES[i] for i in items)}: llama.cpp would refuse this file"
            )


def _u32(meta: dict[str, Any], key: str, default: int = 0) -> int:
    value = meta.get(key, default)
    return value if isinstance(value, int) else default


def expert_counts(meta: dict[str, Any]) -> tuple[int, int]:
    """The experts of a MoE layer and the most a token uses (in any layer: the count may be given
    per layer); 0 for a dense model."""
    arch = meta.get("general.architecture")
    used = meta.get(f"{arch}.expert_used_count", 0)
    return _u32(meta, f"{arch}.expert_count"), used if isinstance(used, int) else max(
        used, default=0
    )


def _check_model(meta: dict[str, Any], tensors: list[TensorInfo], source: str) -> None:
    """The model loader's rules (llama-model.cpp load_hparams/load_tensors, llama-vocab.cpp) that a
    header can break; ``meta`` holds Python values (after :func:`_check_key_types`)."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{source} names no model architecture (general.architecture): not a model")
    if arch != "clip":
        for name in _ARCH_REQUIRED:
            if f"{arch}.{name}" not in meta:
                raise GGUFError(f"{source} lacks the key {arch}.{name}: llama.cpp cannot load it")
        n_layer = meta[f"{arch}.block_count"]
        if not 1 <= n_layer <= _MAX_LAYERS:
            raise GGUFError(
                f"{source} claims {n_layer:,} layers; llama.cpp loads 1 to {_MAX_LAYERS}: the "
                "file is corrupted"
            )
        for name in _ARCH_PER_LAYER:
            value = meta.get(f"{arch}.{name}")
            if value is not None and not isinstance(value, int) and len(value) != n_layer:
                raise GGUFError(
                    f"{source}: {arch}.{name} has {len(value)} values for {n_layer} layers: "
                    "llama.cpp refuses it"
                )
        n_expert, used_max = expert_counts(meta)
        if n_expert > _MAX_EXPERTS or used_max > n_expert:
            raise GGUFError(
                f"{source} claims {n_expert} experts with {used_max} used per token: llama.cpp "
                "refuses it (at most 1024 experts, and no more used than there are)"
            )
        for t in tensors:
            layer = t.layer
            if layer is not None and layer >= n_layer:
                raise GGUFError(
                    f"{source}: tensor {t.name!r} belongs to layer {layer}, but the model has "
                    f"{n_layer} layers: the file is corrupted"
                )
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list):
        for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
            values = meta.get(key)
            if values is not None and len(values) < len(tokens):
                raise GGUFError(
                    f"{source}: {key} has {len(values)} entries for {len(tokens)} tokens: "
                    "llama.cpp refuses it"
                )
        # llama.cpp maps each token's text to its id and asserts the map is one-to-one.
        texts = {t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)}
        if len(texts) != len(tokens):
            raise GGUFError(
                f"{source}: its vocabulary lists the same token twice; llama.cpp aborts on it"
            )
    if arch == "llama" and tensors:
        _check_llama_tensors(meta, tensors, source)


# Optional per-layer tensors the llama architecture knows (llama.cpp refuses any other name).
_LLAMA_OPTIONAL = {
    "attn_q.bias",
    "attn_k.bias",
    "attn_v.bias",
    "attn_output.bias",
    "attn_qkv.weight",
    "attn_qkv.bias",
    "ffn_gate.bias",
    "ffn_down.bias",
    "ffn_up.bias",
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
}
_LLAMA_LAYER = (
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_down.weight",
    "ffn_up.weight",
)


def _check_llama_tensors(meta: dict[str, Any], tensors: list[TensorInfo], source: str) -> None:
    """The tensor set and shapes llama.cpp creates for a dense llama model (models/llama.cpp)."""
    if _u32(meta, "llama.expert_count"):
        return  # mixture of experts: a different tensor set, left to llama.cpp
    n_layer = meta["llama.block_count"]
    n_embd = meta["llama.embedding_length"]
    tokens = meta.get("tokenizer.ggml.tokens")
    n_vocab = _u32(meta, "llama.vocab_size", len(tokens) if isinstance(tokens, list) else 0)

    def per_layer(key: str, il: int, default: int) -> int:
        value = meta.get(f"llama.{key}", default)
        return value if isinstance(value, int) else int(value[il])

    n_head0 = per_layer("attention.head_count", 0, 0)
    head_k = _u32(meta, "llama.attention.key_length", n_embd // n_head0 if n_head0 else 0)
    head_v = _u32(meta, "llama.attention.value_length", n_embd // n_head0 if n_head0 else 0)
    n_rot = _u32(meta, "llama.rope.dimension_count", head_k)
    if n_head0 and n_rot != head_k:
        raise GGUFError(f"{source}: rope.dimension_count {n_rot} is not the head size {head_k}")
    want: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (n_embd, n_vocab),
        "output_norm.weight": (n_embd,),
        "output.weight": (n_embd, n_vocab),
        "rope_freqs.weight": (n_rot // 2,),
    }
    required = {"token_embd.weight", "output_norm.weight"}
    for il in range(n_layer):
        n_head = per_layer("attention.head_count", il, 0)
        n_kv = per_layer("attention.head_count_kv", il, n_head)
        n_ff = per_layer("feed_forward_length", il, 0)
        p = f"blk.{il}."
        shapes = {
            "attn_norm.weight": (n_embd,),
            "attn_q.weight": (n_embd, head_k * n_head),
            "attn_k.weight": (n_embd, head_k * n_kv),
            "attn_v.weight": (n_embd, head_v * n_kv),
            "attn_output.weight": (head_k * n_head, n_embd),
            "ffn_norm.weight": (n_embd,),
            "ffn_gate.weight": (n_embd, n_ff),
            "ffn_down.weight": (n_ff, n_embd),
            "ffn_up.weight": (n_embd, n_ff),
        }
        want.update({p + k: v for k, v in shapes.items()})
        required.update(p + k for k in _LLAMA_LAYER)
    names = {t.name for t in tensors}
    if any(f"blk.{il}.attn_qkv.weight" in names for il in range(n_layer)):
        return  # fused attention: shapes left to llama.cpp
    for t in tensors:
        shape = want.get(t.name)
        base = t.name.split(".", 2)[-1] if t.layer is not None else t.name
        if shape is None and base not in _LLAMA_OPTIONAL:
            raise GGUFError(
                f"{source}: tensor {t.name!r} is not part of a llama model: llama.cpp refuses it"
            )
        if shape is not None and _trim(t.shape) != _trim(shape):
            raise GGUFError(
                f"{source}: tensor {t.name!r} has shape {t.shape} where the header's own "
                f"dimensions make llama.cpp expect {shape}: the file is corrupted"
            )
    missing = sorted(required - names)
    if missing:
        raise GGUFError(
            f"{source} lacks the tensor {missing[0]!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + ": llama.cpp cannot load it"
        )


def _trim(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without trailing 1s (ggml pads every tensor to 4 dimensions of 1)."""
    out = list(shape)
    while out and out[-1] == 1:
        out.pop()
    return tuple(out)


def _parse(reader: _Reader, *, model_rules: bool = True) -> ModelSpec:
    h = _parse_header(reader)
    _check_key_types(h, reader.source)
    meta = {k: _python_value(v) for k, v in h.meta.items()}
    if model_rules and _split_count(meta) <= 1:
        _check_model(meta, h.tensors, reader.source)
    spec = _spec_from(meta, h.tensors, reader.source, h.data_offset, h.end)
    return spec


def _split_count(meta: dict[str, Any]) -> int:
    value = meta.get("split.count", 0)
    return value if isinstance(value, int) else 0


def _spec_from(
    meta: dict[str, Any], tensors: list[TensorInfo], source: str, data_offset: int, read: int
) -> ModelSpec:
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else "unknown"

    def num(name: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{name}", default)
        return value if isinstance(value, int) and not isinstance(value, bool) else default

    n_embd = num("embedding_length")
    head_raw = meta.get(f"{arch}.attention.head_count", 0)
    n_head = _first_int(head_raw)
    n_head_kv_raw = meta.get(f"{arch}.attention.head_count_kv", head_raw)
    n_head_kv: int | list[int]
    if isinstance(n_head_kv_raw, (list, array.array)) and len(n_head_kv_raw):
        n_head_kv = [int(x) for x in n_head_kv_raw]
    else:
        n_head_kv = _first_int(n_head_kv_raw)
    head_dim = n_embd // n_head if n_head else 0
    vocab = meta.get("tokenizer.ggml.tokens")
    ftype = meta.get("general.file_type")
    return ModelSpec(
        source=source,
        architecture=arch,
        name=str(meta.get("general.name", "")),
        n_layer=num("block_count"),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=num("attention.key_length", head_dim),
        head_dim_v=num("attention.value_length", head_dim),
        head_dim_k_swa=num("attention.key_length_swa"),
        head_dim_v_swa=num("attention.value_length_swa"),
        n_swa=num("attention.sliding_window"),
        n_ctx_train=num("context_length"),
        n_vocab=num("vocab_size", len(vocab) if isinstance(vocab, list) else 0),
        file_type=ftype if isinstance(ftype, int) else None,
        tensors=tensors,
        metadata=meta,
        data_offset=data_offset,
        header_bytes_read=read,
    )


def _first_int(value: Any) -> int:
    if isinstance(value, (list, array.array)):
        value = value[0] if len(value) else 0
    return int(value) if isinstance(value, (int, float)) and value == value else 0


def validate(spec: ModelSpec) -> None:
    """Apply the model rules to a spec (e.g. a split model merged from its shards)."""
    _check_model(spec.metadata, spec.tensors, spec.source)


def read_local(path: str | Path, *, check_size: bool = True) -> ModelSpec:
    """Read and validate a local file's header; with ``check_size``, refuse a file shorter than
    its tensors (llama.cpp: "tensor data is not within the file bounds")."""
    path = Path(path)
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as exc:
        raise GGUFError(f"cannot open {path}: {exc.strerror or exc}", ErrorKind.NOT_FOUND) from exc
    with handle:

        def fetch(start: int, end: int) -> bytes:
            handle.seek(start)
            return handle.read(end - start)

        try:
            spec = _parse(_Reader(fetch, size, path.name))
        except OSError as exc:
            raise GGUFError(f"cannot read {path}: {exc.strerror or exc}", ErrorKind.DISK) from exc
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


class HeaderFetchError(GGUFError):
    """Reading a remote header failed at the HTTP level; ``status`` is the HTTP code (0: none)."""

    def __init__(self, message: str, kind: ErrorKind, status: int = 0) -> None:
        super().__init__(message, kind)
        self.status = status


def read_url(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    max_bytes: int = MAX_HEADER_BYTES,
) -> ModelSpec:
    """Read and validate a remote header with HTTP Range requests -- only header bytes travel.

    Requests go through huggingface_hub's HTTP session (its proxies, TLS verification and user
    agent); 401/403 raise :class:`HeaderFetchError` of kind gated/auth with ``status``, 404 kind
    not_found, any other failure kind network.  No more than ``max_bytes`` are ever requested.
    """
    import httpx2
    from huggingface_hub import get_session

    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    total = 0
    reader: _Reader | None = None

    def fetch(start: int, end: int) -> bytes:
        nonlocal total
        want = {
            **(headers or {}),
            "Range": f"bytes={start}-{end - 1}",
            "Accept-Encoding": "identity",
        }
        try:
            with get_session().stream(
                "GET",
                url,
                headers=want,
                timeout=httpx2.Timeout(timeout, connect=min(timeout, 15.0)),
                follow_redirects=True,
            ) as resp:
                status = resp.status_code
                if status >= 400:
                    raise _status_error(status, url)
                if status == 200 and start > 0:
                    raise GGUFError(
                        f"{url}: the server ignores Range requests, so the header cannot be read "
                        "without downloading the whole file",
                        ErrorKind.REFUSED,
                    )
                if status == 206 and reader is not None and reader.size is None:
                    reader.size = _content_range_total(resp.headers.get("Content-Range", ""))
                body = bytearray()
                for chunk in resp.iter_raw():
                    body += chunk
                    if len(body) >= end - start:  # a server that ignores Range: stop reading
                        break
        except httpx2.HTTPError as exc:
            raise HeaderFetchError(
                f"cannot read the header of {url}: {exc or type(exc).__name__}", ErrorKind.NETWORK
            ) from exc
        total += min(len(body), end - start)
        return bytes(body[: end - start])

    reader = _Reader(fetch, None, name, max_bytes)
    spec = _parse(reader)
    spec.raw_header = bytes(reader.buf[: spec.data_offset])
    spec.header_bytes_read = total
    return spec


def _content_range_total(value: str) -> int | None:
    m = re.fullmatch(r"\s*bytes\s+\d+-\d+/(\d+)\s*", value)
    return int(m.group(1)) if m else None


def _status_error(status: int, url: str) -> HeaderFetchError:
    if status in (401, 403):
        return HeaderFetchError(
            f"access to {url} was refused ({status}): the repo is gated or private; accept its "
            "terms on the Hub and set your Hub token (Settings, or HF_TOKEN)",
            ErrorKind.GATED if status == 403 else ErrorKind.AUTH,
            status,
        )
    if status == 404:
        return HeaderFetchError(f"{url} was not found (404)", ErrorKind.NOT_FOUND, status)
    kind = ErrorKind.SERVER if status >= 500 or status == 429 else ErrorKind.NETWORK
    return HeaderFetchError(f"reading the header of {url} failed: HTTP {status}", kind, status)


def shard_urls(url: str) -> list[str]:
    """All shard URLs of a split GGUF given any one of them (or just ``[url]``)."""
    m = _SHARD_RE.search(url)
    if not m:
        return [url]
    count = int(m.group(2))
    return [url[: m.start()] + f"-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def merge_shards(specs: list[ModelSpec]) -> ModelSpec:
    """One validated spec for a split model: metadata of the first shard, tensors of all."""
    first = specs[0]
    tensors = [t for s in specs for t in s.tensors]
    expected = first.metadata.get("split.tensors.count")
    if isinstance(expected, int) and expected != len(tensors):
        raise GGUFError(
            f"{first.source}: the split model promises {expected} tensors but its shards hold "
            f"{len(tensors)}: a shard is missing or corrupted"
        )
    for i, s in enumerate(specs):
        no = s.metadata.get("split.no")
        if len(specs) > 1 and no is not None and no != i:
            raise GGUFError(f"{s.source} says it is shard {no}, not shard {i} of {first.source}")
    merged = _spec_from(first.metadata, tensors, first.source, first.data_offset, 0)
    validate(merged)
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
