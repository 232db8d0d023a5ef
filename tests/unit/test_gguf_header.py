"""The GGUF header reader on bad input: each failure mode gives a clear GGUFError."""

from __future__ import annotations

import struct

import pytest

from app.core.gguf_header import (
    GGUFError,
    merge_shards,
    read_local,
    read_spec,
    shard_urls,
    tensor_nbytes,
)
from tests import modelfactory


@pytest.fixture(scope="module")
def tiny():
    return modelfactory.model_path("Q4_K_M")


def test_reads_shape_and_groups(tiny):
    spec = read_local(tiny)
    s = modelfactory.TINY
    assert (spec.n_layer, spec.n_embd, spec.n_head, spec.n_head_kv) == (
        s.n_layer,
        s.n_embd,
        s.n_head,
        s.n_head_kv,
    )
    assert spec.head_dim_k == spec.head_dim_v == s.n_embd // s.n_head
    assert spec.n_vocab == s.n_vocab and spec.n_ctx_train == s.n_ctx_train
    assert spec.quant == "Q4_K_M" and 4.5 < spec.bits_per_weight < 5.5
    assert spec.input_bytes + sum(spec.layer_bytes()) + spec.output_bytes == spec.weights_bytes
    assert spec.header_bytes_read <= spec.data_offset < tiny.stat().st_size


def test_not_a_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_local(p)


def test_truncated_header_and_truncated_data(tiny, tmp_path):
    data = tiny.read_bytes()
    spec = read_local(tiny)
    head = tmp_path / "head.gguf"
    head.write_bytes(data[: spec.data_offset // 2])
    with pytest.raises(GGUFError, match="truncated|ends inside its header"):
        read_local(head)
    body = tmp_path / "body.gguf"
    body.write_bytes(data[: len(data) - 1000])
    with pytest.raises(GGUFError, match="truncated"):
        read_local(body)
    assert read_local(body, check_size=False).weights_bytes == spec.weights_bytes


def test_absurd_counts_are_refused(tmp_path):
    p = tmp_path / "bad.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 1) + b"\0" * 64)
    with pytest.raises(GGUFError, match="corrupted header"):
        read_local(p)


def test_missing_file():
    with pytest.raises(GGUFError, match="cannot open"):
        read_local("/nonexistent/model.gguf")


def test_unknown_tensor_type():
    with pytest.raises(GGUFError, match="unknown tensor type"):
        tensor_nbytes(9999, (256, 256))


def test_shard_urls_and_merge(tmp_path):
    urls = shard_urls("https://h/x/Model-Q8_0-00002-of-00003.gguf")
    assert urls == [f"https://h/x/Model-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert shard_urls("https://h/x/model.gguf") == ["https://h/x/model.gguf"]
    from tests.hub_fixtures import make_shards

    shards = make_shards(modelfactory.model_path("F16"))
    whole = read_local(modelfactory.model_path("F16"))
    merged = read_spec(shards[0])
    assert merged.weights_bytes == whole.weights_bytes
    assert merged.layer_bytes() == whole.layer_bytes()
    assert len(merged.file_sizes) == 3
    assert merge_shards([whole]).weights_bytes == whole.weights_bytes
