"""The architecture zoo: models of the families people run, in two sizes, that llama.cpp loads.

Each :class:`ZooModel` has the hyper-parameters of a real model (the metadata of the vocab-only
GGUFs llama-cpp-python's source distribution ships, ``vendor/llama.cpp/models/ggml-vocab-*.gguf``,
where one exists: tokenizer, chat template, and for llama and phi3 the hyper-parameters too) and
the tensor list llama.cpp's ``src/models/<arch>.cpp`` creates for it.  Two sizes:

* :func:`small_path` -- scaled down (few layers, small widths, the same layer pattern, head
  ratios, windows and vocabulary), random F16 weights: loads and generates for real;
* :func:`full_path` -- the true size, header only: the tensors' bytes are a hole (a sparse file,
  like ``app.core.dryrun.write_sparse``), so it plans at the real size and is never loaded.

Files are cached under ``.cache/test-models/zoo`` (or ``$QUANTDESK_TEST_MODELS/zoo``) by their
parameters.  Usable from ``bench/`` and the tests; needs the sdist's vocab files
(:func:`vocab_dir` fetches them from PyPI on first use).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tests.modelfactory import cache_root

ZOO_FORMAT = 2  # bump when the files written change


@dataclass(frozen=True)
class ZooModel:
    """One family's shapes: ``n_head_kv`` may be per layer (0 = a recurrent layer).

    ``head_dim`` is the global layers' head size; ``head_dim_swa`` (when set) the windowed
    layers' (gemma4's ``key_length_swa``).  ``swa_pattern`` is written as the file's
    ``sliding_window_pattern`` array; without it llama.cpp's per-architecture default applies.
    """

    family: str
    arch: str
    vocab: str  # ggml-vocab-<vocab>.gguf: the tokenizer (and chat template) taken from it
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int | tuple[int, ...]
    head_dim: int
    n_ff: int
    n_ctx_train: int
    n_swa: int = 0
    swa_pattern: tuple[bool, ...] = ()  # True = a windowed layer; () = no pattern key in the file
    head_dim_swa: int = 0
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    tied_output: bool = False
    qkv_bias: bool = False
    l_cache: int = 0  # lfm2's short-convolution state length
    n_vocab_pad: int = 0  # pad the vocab file's token list with reserved control tokens to this
    expert_quant: str = ""  # the full-size file's type for expert matrices ("" = the file's quant)
    extra: tuple[tuple[str, Any], ...] = ()  # more <arch>.<key> metadata
    note: str = ""

    def key(self) -> str:
        blob = json.dumps([ZOO_FORMAT, asdict(self)], sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def kv_heads(self, il: int) -> int:
        h = self.n_head_kv
        return h[il] if isinstance(h, tuple) else h

    def is_swa(self, il: int) -> bool:
        return bool(self.swa_pattern[il]) if self.swa_pattern else False

    def head_size(self, il: int) -> int:
        return self.head_dim_swa if self.head_dim_swa and self.is_swa(il) else self.head_dim

    @property
    def moe(self) -> bool:
        return self.n_expert > 0


def _lfm2_heads(n_layer: int, attn: tuple[int, ...], kv: int) -> tuple[int, ...]:
    return tuple(kv if il in attn else 0 for il in range(n_layer))


# Gemma 4 26B-A4B (ggml-vocab-gemma-4.gguf): every sixth layer global, with 2 KV heads, not 8.
_GEMMA4_SWA = tuple(il % 6 != 5 for il in range(30))
_GEMMA4_KV = tuple(8 if swa else 2 for swa in _GEMMA4_SWA)


# The true sizes (the model each imitates in ``note``) ------------------------------------------
FULL: dict[str, ZooModel] = {
    m.family: m
    for m in (
        ZooModel(
            "llama",
            "llama",
            "llama-bpe",
            32,
            4096,
            32,
            8,
            128,
            14336,
            8192,
            extra=(("rope.freq_base", 500000.0),),
            note="Llama 3 8B",
        ),
        ZooModel(
            "qwen2",
            "qwen2",
            "qwen2",
            28,
            3584,
            28,
            4,
            128,
            18944,
            32768,
            qkv_bias=True,
            extra=(("rope.freq_base", 1000000.0),),
            note="Qwen2.5 7B",
        ),
        ZooModel(
            "qwen3",
            "qwen3",
            "qwen2",
            36,
            4096,
            32,
            8,
            128,
            12288,
            40960,
            extra=(("rope.freq_base", 1000000.0),),
            note="Qwen3 8B",
        ),
        ZooModel(
            "qwen3moe",
            "qwen3moe",
            "qwen2",
            48,
            2048,
            32,
            4,
            128,
            6144,
            40960,
            n_expert=128,
            n_expert_used=8,
            n_ff_exp=768,
            extra=(("rope.freq_base", 1000000.0),),
            note="Qwen3 30B-A3B",
        ),
        ZooModel(
            "gemma2",
            "gemma2",
            "command-r",
            42,
            3584,
            16,
            8,
            256,
            14336,
            8192,
            n_swa=4096,
            tied_output=True,
            extra=(("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)),
            note="Gemma 2 9B (a 256k vocabulary of the same size)",
        ),
        ZooModel(
            "gemma3",
            "gemma3",
            "gemma-4",
            48,
            3840,
            16,
            8,
            256,
            15360,
            131072,
            n_swa=1024,
            tied_output=True,
            extra=(("rope.freq_base", 1000000.0),),
            note="Gemma 3 12B: 262k vocabulary, no sliding_window_pattern key",
        ),
        ZooModel(
            "phi3",
            "phi3",
            "phi-3",
            32,
            3072,
            32,
            32,
            96,
            8192,
            4096,
            note="Phi-3 mini (hyper-parameters of the vocab file)",
        ),
        ZooModel(
            "cohere2",
            "cohere2",
            "command-r",
            32,
            4096,
            32,
            8,
            128,
            14336,
            131072,
            n_swa=4096,
            tied_output=True,
            extra=(("logit_scale", 0.25),),
            note="Command R7B: 3 windowed layers to 1 global",
        ),
        ZooModel(
            "lfm2",
            "lfm2",
            "llama-bpe",
            16,
            2048,
            32,
            _lfm2_heads(16, (2, 5, 8, 10, 12, 14), 8),
            64,
            8192,
            128000,
            tied_output=True,
            l_cache=3,
            note="LFM2 1.2B: hybrid, 10 short-convolution layers",
        ),
        ZooModel(
            "gemma4",
            "gemma4",
            "gemma-4",
            30,
            2816,
            16,
            _GEMMA4_KV,
            512,
            2112,
            262144,
            n_swa=1024,
            swa_pattern=_GEMMA4_SWA,
            head_dim_swa=256,
            n_expert=128,
            n_expert_used=8,
            n_ff_exp=704,
            tied_output=True,
            extra=(
                ("rope.freq_base", 1000000.0),
                ("rope.freq_base_swa", 10000.0),
                ("final_logit_softcapping", 30.0),
                ("attention.shared_kv_layers", 0),
                ("embedding_length_per_layer_input", 0),
            ),
            note=(
                "Gemma 4 26B-A4B: the hyper-parameters of ggml-vocab-gemma-4.gguf (5 windowed "
                "layers of 256-wide heads to 1 global of 512, 8 or 2 KV heads, 128 experts beside "
                "a dense FFN); global layers without v_proj (attention_k_eq_v)"
            ),
        ),
        ZooModel(
            "gptoss",
            "gpt-oss",
            "qwen2",
            24,
            2880,
            64,
            8,
            64,
            2880,
            131072,
            n_swa=128,
            n_expert=32,
            n_expert_used=4,
            n_ff_exp=2880,
            qkv_bias=True,
            n_vocab_pad=201088,
            expert_quant="MXFP4",
            extra=(("rope.freq_base", 150000.0),),
            note=(
                "gpt-oss-20b: no vocab file ships, so qwen2's BPE vocabulary padded with reserved "
                "control tokens to o200k's 201088; experts MXFP4 as published, the rest at the "
                "file's quant; no pattern key (llama.cpp windows every other layer)"
            ),
        ),
    )
}

# Scaled down: same pattern, head ratios and vocabulary; small widths and few layers.
SMALL: dict[str, ZooModel] = {
    "llama": replace(
        FULL["llama"], n_layer=2, n_embd=128, n_head=4, n_head_kv=1, head_dim=32, n_ff=256
    ),
    "qwen2": replace(
        FULL["qwen2"], n_layer=2, n_embd=224, n_head=7, n_head_kv=1, head_dim=32, n_ff=256
    ),
    "qwen3": replace(
        FULL["qwen3"], n_layer=2, n_embd=128, n_head=4, n_head_kv=1, head_dim=32, n_ff=256
    ),
    "qwen3moe": replace(
        FULL["qwen3moe"],
        n_layer=2,
        n_embd=128,
        n_head=8,
        n_head_kv=1,
        head_dim=32,
        n_ff=256,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=64,
    ),
    "gemma2": replace(
        FULL["gemma2"],
        n_layer=4,
        n_embd=128,
        n_head=2,
        n_head_kv=1,
        head_dim=64,
        n_ff=256,
        n_swa=256,
    ),
    "gemma3": replace(
        FULL["gemma3"],
        n_layer=6,
        n_embd=128,
        n_head=2,
        n_head_kv=1,
        head_dim=64,
        n_ff=256,
        n_swa=256,
        n_ctx_train=32768,
    ),
    "phi3": replace(
        FULL["phi3"], n_layer=2, n_embd=128, n_head=4, n_head_kv=4, head_dim=32, n_ff=256
    ),
    "cohere2": replace(
        FULL["cohere2"],
        n_layer=4,
        n_embd=128,
        n_head=4,
        n_head_kv=1,
        head_dim=32,
        n_ff=256,
        n_swa=256,
        n_ctx_train=32768,
    ),
    "lfm2": replace(
        FULL["lfm2"],
        n_layer=6,
        n_embd=128,
        n_head=4,
        n_head_kv=_lfm2_heads(6, (2, 5), 1),
        head_dim=32,
        n_ff=256,
        n_ctx_train=32768,
    ),
    "gemma4": replace(
        FULL["gemma4"],
        n_layer=6,
        n_embd=128,
        n_head=8,
        n_head_kv=(4, 4, 4, 4, 4, 1),
        head_dim=64,
        head_dim_swa=32,
        swa_pattern=_GEMMA4_SWA[:6],
        n_ff=128,
        n_swa=256,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=32,
        n_ctx_train=32768,
    ),
    "gptoss": replace(
        FULL["gptoss"],
        n_layer=4,
        n_embd=128,
        n_head=8,
        n_head_kv=1,
        head_dim=32,
        n_ff=64,
        n_expert=8,
        n_expert_used=2,
        n_ff_exp=64,
        n_ctx_train=32768,
    ),
}
FAMILIES = tuple(FULL)


# ---- vocab files ------------------------------------------------------------------------------
def _llama_cpp_python() -> str:
    """The installed llama-cpp-python's version: its sdist vendors the llama.cpp that runs."""
    from importlib.metadata import version

    return version("llama-cpp-python")


def vocab_dir() -> Path:
    """The sdist's ``vendor/llama.cpp/models`` vocab files, fetched from PyPI on first use.

    ``$QUANTDESK_VOCAB_DIR`` overrides; an unpacked sdist under ``/tmp/lcp`` is used as it is.
    Otherwise ``pip download`` fetches the sdist (pip's cache makes that a copy after the build)
    and only its ``ggml-vocab-*.gguf`` files are kept under the test-model cache.  A machine that
    cannot reach PyPI gets an error that says so: the zoo tests fail rather than skip, because a
    skipped check of the fit on every family is one nobody sees.
    """
    env = os.environ.get("QUANTDESK_VOCAB_DIR")
    if env:
        return Path(env)
    pin = _llama_cpp_python()
    hits = sorted(glob.glob(f"/tmp/lcp/llama_cpp_python-{pin}/vendor/llama.cpp/models"))
    if hits:
        return Path(hits[-1])
    folder = cache_root() / f"llama.cpp-vocab-{pin}"
    if not (folder / "ggml-vocab-llama-bpe.gguf").exists():
        _fetch_vocab(folder, pin)
    return folder


def _fetch_vocab(folder: Path, pin: str) -> None:
    import subprocess
    import sys
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qd-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["-q", "-d", tmp, f"llama-cpp-python=={pin}"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise FileNotFoundError(
                f"the llama.cpp vocab files come from llama-cpp-python {pin}'s "
                f"source distribution and pip could not fetch it ({str(detail).strip()[-300:]}); "
                "set QUANTDESK_VOCAB_DIR to an unpacked sdist's vendor/llama.cpp/models"
            ) from exc
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        part = folder.with_name(folder.name + f".{os.getpid()}.part")
        part.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            for member in tar:
                name = Path(member.name)
                if (
                    member.isfile()
                    and name.parent.as_posix().endswith("vendor/llama.cpp/models")
                    and name.name.startswith("ggml-vocab-")
                    and name.suffix == ".gguf"
                ):
                    src = tar.extractfile(member)
                    assert src is not None
                    (part / name.name).write_bytes(src.read())
        if folder.exists():  # another process got there first
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.replace(folder)


_TOKENIZER_CACHE: dict[str, list[tuple[str, Any, Any, Any]]] = {}


def _tokenizer_fields(vocab: str) -> list[tuple[str, Any, Any, Any]]:
    """(key, value, value type, element type) of every ``tokenizer.*`` field of a vocab file."""
    if vocab in _TOKENIZER_CACHE:
        return _TOKENIZER_CACHE[vocab]
    import gguf

    reader = gguf.GGUFReader(str(vocab_dir() / f"ggml-vocab-{vocab}.gguf"))
    out = []
    for key, fld in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = fld.types[0]
        sub = fld.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        out.append((key, fld.contents(), vtype, sub))
    _TOKENIZER_CACHE[vocab] = out
    return out


def _tokenizer(m: ZooModel) -> list[tuple[str, Any, Any, Any]]:
    """The vocab file's tokenizer fields, its token list padded to ``m.n_vocab_pad``.

    The padding is reserved control tokens (as real vocabularies reserve ids): never produced by
    the BPE merges, so the tokenizer behaves as the vocab file's, while every vocabulary-sized
    tensor and buffer has the imitated model's size.
    """
    fields = _tokenizer_fields(m.vocab)
    tokens = next((v for k, v, _, _ in fields if k == "tokenizer.ggml.tokens"), None)
    if tokens is None:
        raise ValueError(f"ggml-vocab-{m.vocab}.gguf has no token list")
    extra = m.n_vocab_pad - len(tokens)
    if extra <= 0:
        return fields
    control = 3  # llama_token_type CONTROL
    pad = {
        "tokenizer.ggml.tokens": [f"<|reserved_zoo_{i}|>" for i in range(extra)],
        "tokenizer.ggml.token_type": [control] * extra,
        "tokenizer.ggml.scores": [0.0] * extra,
    }
    return [(k, list(v) + pad[k] if k in pad else v, t, sub) for k, v, t, sub in fields]


def n_vocab(m: ZooModel) -> int:
    for key, value, _, _ in _tokenizer(m):
        if key == "tokenizer.ggml.tokens":
            return len(value)
    raise ValueError(f"ggml-vocab-{m.vocab}.gguf has no token list")


# ---- tensors ------------------------------------------------------------------------------------
def tensor_shapes(m: ZooModel) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor in file order with its numpy shape (rows, cols) or (n,) -- what llama.cpp's
    ``src/models/<arch>.cpp`` creates for the family."""
    e, v, hd = m.n_embd, n_vocab(m), m.head_dim
    q = m.n_head * hd
    yield "token_embd.weight", (v, e)
    if m.arch == "gemma4":
        yield from _gemma4_tensors(m, e)
        return
    if m.arch == "gpt-oss":
        yield from _gptoss_tensors(m, e, v)
        return
    for il in range(m.n_layer):
        p = f"blk.{il}."
        kv = m.kv_heads(il) * hd
        if m.arch == "lfm2":
            yield p + "attn_norm.weight", (e,)
            if kv:
                yield p + "attn_q_norm.weight", (hd,)
                yield p + "attn_k_norm.weight", (hd,)
                yield p + "attn_q.weight", (e, e)
                yield p + "attn_k.weight", (kv, e)
                yield p + "attn_v.weight", (kv, e)
                yield p + "attn_output.weight", (e, e)
            else:
                yield p + "shortconv.conv.weight", (e, m.l_cache)
                yield p + "shortconv.in_proj.weight", (3 * e, e)
                yield p + "shortconv.out_proj.weight", (e, e)
            yield p + "ffn_norm.weight", (e,)
            yield from _dense_ffn(p, e, m.n_ff)
            continue
        yield p + "attn_norm.weight", (e,)
        if m.arch == "phi3":
            yield p + "attn_qkv.weight", (q + 2 * kv, e)
        else:
            yield p + "attn_q.weight", (q, e)
            yield p + "attn_k.weight", (kv, e)
            yield p + "attn_v.weight", (kv, e)
            if m.qkv_bias:
                yield p + "attn_q.bias", (q,)
                yield p + "attn_k.bias", (kv,)
                yield p + "attn_v.bias", (kv,)
        if m.arch in ("qwen3", "qwen3moe", "gemma3"):
            yield p + "attn_q_norm.weight", (hd,)
            yield p + "attn_k_norm.weight", (hd,)
        yield p + "attn_output.weight", (e, q)
        if m.arch in ("gemma2", "gemma3"):
            yield p + "post_attention_norm.weight", (e,)
        if m.arch != "cohere2":  # cohere2 runs attention and FFN in parallel off one norm
            yield p + "ffn_norm.weight", (e,)
        if m.moe:
            yield p + "ffn_gate_inp.weight", (m.n_expert, e)
            yield p + "ffn_gate_exps.weight", (m.n_expert, m.n_ff_exp, e)
            yield p + "ffn_down_exps.weight", (m.n_expert, e, m.n_ff_exp)
            yield p + "ffn_up_exps.weight", (m.n_expert, m.n_ff_exp, e)
        elif m.arch == "phi3":
            yield p + "ffn_up.weight", (2 * m.n_ff, e)
            yield p + "ffn_down.weight", (e, m.n_ff)
        else:
            yield from _dense_ffn(p, e, m.n_ff)
        if m.arch in ("gemma2", "gemma3"):
            yield p + "post_ffw_norm.weight", (e,)
    yield ("token_embd_norm.weight" if m.arch == "lfm2" else "output_norm.weight"), (e,)
    if not m.tied_output:
        yield "output.weight", (v, e)


def _gemma4_tensors(m: ZooModel, e: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """src/models/gemma4.cpp: per-layer head sizes, the dense FFN beside the experts (fused
    gate+up, as the converter writes them), the router's input scale and per-expert scales."""
    yield "rope_freqs.weight", (m.head_dim // 2,)  # the global layers' proportional rope, shared
    for il in range(m.n_layer):
        p, hd = f"blk.{il}.", m.head_size(il)
        q, kv = m.n_head * hd, m.kv_heads(il) * hd
        yield p + "attn_norm.weight", (e,)
        yield p + "attn_q.weight", (q, e)
        yield p + "attn_k.weight", (kv, e)
        if m.is_swa(il):  # global layers use K as V (attention_k_eq_v): no v_proj
            yield p + "attn_v.weight", (kv, e)
        yield p + "attn_output.weight", (e, q)
        yield p + "attn_q_norm.weight", (hd,)
        yield p + "attn_k_norm.weight", (hd,)
        yield p + "post_attention_norm.weight", (e,)
        yield p + "layer_output_scale.weight", (1,)
        yield p + "ffn_norm.weight", (e,)
        yield from _dense_ffn(p, e, m.n_ff)
        yield p + "post_ffw_norm.weight", (e,)
        yield p + "ffn_gate_inp.weight", (m.n_expert, e)
        yield p + "ffn_gate_inp.scale", (e,)
        yield p + "pre_ffw_norm_2.weight", (e,)
        yield p + "post_ffw_norm_1.weight", (e,)
        yield p + "post_ffw_norm_2.weight", (e,)
        yield p + "ffn_gate_up_exps.weight", (m.n_expert, 2 * m.n_ff_exp, e)
        yield p + "ffn_down_exps.weight", (m.n_expert, e, m.n_ff_exp)
        yield p + "ffn_down_exps.scale", (m.n_expert,)
    yield "output_norm.weight", (e,)


def _gptoss_tensors(m: ZooModel, e: int, v: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    """src/models/openai-moe.cpp: biased attention with a sink per head, biased experts."""
    hd, ff, n_exp = m.head_dim, m.n_ff_exp, m.n_expert
    q = m.n_head * hd
    for il in range(m.n_layer):
        p, kv = f"blk.{il}.", m.kv_heads(il) * hd
        yield p + "attn_norm.weight", (e,)
        yield p + "post_attention_norm.weight", (e,)
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            yield p + f"attn_{name}.weight", (rows, e)
            yield p + f"attn_{name}.bias", (rows,)
        yield p + "attn_output.weight", (e, q)
        yield p + "attn_output.bias", (e,)
        yield p + "attn_sinks.weight", (m.n_head,)
        yield p + "ffn_gate_inp.weight", (n_exp, e)
        yield p + "ffn_gate_inp.bias", (n_exp,)
        yield p + "ffn_gate_exps.weight", (n_exp, ff, e)
        yield p + "ffn_down_exps.weight", (n_exp, e, ff)
        yield p + "ffn_up_exps.weight", (n_exp, ff, e)
        yield p + "ffn_gate_exps.bias", (n_exp, ff)
        yield p + "ffn_down_exps.bias", (n_exp, e)
        yield p + "ffn_up_exps.bias", (n_exp, ff)
    yield "output_norm.weight", (e,)
    yield "output.weight", (v, e)


def _dense_ffn(p: str, e: int, ff: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield p + "ffn_gate.weight", (ff, e)
    yield p + "ffn_up.weight", (ff, e)
    yield p + "ffn_down.weight", (e, ff)


def _is_norm(name: str) -> bool:
    """A vector llama.cpp reads in F32 (norms, biases, scales, sinks, rope factors)."""
    return (
        "norm" in name
        or name.endswith((".bias", ".scale"))
        or any(k in name for k in ("shortconv.conv", "attn_sinks", "rope_freqs", "output_scale"))
    )


# ---- metadata -----------------------------------------------------------------------------------
def _add_metadata(w: Any, m: ZooModel, file_type: int) -> None:
    import gguf

    a = m.arch
    w.add_name(f"zoo-{m.family}")
    w.add_uint32(f"{a}.context_length", m.n_ctx_train)
    w.add_uint32(f"{a}.embedding_length", m.n_embd)
    w.add_uint32(f"{a}.block_count", m.n_layer)
    w.add_uint32(f"{a}.feed_forward_length", m.n_ff)
    w.add_uint32(f"{a}.attention.head_count", m.n_head)
    if isinstance(m.n_head_kv, tuple):
        w.add_array(f"{a}.attention.head_count_kv", list(m.n_head_kv))
    else:
        w.add_uint32(f"{a}.attention.head_count_kv", m.n_head_kv)
    if m.head_dim * m.n_head != m.n_embd:
        w.add_uint32(f"{a}.attention.key_length", m.head_dim)
        w.add_uint32(f"{a}.attention.value_length", m.head_dim)
    w.add_uint32(f"{a}.rope.dimension_count", m.head_dim)
    if m.head_dim_swa:
        w.add_uint32(f"{a}.attention.key_length_swa", m.head_dim_swa)
        w.add_uint32(f"{a}.attention.value_length_swa", m.head_dim_swa)
        w.add_uint32(f"{a}.rope.dimension_count_swa", m.head_dim_swa)
    if m.swa_pattern:
        w.add_array(f"{a}.attention.sliding_window_pattern", [bool(x) for x in m.swa_pattern])
    if a == "cohere2":
        w.add_float32(f"{a}.attention.layer_norm_epsilon", 1e-5)
    else:
        w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    if m.n_swa:
        w.add_uint32(f"{a}.attention.sliding_window", m.n_swa)
    if m.moe:
        w.add_uint32(f"{a}.expert_count", m.n_expert)
        w.add_uint32(f"{a}.expert_used_count", m.n_expert_used)
        w.add_uint32(f"{a}.expert_feed_forward_length", m.n_ff_exp)
    if m.l_cache:
        w.add_uint32(f"{a}.shortconv.l_cache", m.l_cache)
    for key, value in m.extra:
        if isinstance(value, float):
            w.add_float32(f"{a}.{key}", value)
        else:
            w.add_uint32(f"{a}.{key}", value)
    w.add_file_type(file_type)
    for key, value, vtype, sub in _tokenizer(m):
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, list(value), vtype, sub_type=sub)
        else:
            w.add_key_value(key, value, vtype)
    if not any(k == "tokenizer.chat_template" for k, *_ in _tokenizer_fields(m.vocab)):
        from app.core.synthetic_model import CHATML_TEMPLATE

        w.add_chat_template(CHATML_TEMPLATE)


# ---- files --------------------------------------------------------------------------------------
def _folder() -> Path:
    path = cache_root() / "zoo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def small_path(family: str, model: ZooModel | None = None) -> Path:
    """The scaled-down model of ``family`` (random F16 weights), written on first use."""
    m = model or SMALL[family]
    path = _folder() / f"{m.family}-small-{m.key()}.gguf"
    if not path.exists():
        _write_small(path, m)
    return path


def full_path(family: str, model: ZooModel | None = None, quant: str = "Q4_K") -> Path:
    """The full-size model of ``family``: header only, a hole where the weights would be."""
    m = model or FULL[family]
    path = _folder() / f"{m.family}-full-{quant}-{m.key()}.gguf"
    if not path.exists():
        _write_sparse(path, m, quant)
    return path


def _write_small(path: Path, m: ZooModel) -> None:
    import gguf

    rng = np.random.default_rng(int(m.key()[:8], 16))
    tmp = path.with_suffix(f".{os.getpid()}.part")
    w = gguf.GGUFWriter(str(tmp), m.arch)
    _add_metadata(w, m, int(gguf.LlamaFileType.MOSTLY_F16))
    for name, dims in tensor_shapes(m):
        if _is_norm(name):
            data = (1.0 + 0.1 * rng.standard_normal(dims)).astype(np.float32)
            if name.endswith(".bias"):
                data = (0.02 * rng.standard_normal(dims)).astype(np.float32)
        else:
            std = 0.3 * (256 / dims[-1]) ** 0.5 / 16**0.5
            data = (rng.standard_normal(dims, dtype=np.float32) * std).astype(np.float16)
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)


def _write_sparse(path: Path, m: ZooModel, quant: str) -> None:
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    q8 = gguf.GGMLQuantizationType.Q8_0
    tmp = path.with_suffix(f".{os.getpid()}.part")
    w = gguf.GGUFWriter(str(tmp), m.arch)
    ftype = (
        getattr(gguf.LlamaFileType, f"MOSTLY_{quant}_M", None)
        or gguf.LlamaFileType[f"MOSTLY_{quant}"]
    )
    expert_t = gguf.GGMLQuantizationType[m.expert_quant] if m.expert_quant else None
    if expert_t == gguf.GGMLQuantizationType.MXFP4:
        ftype = gguf.LlamaFileType.MOSTLY_MXFP4_MOE  # what llama-quantize labels such a file
    _add_metadata(w, m, int(ftype))
    total = 0
    align = w.data_alignment
    for name, dims in tensor_shapes(m):
        n = int(np.prod(dims))
        if _is_norm(name):
            t, nbytes = gguf.GGMLQuantizationType.F32, 4 * n
        elif expert_t is not None and "_exps.weight" in name:
            eblock, ebytes = gguf.GGML_QUANT_SIZES[expert_t]
            assert dims[-1] % eblock == 0, (name, dims)
            t, nbytes = expert_t, n // eblock * ebytes
        elif dims[-1] % block == 0:
            t, nbytes = qtype, n // block * block_bytes
        else:
            t, nbytes = q8, n // 32 * 34
        w.add_tensor_info(name, dims, np.dtype(np.float32), nbytes, raw_dtype=t)
        total += -(-nbytes // align) * align
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    size = tmp.stat().st_size
    start = -(-size // align) * align
    with tmp.open("r+b") as f:
        f.truncate(start + total)  # a hole: no disk blocks, never read by a dry run
    tmp.replace(path)


@dataclass(frozen=True)
class ZooEntry:
    """A family with both of its files (for parametrised tests and the bench)."""

    family: str
    small: ZooModel = field(repr=False)
    full: ZooModel = field(repr=False)


def entries(families: tuple[str, ...] = FAMILIES) -> list[ZooEntry]:
    return [ZooEntry(f, SMALL[f], FULL[f]) for f in families]


if __name__ == "__main__":
    import sys

    for fam in sys.argv[1:] or FAMILIES:
        print(fam, small_path(fam), full_path(fam))
