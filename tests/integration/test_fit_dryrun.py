"""The memory plan against real llama.cpp: dry runs, real loads, header-only files, remote headers.

One engine child serves every dry run of the module (as in the app).  Figures llama.cpp logs in
MiB with two decimals are compared within that precision (0.005 MiB).
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import pytest

from app.core import fit
from app.core.dryrun import DryRunner
from app.core.engine import Engine
from app.core.engine.protocol import GenerateRequest, MemorySettings, TokenizeRequest
from app.core.gguf_header import GGUFError, read_local, read_url
from tests import fitshapes, modelfactory

LOG_PRECISION = int(0.005 * fit.MIB) + 1


def _dry(runner: DryRunner, path: Path, n_ctx: int, ngl: int = 0, tk="f16", tv="f16"):
    spec = read_local(path)
    p, digest = runner.prepare(path, spec)
    return spec, runner.run(p, digest, n_ctx, ngl, MemorySettings(type_k=tk, type_v=tv))


def _sparse_copy(src: Path, dst: Path) -> Path:
    spec = read_local(src)
    with src.open("rb") as f, dst.open("wb") as out:
        out.write(f.read(spec.data_offset))
        out.truncate(src.stat().st_size)
    return dst


@pytest.mark.parametrize("quant", ["F16", *modelfactory.QUANTS])
def test_weight_bytes_equal_llama_cpp(runner, quant):
    path = modelfactory.model_path(quant)
    spec, dry = _dry(runner, path, 512)
    assert spec.weights_bytes == dry.model_bytes  # llama_model_size()
    reader = gguf.GGUFReader(str(path))  # llama.cpp's own gguf-py reader
    theirs = {t.name: int(t.n_bytes) for t in reader.tensors}
    assert {t.name: t.nbytes for t in spec.tensors} == theirs
    per_layer = [0] * spec.n_layer
    for name, n in theirs.items():
        if name.startswith("blk."):
            per_layer[int(name.split(".")[1])] += n
    assert spec.layer_bytes() == per_layer
    assert spec.input_bytes + sum(per_layer) + spec.output_bytes == spec.weights_bytes


@pytest.mark.parametrize("quant", ["Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q8_0", "F16"])
def test_dry_run_and_plan_match_a_real_load(runner, tmp_path, quant):
    path = modelfactory.model_path(quant)
    spec, dry = _dry(runner, path, 1024)
    plan = fit.plan_memory(spec, dry, 1024)
    with Engine(log_dir=tmp_path) as eng:
        info = eng.load(path, n_ctx=1024)
    bufs = info.buffers
    assert abs(bufs["CPU compute"] - dry.compute["CPU"]) <= LOG_PRECISION
    assert abs(bufs["CPU KV"] - plan.kv_bytes) <= LOG_PRECISION
    assert abs(bufs.get("CPU output", 0) - dry.output_bytes) <= LOG_PRECISION
    # The repacking rule predicts which tensors llama.cpp copies into its extra buffers.
    copied = sum(v for k, v in bufs.items() if k.split()[0] in dry.extra_buffers)
    assert abs(copied - plan.repacked_bytes) <= LOG_PRECISION * len(dry.extra_buffers or [1])
    if quant in ("Q4_0", "Q4_K_M"):
        assert plan.repacked_bytes > 0.6 * spec.weights_bytes  # most weights repacked here


@pytest.mark.parametrize("cache", ["f16", "q8_0", "q4_0"])
def test_kv_equals_llama_cpp_log(runner, cache):
    shapes = [
        (modelfactory.model_path("Q4_K_M"), (256, 1000, 4096)),
        (fitshapes.write_header_only(None, fitshapes.MISTRAL_7B, "Q4_K_M"), (512, 4096, 12000)),
        (fitshapes.write_header_only(None, fitshapes.LLAMA2_7B, "Q4_K_M"), (2048,)),
    ]
    for path, contexts in shapes:
        for n_ctx in contexts:
            spec, dry = _dry(runner, path, n_ctx, 0, cache, cache)
            assert abs(dry.kv_bytes - fit.kv_bytes(spec, n_ctx, cache, cache)) <= LOG_PRECISION, (
                path.name,
                n_ctx,
            )


def test_header_only_sparse_file_plans_like_the_full_file(runner, tmp_path):
    for quant in ("Q4_K_M", "Q8_0"):
        full = modelfactory.model_path(quant)
        sparse = _sparse_copy(full, tmp_path / f"sparse-{quant}.gguf")
        assert sparse.stat().st_size == full.stat().st_size
        assert sparse.stat().st_blocks * 512 < full.stat().st_size  # really a hole
        _, a = _dry(runner, full, 2048)
        spec, b = _dry(runner, sparse, 2048)
        assert asdict(a) == asdict(b)
        assert a.compute["CPU"] > 0


def test_dry_run_cache_avoids_repeating_work(runner):
    path = modelfactory.model_path("Q6_K")
    _dry(runner, path, 768)
    before = runner.runs
    _dry(runner, path, 768)
    assert runner.runs == before
    _dry(runner, path, 768, 0, "q8_0", "q8_0")
    assert runner.runs == before + 1


# ---- remote headers -------------------------------------------------------------------------
class _RangeServer:
    """Serves one file with HTTP Range on 127.0.0.1 and counts the body bytes it sends."""

    def __init__(self, path: Path, honour_range: bool = True) -> None:
        self.path, self.served, self.honour = path, 0, honour_range
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                size = outer.path.stat().st_size
                start, end = 0, size - 1
                rng = self.headers.get("Range")
                if rng and outer.honour:
                    a, b = rng.removeprefix("bytes=").split("-")
                    start, end = int(a), min(int(b) if b else size - 1, size - 1)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                    end = min(end, start + (4 << 20))  # never stream gigabytes of a hole
                self.send_header("Content-Length", str(end - start + 1))
                self.end_headers()
                with outer.path.open("rb") as f:
                    f.seek(start)
                    body = f.read(end - start + 1)
                try:
                    self.wfile.write(body)
                    outer.served += len(body)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/models/{self.path.name}"

    def __enter__(self) -> _RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_remote_header_costs_only_header_bytes_and_plans_like_local(runner):
    path = fitshapes.write_header_only(None, fitshapes.MISTRAL_7B, "Q4_K_M")  # 4.4 GB file
    local = read_local(path)
    with _RangeServer(path) as srv:
        spec = read_url(srv.url)
        served = srv.served
        assert served == spec.header_bytes_read
        # Progressive reads (256 KiB, doubling) cost less than twice the header.
        assert local.data_offset <= served < 2 * local.data_offset + (256 << 10)
        assert served < path.stat().st_size / 1000
        assert [asdict(t) for t in spec.tensors] == [asdict(t) for t in local.tensors]
        sparse, digest = runner.prepare(srv.url, spec)
        assert srv.served == served  # the sparse file is built from the bytes already read
    assert sparse.stat().st_size == path.stat().st_size
    remote = runner.run(sparse, digest, 4096)
    _, here = _dry(runner, path, 4096)
    assert (remote.compute, remote.kv_bytes, remote.model_bytes) == (
        here.compute,
        here.kv_bytes,
        here.model_bytes,
    )


def test_server_without_range_is_refused(tmp_path):
    big = fitshapes.write_header_only(None, fitshapes.LLAMA2_7B, "Q4_K_M")
    with _RangeServer(big, honour_range=False) as srv, pytest.raises(GGUFError, match="Range"):
        read_url(srv.url)


def _rss(pid: int, key: str = "RssAnon") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/PID/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_plan_covers_the_anonymous_memory_of_a_full_context(runner, tmp_path):
    """A prompt filling the context: what the engine child holds in anonymous memory (llama.cpp's
    buffers, the ggml work buffer, the runtime) stays within the plan, and close to it."""
    n_ctx = 8192  # the ggml work buffer grows with context x batch: 32 MiB here
    path = modelfactory.model_path("Q4_K_M")
    spec, dry = _dry(runner, path, n_ctx)
    plan = fit.plan_memory(spec, dry, n_ctx)
    with Engine(log_dir=tmp_path) as eng:
        eng.load(path, n_ctx=n_ctx)
        per_phrase = len(eng.request(TokenizeRequest(" the model reads the plan" * 100))) / 100
        text = " the model reads the plan" * int((n_ctx - 64) / per_phrase)
        stats = eng.complete(
            GenerateRequest(prompt=text, max_tokens=8, stream=False, ignore_eos=True)
        )
        anon, rss = _rss(eng.pid), _rss(eng.pid, "VmRSS")
    assert n_ctx - 256 < stats.prompt_tokens <= n_ctx - 8  # the context really was filled
    # Everything but the model file's mapped pages: repacked weights, KV, compute, work, runtime.
    planned = plan.ram_bytes - plan.mapped_resident_bytes
    print(f"anon {anon / fit.MIB:.1f} of {planned / fit.MIB:.1f} MiB, rss {rss / fit.MIB:.1f} MiB")
    assert anon <= planned  # (the runtime's file-backed pages are in `planned` too)
    # The whole resident set, the model's mapped pages and the runtime's libraries included.
    assert plan.ram_bytes - 24 * fit.MIB <= rss <= plan.ram_bytes, plan.ram_bytes
