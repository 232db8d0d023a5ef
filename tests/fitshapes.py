"""Header-only GGUF files of real model shapes (Llama-2-7B, Mistral-7B) for planning tests.

Only the header is written (metadata, vocabulary, tensor table); the file is then extended with a
hole to the size its tensors need, so llama.cpp's dry run and the header reader see a complete
7B model that takes a few MB of disk.  Quant mixes follow llama.cpp's (Q4_K_M keeps the output in
Q6_K and half of attn_v/ffn_down in Q6_K, and so on) closely enough for size and verdict tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, LlamaFileType

from app.core.synthetic_model import CHATML_TEMPLATE, _vocab

Q = GGMLQuantizationType


@dataclass(frozen=True)
class Shape:
    name: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int


LLAMA2_7B = Shape("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096)
MISTRAL_7B = Shape("mistral-7b", 4096, 32, 32, 8, 14336, 32000, 32768)

# quant -> (main type, output type, type of the "more important" half of attn_v / ffn_down)
MIXES: dict[str, tuple[Q, Q, Q]] = {
    "Q2_K": (Q.Q2_K, Q.Q6_K, Q.Q3_K),
    "Q3_K_M": (Q.Q3_K, Q.Q6_K, Q.Q4_K),
    "Q4_K_M": (Q.Q4_K, Q.Q6_K, Q.Q6_K),
    "Q5_K_M": (Q.Q5_K, Q.Q6_K, Q.Q6_K),
    "Q6_K": (Q.Q6_K, Q.Q6_K, Q.Q6_K),
    "Q8_0": (Q.Q8_0, Q.Q8_0, Q.Q8_0),
    "F16": (Q.F16, Q.F16, Q.F16),
}


def _nbytes(t: Q, rows: int, cols: int) -> int:
    block, size = GGML_QUANT_SIZES[t]
    return rows * cols // block * size


def write_header_only(folder: Path | None, shape: Shape, quant: str) -> Path:
    """``folder/<shape>-<quant>.gguf``: header only, then a hole to the full size (cached).

    Without a folder the file is cached next to the generated test models.
    """
    if folder is None:
        from tests.modelfactory import cache_root

        folder = cache_root() / "header-only"
        folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{shape.name}-{quant}.gguf"
    if path.exists():
        return path
    main, out_t, important = MIXES[quant]
    tmp = path.with_suffix(f".{os.getpid()}.part")  # parallel sessions may race
    w = GGUFWriter(str(tmp), "llama")
    w.add_name(shape.name)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.n_embd // shape.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(int(LlamaFileType[f"MOSTLY_{quant}"]))
    tokens, scores, types = _vocab(shape.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)
    w.add_chat_template(CHATML_TEMPLATE)

    def mat(name: str, t: Q, rows: int, cols: int) -> None:
        w.add_tensor_info(name, (rows, cols), np.dtype(np.float32), _nbytes(t, rows, cols), t)

    def norm(name: str, n: int) -> None:
        w.add_tensor_info(name, (n,), np.dtype(np.float32), 4 * n, Q.F32)

    e = shape.n_embd
    kv = shape.n_head_kv * (e // shape.n_head)
    mat("token_embd.weight", main if main != Q.F16 else Q.F16, shape.n_vocab, e)
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        imp = important if i % 2 == 0 else main
        norm(p + "attn_norm.weight", e)
        mat(p + "attn_q.weight", main, e, e)
        mat(p + "attn_k.weight", main, kv, e)
        mat(p + "attn_v.weight", imp, kv, e)
        mat(p + "attn_output.weight", main, e, e)
        norm(p + "ffn_norm.weight", e)
        mat(p + "ffn_gate.weight", main, shape.n_ff, e)
        mat(p + "ffn_up.weight", main, shape.n_ff, e)
        mat(p + "ffn_down.weight", imp, e, shape.n_ff)
    norm("output_norm.weight", e)
    mat("output.weight", out_t, shape.n_vocab, e)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    from app.core.gguf_header import read_local

    spec = read_local(tmp, check_size=False)
    size = spec.data_offset + max(t.offset + t.nbytes for t in spec.tensors)
    with tmp.open("r+b") as f:
        f.truncate(size)
    tmp.replace(path)
    return path
