"""Generate small llama-architecture GGUF models and quantize them with llama.cpp's own quantizer.

Used by the tests (tiny model, a few MB) and by ``bench/`` (medium model, ~200M parameters).  The F16
base is written by ``app.core.synthetic_model`` (the app's ``--self-test`` uses it too; its names are
re-exported here).  Files are cached by their parameters, so a test run generates each model once
(and later runs reuse it).

Quantization runs in a child Python process: the test process itself never imports llama_cpp, just
like the app's GUI process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.core.synthetic_model import (  # noqa: F401 - re-exported
    CHATML_TEMPLATE,
    ModelShape,
    _vocab,
    write_f16_model,
)

QUANTS = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
TINY = ModelShape()
MEDIUM = ModelShape(
    n_vocab=32000,
    n_embd=1024,
    n_layer=16,
    n_head=16,
    n_head_kv=4,
    n_ff=2816,
    weight_std=0.3,
    name="quantdesk-medium",
)


def cache_root() -> Path:
    root = os.environ.get("QUANTDESK_TEST_MODELS")
    path = Path(root) if root else Path(__file__).resolve().parents[1] / ".cache" / "test-models"
    path.mkdir(parents=True, exist_ok=True)
    return path


_QUANTIZE_SCRIPT = """
import sys, llama_cpp
src, dst, ftype, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = ftype
params.nthread = threads
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
sys.exit(1 if rc else 0)
"""


def _ftype(quant: str) -> int:
    import gguf

    return int(gguf.LlamaFileType[f"MOSTLY_{quant}"])


def quantize(src: Path, dst: Path, quant: str, threads: int | None = None) -> Path:
    """Quantize with llama.cpp's own quantizer (``llama_model_quantize``) in a child process."""
    tmp = dst.with_suffix(f".{os.getpid()}.part")
    cmd = [sys.executable, "-c", _QUANTIZE_SCRIPT, str(src), str(tmp), str(_ftype(quant))]
    cmd.append(str(threads or os.cpu_count() or 1))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not tmp.exists():
        raise RuntimeError(f"quantizing to {quant} failed:\n{result.stderr[-2000:]}")
    tmp.replace(dst)
    return dst


def model_path(quant: str = "Q8_0", shape: ModelShape = TINY) -> Path:
    """Path of the model at ``quant`` (or "F16"), generating and quantizing it on first use."""
    folder = cache_root() / f"{shape.name}-{shape.key()}"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"{shape.name}-F16.gguf"
    if not base.exists():
        tmp = folder / f"base.{os.getpid()}.tmp"  # parallel sessions may race: last replace wins
        write_f16_model(tmp, shape)
        tmp.replace(base)
    if quant == "F16":
        return base
    dst = folder / f"{shape.name}-{quant}.gguf"
    if not dst.exists():
        quantize(base, dst, quant)
    return dst


def all_quants(shape: ModelShape = TINY) -> dict[str, Path]:
    return {q: model_path(q, shape) for q in QUANTS}


if __name__ == "__main__":
    which = MEDIUM if "--medium" in sys.argv else TINY
    for q, p in all_quants(which).items():
        print(q, p, p.stat().st_size)
