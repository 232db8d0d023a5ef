"""KL pass speed: QuantDesk's teacher-forced scoring vs a bare llama-cpp-python logits loop.

Both run the MEDIUM generated model (Q4_K_M by default) over the same chunks of the shipped
reference text (resources/eval), with the same context, batch and thread count, and compute the
logits of every position.  QuantDesk's pass (an engine child answering ScoreRequest) also turns
them into log-probabilities and compares them with the reference variant's (KL, top-1, NLL); the
bare loop (``Llama(logits_all=True).eval``) in its own process only computes and copies them.
Rounds alternate (and swap who goes first) so that drift of the machine hits both; prints the
median seconds per pass and the ratio bare / QuantDesk (goal >= 0.9: scoring may add at most
~10 % to the forward passes) -- as the median of the per-round wall-clock ratios, and as the ratio
of the CPU time both processes spent (steadier when other programs share the cores).

    .venv/bin/python -m bench.compare_speed [--rounds 3] [--tokens 1536] [--quant Q4_K_M]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from app.core import paths
from app.core.engine import Engine
from app.core.engine.protocol import ScoreRequest, TokenizeRequest
from app.core.quality import Drift
from tests import modelfactory

_BARE = r"""
import json, sys, time
import llama_cpp
model, chunks_file, n_ctx, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
chunks = json.load(open(chunks_file))
llm = llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_batch=512, n_threads=threads,
                      logits_all=True, verbose=False)
print("ready", flush=True)
for line in sys.stdin:
    t0, c0 = time.perf_counter(), time.process_time()
    total = 0.0
    for chunk in chunks:
        llm.reset()
        llm.eval(chunk[:-1])  # the positions the KL pass scores: each predicts the next token
        total += float(llm.scores[len(chunk) - 2, 0])  # touch the copied logits
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": wall, "cpu": cpu, "check": total}), flush=True)
"""


def _chunks(engine: Engine, n_tokens: int, size: int) -> list[list[int]]:
    text = (paths.resources_dir() / "eval" / "reference.txt").read_text(encoding="utf-8")
    bos = engine.request(TokenizeRequest("", add_bos=True))
    body = engine.request(TokenizeRequest(text, add_bos=False))[:n_tokens]
    step = size - len(bos)
    return [bos + body[i : i + step] for i in range(0, len(body), step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=1536, help="reference-text tokens per pass")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--reference", default="Q8_0")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    n_ctx = 512
    variant = modelfactory.model_path(args.quant, modelfactory.MEDIUM)
    reference = modelfactory.model_path(args.reference, modelfactory.MEDIUM)
    opts = {"n_ctx": n_ctx, "n_threads": args.threads}

    with Engine() as ref_engine:  # the reference's distributions, made once and not timed
        ref_engine.load(reference, **opts)
        chunks = _chunks(ref_engine, args.tokens, n_ctx)
        blobs = [ref_engine.request(ScoreRequest(tokens=c, start=1)).reference for c in chunks]
    positions = sum(len(c) - 1 for c in chunks)
    print(f"model {variant.name} vs reference {reference.name}: {len(chunks)} chunks, "
          f"{positions} positions, {args.threads} threads")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp, Engine() as engine:
        chunks_file = os.path.join(tmp, "chunks.json")
        with open(chunks_file, "w") as f:
            json.dump(chunks, f)
        bare = subprocess.Popen(
            [sys.executable, "-c", _BARE, str(variant), chunks_file, str(n_ctx), str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert bare.stdout is not None and bare.stdin is not None
            assert bare.stdout.readline().strip() == "ready"
            engine.load(variant, **opts)
            child = psutil.Process(engine.pid)
            ours_s: list[float] = []
            bare_s: list[float] = []
            ours_cpu: list[float] = []
            bare_cpu: list[float] = []
            drift = Drift()
            for r in range(args.rounds):
                # Alternate who goes first: a busy neighbour then slows both sides alike.
                for side in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
                    if side == "ours":
                        t0, c0 = time.perf_counter(), sum(child.cpu_times()[:2])
                        drift = Drift()
                        for c, blob in zip(chunks, blobs, strict=True):
                            req = ScoreRequest(tokens=c, start=1, reference=blob)
                            drift.add(engine.request(req))
                        ours_s.append(time.perf_counter() - t0)
                        ours_cpu.append(sum(child.cpu_times()[:2]) - c0)
                    else:
                        bare.stdin.write("go\n")
                        bare.stdin.flush()
                        answer = json.loads(bare.stdout.readline())
                        bare_s.append(answer["seconds"])
                        bare_cpu.append(answer["cpu"])
                print(
                    f"round {r + 1}: quantdesk {ours_s[-1]:.2f} s ({ours_cpu[-1]:.2f} s CPU), "
                    f"bare {bare_s[-1]:.2f} s ({bare_cpu[-1]:.2f} s CPU)"
                )
        finally:
            if bare.stdin is not None:
                bare.stdin.close()
            bare.wait(30)
    summary = drift.summary()
    print(f"KL pass: kld_mean {summary['kld_mean']:.4f}, top-1 {summary['top1_agreement']:.3f}")
    ours, base = statistics.median(ours_s), statistics.median(bare_s)
    print(f"quantdesk KL pass: median {ours:.2f} s ({positions / ours:.1f} positions/s)")
    print(
        f"bare llama-cpp-python logits loop: median {base:.2f} s ({positions / base:.1f} positions/s)"
    )
    paired = statistics.median(b / o for b, o in zip(bare_s, ours_s, strict=True))
    cpu = sum(bare_cpu) / sum(ours_cpu)
    print(f"ratio bare / quantdesk (goal >= 0.9): wall, median of paired rounds {paired:.3f}; "
          f"CPU time, all rounds {cpu:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
