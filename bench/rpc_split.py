"""A model split over two loopback workers vs loaded locally: speed, first token, bytes per token.

For the tiny and the MEDIUM generated models (Q4_K_M): load locally (1 thread), then split in thirds
-- the first layers here, the middle on worker 1, the last and the output layer on worker 2, each
worker with 1 thread -- and generate the same tokens greedily.  Prints generation tok/s and TTFT
of both and their ratio, and the bytes that crossed loopback per generated token (the ``lo``
interface's counters over the generation only; other traffic on loopback at the same time inflates
it, so the smallest of the rounds is kept, less what a local run sees).  The split's prompt runs on
three processes of one thread each and the local one on one thread: compare TTFT with that in mind.

    .venv/bin/python -m bench.rpc_split [--tokens 64] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import psutil

from app.core import rpc
from app.core.engine import Engine
from app.core.engine.protocol import GenerateRequest, Sampling
from tests import modelfactory

PROMPT = "Explain how the memory of a quantized language model grows with the context size."


def _lo_bytes() -> int:
    nics = psutil.net_io_counters(pernic=True)
    lo = nics.get("lo") or nics.get("lo0")
    return int(lo.bytes_sent) if lo else 0


def _run(engine: Engine, tokens: int) -> tuple[float, float, int]:
    req = GenerateRequest(
        prompt=PROMPT,
        max_tokens=tokens,
        sampling=Sampling.preset("greedy"),
        ignore_eos=True,
        stream=False,
    )
    before = _lo_bytes()
    stats = engine.complete(req)
    sent = _lo_bytes() - before
    return stats.ttft_s, stats.gen_tok_s, sent // max(stats.tokens, 1)


def bench_model(shape: modelfactory.ModelShape, tokens: int, rounds: int) -> dict[str, Any]:
    path = modelfactory.model_path("Q4_K_M", shape)
    units = shape.n_layer + 1
    local_n = units // 3
    n1 = (units - local_n) // 2
    n2 = units - local_n - n1
    procs = [rpc.start_worker(rpc.free_port()) for _ in range(2)]
    try:
        addrs = tuple(f"127.0.0.1:{p.args[p.args.index('--port') + 1]}" for p in procs)  # type: ignore[index, union-attr]
        out: dict[str, Any] = {
            "model": path.name,
            "n_layer": shape.n_layer,
            "layers": [local_n, n1, n2],
        }
        with Engine() as e:
            for mode in ("local", "split"):
                extra: dict[str, Any] = {}
                if mode == "split":
                    extra = {
                        "n_gpu_layers": units - local_n,
                        "rpc_servers": addrs,
                        "tensor_split": (float(n1), float(n2)),
                    }
                e.load(path, n_ctx=1024, n_threads=1, **extra)
                runs = [_run(e, tokens) for _ in range(rounds)]
                out[mode] = {
                    "ttft_s": statistics.median(r[0] for r in runs),
                    "gen_tok_s": statistics.median(r[1] for r in runs),
                    "lo_bytes_per_token": min(r[2] for r in runs),
                }
        out["gen_ratio"] = out["split"]["gen_tok_s"] / out["local"]["gen_tok_s"]
        out["ttft_ratio"] = out["split"]["ttft_s"] / out["local"]["ttft_s"]
        # What the split itself sends: the loopback bytes of a local run are other traffic.
        out["bytes_per_token"] = max(
            0, out["split"]["lo_bytes_per_token"] - out["local"]["lo_bytes_per_token"]
        )
        return out
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [
        bench_model(s, args.tokens, args.rounds) for s in (modelfactory.TINY, modelfactory.MEDIUM)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        loc, sp = r["local"], r["split"]
        print(
            f"{r['model']} ({r['n_layer']} layers, layers {r['layers']} here/worker1/worker2): "
            f"gen {sp['gen_tok_s']:.1f} vs {loc['gen_tok_s']:.1f} tok/s local (ratio {r['gen_ratio']:.2f}); "
            f"TTFT {1000 * sp['ttft_s']:.1f} vs {1000 * loc['ttft_s']:.1f} ms (ratio {r['ttft_ratio']:.2f}); "
            f"{r['bytes_per_token'] / 1000:.1f} kB over the network per generated token"
        )


if __name__ == "__main__":
    main()
