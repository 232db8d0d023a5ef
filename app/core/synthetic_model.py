"""Write small llama-architecture GGUF models with random weights (no Qt, no llama.cpp).

The app's ``--self-test`` writes one to check that a build can load and run a model without any file
shipped; the tests' model factory (``tests/modelfactory.py``) writes its models with it and then
quantizes them.  Weights are random with a fixed seed; the vocabulary is a SentencePiece-style one
with byte fallback, so any text tokenizes; the metadata carries a ChatML chat template.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Whole words (with every prefix) in the vocabulary, so ordinary English and code tokenize.
_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from or "
    "one had by word but not what all were we when your can said there use an each which she do "
    "how their if will up other about out many then them these so some her would make like him "
    "into time has look two more write go see number no way could people my than first water "
    "been call who oil its now find long down day did get come made may part model quant memory "
    "def return import class print self true false none while else elif for range list dict "
)
_WORDS = _WORD_TEXT.split()


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of a generated model; every matrix row is a multiple of 256 (K-quants)."""

    n_vocab: int = 512
    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_ctx_train: int = 4096
    weight_std: float = 0.3
    seed: int = 1234
    chat_template: str = CHATML_TEMPLATE  # "" writes no tokenizer.chat_template at all
    name: str = "quantdesk-test"
    # Extra or replaced metadata, (key, value) pairs: str, int (u32), float (f32) or bool values.
    metadata: tuple[tuple[str, Any], ...] = ()

    def key(self) -> str:
        fields = asdict(self)
        if not fields["metadata"]:
            del fields["metadata"]  # the key of every shape written before the field existed
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _vocab(n_vocab: int) -> tuple[list[str], list[float], list[int]]:
    # Token types as llama.cpp reads them: 1 normal, 2 unknown, 3 control, 6 byte.
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [2, 3, 3, 3, 3]
    tokens += [f"<0x{i:02X}>" for i in range(256)]
    types += [6] * 256
    pieces: list[str] = ["\u2581"]
    chars = [chr(c) for c in range(33, 127)]
    pieces += chars
    for word in _WORDS:
        w = "\u2581" + word
        pieces += [w[:i] for i in range(2, len(w) + 1)]  # every prefix, so SPM merges reach it
    unique = list(dict.fromkeys(pieces))  # first occurrence of each, in order
    seen = set(unique)
    rng = np.random.default_rng(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(tokens) + len(unique) < n_vocab:
        n = int(rng.integers(2, 7))
        cand = "\u2581" + "".join(rng.choice(list(letters), n))
        if cand not in seen:
            seen.add(cand)
            unique.append(cand)
    unique = unique[: n_vocab - len(tokens)]
    tokens += unique
    types += [1] * len(unique)
    # Longer pieces score higher, so the SPM merger prefers whole words.
    scores = [0.0] * (5 + 256) + [float(len(p)) for p in unique]
    return tokens, scores, types


class LlamaShapeLike(Protocol):
    """The hyper-parameters a llama-architecture header needs (ModelShape and test shapes)."""

    @property
    def name(self) -> str: ...
    @property
    def n_vocab(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_head(self) -> int: ...
    @property
    def n_head_kv(self) -> int: ...
    @property
    def n_ff(self) -> int: ...
    @property
    def n_ctx_train(self) -> int: ...


def add_llama_metadata(
    w: Any, shape: LlamaShapeLike, file_type: int, chat_template: str = CHATML_TEMPLATE
) -> None:
    """Write the llama-architecture metadata and the vocabulary to a ``gguf.GGUFWriter``."""
    w.add_name(shape.name)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(shape.n_embd // shape.n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(file_type)
    tokens, scores, types = _vocab(shape.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(4)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    if chat_template:
        w.add_chat_template(chat_template)


def override_metadata(w: Any, pairs: tuple[tuple[str, Any], ...]) -> None:
    """Set (or replace) metadata keys on a ``gguf.GGUFWriter`` before its header is written."""
    for key, value in pairs:
        for kv in w.kv_data:
            kv.pop(key, None)
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_string(key, str(value))


def llama_tensor_shapes(shape: LlamaShapeLike) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of a llama model in file order, with its numpy shape (rows, cols) or (n,)."""
    e, ff = shape.n_embd, shape.n_ff
    kv = shape.n_head_kv * (e // shape.n_head)
    yield "token_embd.weight", (shape.n_vocab, e)
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (e,)
        yield p + "attn_q.weight", (e, e)
        yield p + "attn_k.weight", (kv, e)
        yield p + "attn_v.weight", (kv, e)
        yield p + "attn_output.weight", (e, e)
        yield p + "ffn_norm.weight", (e,)
        yield p + "ffn_gate.weight", (ff, e)
        yield p + "ffn_up.weight", (ff, e)
        yield p + "ffn_down.weight", (e, ff)
    yield "output_norm.weight", (e,)
    yield "output.weight", (shape.n_vocab, e)


def write_f16_model(path: Path, shape: ModelShape) -> Path:
    """Write an F16 GGUF (1-D norms stay F32) with random weights drawn from the shape's seed."""
    import gguf

    rng = np.random.default_rng(shape.seed)
    w = gguf.GGUFWriter(str(path), "llama")
    add_llama_metadata(w, shape, int(gguf.LlamaFileType.MOSTLY_F16), shape.chat_template)
    override_metadata(w, shape.metadata)

    def mat(rows: int, cols: int) -> np.ndarray:
        # std scaled by fan-in keeps activations finite while outputs stay peaked (DESIGN.md 6)
        std = shape.weight_std * (256 / cols) ** 0.5
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    for name, dims in llama_tensor_shapes(shape):
        w.add_tensor(name, mat(*dims) if len(dims) == 2 else norm(dims[0]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
