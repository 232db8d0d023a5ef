"""Seeded header fuzz: mutated tiny models through the parser, ``quantdesk plan`` and library import.

Each mutant is a whole file (mutated header + the original tensor data).  The mutations are the
structural ones a hostile or damaged file carries: bit flips in the fixed-width fields (counts,
lengths, value and tensor types, dimensions, offsets, numeric values), truncations, type confusion
of known keys, huge counts and lengths, bad alignments, duplicate keys and tensor names, overlapping
or misaligned offsets, absurd layer counts.  The contract:

* the parser, ``plan`` and ``import`` raise nothing but the app's own errors (no traceback);
* no mutant takes more than 2 s or 256 MiB to refuse or accept;
* every mutant the parser accepts loads in real llama.cpp (one engine child for all of them).

Flips inside string contents (a tensor or architecture name) are not made: llama.cpp refuses an
unknown architecture or tensor by name, which only llama.cpp itself can decide.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.cli import run_cli
from app.core.engine.client import Engine, EngineError
from app.core.errors import QuantDeskError
from app.core.gguf_header import GGUFError, read_local
from app.core.library import Library
from tests import modelfactory

SEED = 20240613
N_MUTANTS = 300
MAX_SECONDS = 2.0
MAX_BYTES = 256 << 20
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


@dataclass
class KV:
    key: bytes
    vtype: int
    payload: bytes  # everything after the type field, as in the file


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    gtype: int
    offset: int


@dataclass
class Model:
    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    data: bytes
    align: int = 32
    fields: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) of fixed fields

    def copy(self) -> Model:
        return Model(
            self.version,
            [KV(k.key, k.vtype, k.payload) for k in self.kvs],
            [Tensor(t.name, list(t.dims), t.gtype, t.offset) for t in self.tensors],
            self.data,
            self.align,
        )


def _skip_value(buf: bytes, pos: int, vtype: int) -> int:
    if vtype in _SCALAR:
        return pos + _SCALAR[vtype]
    if vtype == 8:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    itype, n = struct.unpack_from("<iQ", buf, pos)
    pos += 12
    for _ in range(n):
        pos = _skip_value(buf, pos, itype)
    return pos


def parse(buf: bytes) -> Model:
    """The test's own reader of a valid file (independent of the app's parser)."""
    version, n_t, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos = 24
    kvs = []
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", buf, pos)
        key = buf[pos + 8 : pos + 8 + n]
        pos += 8 + n
        (vtype,) = struct.unpack_from("<i", buf, pos)
        pos += 4
        end = _skip_value(buf, pos, vtype)
        kvs.append(KV(key, vtype, buf[pos:end]))
        pos = end
    tensors = []
    for _ in range(n_t):
        (n,) = struct.unpack_from("<Q", buf, pos)
        name = buf[pos + 8 : pos + 8 + n]
        pos += 8 + n
        (nd,) = struct.unpack_from("<I", buf, pos)
        dims = list(struct.unpack_from(f"<{nd}q", buf, pos + 4))
        pos += 4 + 8 * nd
        gtype, offset = struct.unpack_from("<iQ", buf, pos)
        pos += 12
        tensors.append(Tensor(name, dims, gtype, offset))
    start = (pos + 31) // 32 * 32
    return Model(version, kvs, tensors, buf[start:])


def serialize(m: Model) -> bytes:
    """Header + padding + data; records the fixed-width fields' positions in ``m.fields``."""
    out = bytearray(b"GGUF")
    m.fields = []

    def put(fmt: str, *values: int) -> None:
        m.fields.append((len(out), struct.calcsize(fmt)))
        out.extend(struct.pack(fmt, *values))

    put("<I", m.version)
    put("<Q", len(m.tensors))
    put("<Q", len(m.kvs))
    for kv in m.kvs:
        put("<Q", len(kv.key))
        out.extend(kv.key)
        put("<i", kv.vtype)
        if kv.vtype in _SCALAR:
            m.fields.append((len(out), len(kv.payload)))  # numeric values are flipped too
        elif kv.vtype == 9 and len(kv.payload) >= 12:
            m.fields.append((len(out), 4))  # item type
            m.fields.append((len(out) + 4, 8))  # item count
        elif kv.vtype == 8:
            m.fields.append((len(out), 8))
        out.extend(kv.payload)
    for t in m.tensors:
        put("<Q", len(t.name))
        out.extend(t.name)
        put("<I", len(t.dims))
        for d in t.dims:
            put("<q", d)
        put("<i", t.gtype)
        put("<Q", t.offset)
    pad = (-len(out)) % m.align if m.align > 0 else 0
    out.extend(b"\0" * pad)
    out.extend(m.data)
    return bytes(out)


def _find(m: Model, suffix: bytes) -> KV | None:
    return next((k for k in m.kvs if k.key.endswith(suffix)), None)


def _u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def mutate(base: Model, rng: random.Random) -> tuple[str, bytes]:
    m = base.copy()
    kind = rng.choice(
        [
            "flip",
            "flip",
            "flip",
            "truncate",
            "type",
            "huge",
            "align",
            "dup_key",
            "dup_tensor",
            "offsets",
            "layers",
        ]
    )
    if kind == "flip":
        buf = bytearray(serialize(m))
        for _ in range(rng.randint(1, 3)):
            off, size = rng.choice(m.fields)
            buf[off + rng.randrange(size)] ^= 1 << rng.randrange(8)
        return kind, bytes(buf)
    if kind == "truncate":
        buf = serialize(m)
        header = len(buf) - len(m.data)
        cut = rng.randrange(4, header + 64) if rng.random() < 0.8 else rng.randrange(len(buf))
        return kind, buf[:cut]
    if kind == "type":
        kv = rng.choice([k for k in m.kvs if k.vtype in _SCALAR] or m.kvs)
        kv.vtype = rng.choice([t for t in (*_SCALAR, 8) if t != kv.vtype])
        if rng.random() < 0.5 and kv.vtype in _SCALAR:  # re-encode so only the type is wrong
            kv.payload = (struct.unpack_from("<I", kv.payload.ljust(4, b"\0"))[0] % 256).to_bytes(
                _SCALAR[kv.vtype], "little"
            )
        return kind, serialize(m)
    if kind == "huge":
        huge = rng.choice([1 << 31, 1 << 32, 1 << 40, (1 << 63) - 1, (1 << 64) - 1])
        buf = bytearray(serialize(m))
        which = rng.choice(["n_tensors", "n_kv", "len"])
        if which == "n_tensors":
            struct.pack_into("<Q", buf, 8, huge)
        elif which == "n_kv":
            struct.pack_into("<Q", buf, 16, huge)
        else:
            off, size = rng.choice([f for f in m.fields if f[1] == 8])
            struct.pack_into("<Q", buf, off, huge)
        return kind, bytes(buf)
    if kind == "align":
        value = rng.choice([0, 1, 3, 7, 48, 64, 1 << 31, 33])
        m.kvs = [k for k in m.kvs if k.key != b"general.alignment"]
        vtype = rng.choice([4, 4, 4, 5, 10])
        payload = value.to_bytes(_SCALAR[vtype], "little")
        m.kvs.insert(rng.randrange(len(m.kvs) + 1), KV(b"general.alignment", vtype, payload))
        if vtype == 4 and value and not value & (value - 1):
            m.align = value  # a valid alignment: re-lay the data so only the offsets are stale
        return kind, serialize(m)
    if kind == "dup_key":
        kv = rng.choice(m.kvs)
        m.kvs.insert(rng.randrange(len(m.kvs) + 1), KV(kv.key, kv.vtype, kv.payload))
        return kind, serialize(m)
    if kind == "dup_tensor":
        i, j = rng.sample(range(len(m.tensors)), 2)
        m.tensors[j].name = m.tensors[i].name
        return kind, serialize(m)
    if kind == "offsets":
        i = rng.randrange(1, len(m.tensors))
        how = rng.choice(["overlap", "misalign", "gap", "swap"])
        if how == "overlap":
            m.tensors[i].offset = m.tensors[i - 1].offset
        elif how == "misalign":
            m.tensors[i].offset += rng.choice([1, 4, 16])
        elif how == "gap":
            m.tensors[i].offset += 32
        else:
            m.tensors[i].offset, m.tensors[i - 1].offset = (
                m.tensors[i - 1].offset,
                m.tensors[i].offset,
            )
        return kind, serialize(m)
    # absurd layer counts (the 2^40-layer file of the issue, as u32 and as u64)
    kv = _find(m, b".block_count")
    assert kv is not None
    value = rng.choice([0, 3, 513, 1 << 20, (1 << 32) - 1, 1 << 40])
    if value >= 1 << 32:
        kv.vtype, kv.payload = 10, struct.pack("<Q", value)
    else:
        kv.payload = _u32(value)
    return kind, serialize(m)


@dataclass
class Outcome:
    kind: str
    path: Path
    accepted: bool
    seconds: float
    peak: int
    error: str = ""


def _check_one(kind: str, path: Path, library: Library) -> Outcome:
    tracemalloc.start()
    # CPU time, not wall time: the 2 s bound is about work done, and the shared test machine's
    # other jobs must not make it flaky.
    t0 = time.process_time()
    accepted = True
    error = ""
    try:
        read_local(path)
    except GGUFError as exc:
        accepted, error = False, str(exc)
    imported = True
    try:
        for _ in library.import_file(path):
            pass
    except QuantDeskError:
        imported = False
    seconds = time.process_time() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert imported == accepted, f"{kind}: import and the parser disagree on {path.name}"
    return Outcome(kind, path, accepted, seconds, peak, error)


@pytest.fixture(scope="module")
def bases() -> list[tuple[str, bytes]]:
    return [(q, modelfactory.model_path(q).read_bytes()) for q in ("Q4_K_M", "Q8_0")]


@pytest.fixture
def scratch(tmp_path):
    """Mutants live in memory-backed storage where there is one: 300 files of 1.5 MB each."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        with tempfile.TemporaryDirectory(dir=shm, prefix="quantdesk-fuzz-") as folder:
            yield Path(folder)
    else:
        yield tmp_path


def test_mutated_headers_are_refused_cleanly_or_load_in_llama_cpp(bases, scratch, capsys):
    tmp_path = scratch
    rng = random.Random(SEED)
    library = Library(folder=tmp_path / "library")
    models = [(q, parse(data)) for q, data in bases]
    for q, m in models:  # the test's own writer reproduces the files byte for byte
        assert serialize(m.copy()) == dict(bases)[q]
    outcomes: list[Outcome] = []
    seen: set[bytes] = set()
    t_start = time.perf_counter()
    while len(outcomes) < N_MUTANTS:
        q, base = rng.choice(models)
        kind, data = mutate(base, rng)
        if data in seen or data == dict(bases)[q]:
            continue
        seen.add(data)
        path = tmp_path / "mutants" / f"m{len(outcomes):03d}-{kind}.gguf"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        outcomes.append(_check_one(kind, path, library))
    parse_s = time.perf_counter() - t_start

    slow = [o for o in outcomes if o.seconds > MAX_SECONDS or o.peak > MAX_BYTES]
    assert not slow, [(o.path.name, o.seconds, o.peak) for o in slow]
    accepted = [o for o in outcomes if o.accepted]
    refused = [o for o in outcomes if not o.accepted]
    assert refused and accepted  # the mutations reach both sides of the validator

    # `quantdesk plan` on the refused ones: a one-line error and a failure code, no traceback.
    for o in refused[:: max(1, len(refused) // 40)]:
        rc = run_cli(["plan", str(o.path), "--json"])
        out = capsys.readouterr()
        assert rc != 0, o.path.name
        assert "Traceback" not in out.err + out.out, (o.path.name, out.err)

    # Every accepted mutant must load in real llama.cpp: one engine child for all of them.
    refused_by_llama = []
    engine = Engine()
    try:
        for o in accepted:
            engine.start()  # a child that died on a bad file is replaced
            try:
                engine.load(o.path, n_ctx=256, n_threads=1, n_batch=64)
                engine.unload()
            except EngineError as exc:
                refused_by_llama.append((o.path.name, str(exc)[-300:]))
    finally:
        engine.close()
    assert not refused_by_llama, refused_by_llama

    by_kind: dict[str, list[int]] = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, [0, 0])[0 if o.accepted else 1] += 1
    print(
        f"\n{len(outcomes)} mutants in {parse_s:.1f} s (parser + import), "
        f"max {max(o.seconds for o in outcomes) * 1000:.1f} ms, "
        f"max {max(o.peak for o in outcomes) / 1e6:.1f} MB; accepted {len(accepted)} "
        f"(all loaded by llama.cpp), refused {len(refused)}; by kind (accepted, refused): {by_kind}"
    )
