"""The header validator's llama.cpp rules and bounds, each with its own message and kind."""

from __future__ import annotations

import struct

import pytest

from app.core.errors import ErrorKind, QuantDeskError
from app.core.gguf_header import MAX_STRING_BYTES, GGUFError, read_local
from tests import modelfactory
from tests.integration.test_header_fuzz import KV, parse, serialize


@pytest.fixture(scope="module")
def base():
    return parse(modelfactory.model_path("Q8_0").read_bytes())


def _write(tmp_path, model) -> object:
    path = tmp_path / "m.gguf"
    path.write_bytes(serialize(model))
    return path


def _with_alignment(base, vtype: int, value: int):
    m = base.copy()
    m.kvs = [k for k in m.kvs if k.key != b"general.alignment"]
    m.kvs.append(KV(b"general.alignment", vtype, value.to_bytes(8 if vtype == 10 else 4, "little")))
    return m


@pytest.mark.parametrize("vtype", [5, 10])  # i32, u64: llama.cpp wants a u32
def test_alignment_of_the_wrong_type(base, tmp_path, vtype):
    with pytest.raises(GGUFError, match="general.alignment must be a u32") as info:
        read_local(_write(tmp_path, _with_alignment(base, vtype, 32)))
    assert isinstance(info.value, QuantDeskError) and info.value.kind == ErrorKind.INVALID_FILE


@pytest.mark.parametrize("value", [0, 3, 7])
def test_alignment_not_a_power_of_two(base, tmp_path, value):
    with pytest.raises(GGUFError, match="not a power of two"):
        read_local(_write(tmp_path, _with_alignment(base, 4, value)))


def test_duplicate_key_and_tensor(base, tmp_path):
    m = base.copy()
    m.kvs.append(m.kvs[1])
    with pytest.raises(GGUFError, match="appears twice"):
        read_local(_write(tmp_path, m))
    m = base.copy()
    m.tensors[2].name = m.tensors[1].name
    with pytest.raises(GGUFError, match="appears twice"):
        read_local(_write(tmp_path, m))


def test_overlapping_offsets(base, tmp_path):
    m = base.copy()
    m.tensors[3].offset = m.tensors[2].offset
    with pytest.raises(GGUFError, match="where llama.cpp expects"):
        read_local(_write(tmp_path, m))


@pytest.mark.parametrize("layers", [0, 513, 1 << 31])
def test_layer_count_out_of_llama_cpp_range(base, tmp_path, layers):
    m = base.copy()
    kv = next(k for k in m.kvs if k.key.endswith(b".block_count"))
    kv.payload = struct.pack("<I", layers)
    with pytest.raises(GGUFError, match="layers"):
        read_local(_write(tmp_path, m))


def test_arch_key_of_the_wrong_type(base, tmp_path):
    m = base.copy()
    kv = next(k for k in m.kvs if k.key.endswith(b".context_length"))
    kv.vtype = 5  # i32: llama.cpp's get_key<uint32_t> refuses it
    with pytest.raises(GGUFError, match="needs a u32"):
        read_local(_write(tmp_path, m))


def test_a_string_past_the_cap_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.gguf"
    n = MAX_STRING_BYTES + 1
    head = b"GGUF" + struct.pack("<IqqQ", 3, 0, 1, 8) + b"general." + struct.pack("<iQ", 8, n)
    with path.open("wb") as f:
        f.write(head)
        f.truncate(len(head) + n + 64)  # sparse: the bytes are there, but must not be read
    with pytest.raises(GGUFError, match="more than this app reads") as info:
        read_local(path)
    assert info.value.kind == ErrorKind.LIMIT


def test_huge_count_that_the_file_cannot_hold(tmp_path):
    path = tmp_path / "count.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<Iqq", 3, 0, 1 << 40) + b"\0" * 64)
    with pytest.raises(GGUFError, match="do not fit"):
        read_local(path)


def test_the_tiny_models_pass(tiny_models):
    for path in tiny_models.values():
        assert read_local(path).n_layer == modelfactory.TINY.n_layer
