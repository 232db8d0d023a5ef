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

from app.core.synthetic_model import add_llama_metadata, llama_tensor_shapes

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
    add_llama_metadata(w, shape, int(LlamaFileType[f"MOSTLY_{quant}"]))
    for name, dims in llama_tensor_shapes(shape):
        if len(dims) == 1:
            w.add_tensor_info(name, dims, np.dtype(np.float32), 4 * dims[0], Q.F32)
            continue
        if name == "output.weight":
            t = out_t
        elif (
            name.endswith(("attn_v.weight", "ffn_down.weight")) and int(name.split(".")[1]) % 2 == 0
        ):
            t = important  # llama.cpp's mixes give half of these layers more bits
        else:
            t = main
        w.add_tensor_info(name, dims, np.dtype(np.float32), _nbytes(t, *dims), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    from app.core.gguf_header import read_local

    with tmp.open("ab") as f:  # the padding to the data section, so the header reads as whole
        f.write(bytes(4096))
    spec = read_local(tmp, check_size=False)
    size = spec.data_offset + max(t.offset + t.nbytes for t in spec.tensors)
    with tmp.open("r+b") as f:
        f.truncate(size)
    tmp.replace(path)
    return path
