"""Engine overhead: QuantDesk's engine process vs a bare llama-cpp-python loop, in one run.

Both load the MEDIUM generated model (Q4_K_M) with the same n_ctx and threads and generate the same
number of tokens from the same raw prompt with greedy sampling.  Runs alternate (engine, bare,
engine, bare, ...) so that drift of the machine hits both.  Prints the generation tok/s ratio
(goal >= 0.98) and the time-to-first-token difference (goal <= 30 ms).

    .venv/bin/python -m bench.engine_overhead [--rounds 5] [--tokens 128] [--quant Q4_K_M] [--busy 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from app.core.engine import Engine, GenerationStats, Sampling
from app.core.engine.protocol import GenerateRequest
from tests import modelfactory

PROMPT = (
    "The memory plan of a quantized language model depends on the weights, the key-value cache "
    "and the compute buffers. Explain how each of them grows with the context size."
)


def bare_run(llm, tokens: list[int], n: int) -> tuple[float, float]:
    """TTFT and gen tok/s of the plain llama-cpp-python generate loop (same method as the engine)."""
    t0 = time.perf_counter()
    t_first = t_last = t0
    count = 0
    for _tok in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        now = time.perf_counter()
        if count == 0:
            t_first = now
        t_last = now
        count += 1
        if count >= n:
            break
    return t_first - t0, (count - 1) / (t_last - t_first)


def engine_run(engine: Engine, req: GenerateRequest) -> tuple[float, float, GenerationStats]:
    """TTFT and gen tok/s as the caller sees them: wall clock in the parent, IPC included."""
    t0 = time.perf_counter()
    t_first = t_last = t0
    stats = None
    for item in engine.generate(req):
        now = time.perf_counter()
        if isinstance(item, GenerationStats):
            stats = item
            break
        if t_first == t0:
            t_first = now
        t_last = now
    assert stats is not None
    return t_first - t0, (stats.tokens - 1) / (t_last - t_first), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads on both sides; 0: the engine chooses (free cores), the baseline takes all",
    )
    ap.add_argument(
        "--busy",
        type=int,
        default=0,
        help="processes keeping a core busy meanwhile (a competing load)",
    )
    args = ap.parse_args()
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", "import time\nt=time.time()+900\nwhile time.time()<t: pass"]
        )
        for _ in range(args.busy)
    ]  # bounded: each ends by itself after 15 minutes, and is killed when the bench ends
    try:
        _measure(args)
    finally:
        for h in hogs:
            h.kill()
            h.wait(10)


def _measure(args: argparse.Namespace) -> None:
    path = str(modelfactory.model_path(args.quant, modelfactory.MEDIUM))

    import llama_cpp  # the bench process is the baseline; the engine runs in its own child

    bare_threads = args.threads or (os.cpu_count() or 1)
    bare = llama_cpp.Llama(path, n_ctx=args.ctx, n_threads=bare_threads, verbose=False)
    greedy = Sampling.preset("greedy")

    def request(r: int) -> tuple[GenerateRequest, list[int]]:
        # A new first word each round: neither side may reuse the previous round's KV prefix.
        prompt = f"Round {r}: {PROMPT}"
        req = GenerateRequest(
            prompt=prompt, max_tokens=args.tokens, sampling=greedy, ignore_eos=True
        )
        return req, bare.tokenize(prompt.encode(), add_bos=True, special=True)

    ours: list[tuple[float, float, GenerationStats]] = []
    theirs: list[tuple[float, float]] = []
    with Engine() as engine:
        info = engine.load(path, n_ctx=args.ctx, n_threads=args.threads or None)
        print(f"engine threads {info.n_threads}, baseline threads {bare_threads}")
        req, tokens = request(0)
        engine_run(engine, req)  # warm-up both sides once
        bare_run(bare, tokens, 8)
        for r in range(1, args.rounds + 1):
            req, tokens = request(r)
            ours.append(engine_run(engine, req))
            theirs.append(bare_run(bare, tokens, args.tokens))
            print(
                f"round {r}: engine {ours[-1][1]:6.2f} tok/s ttft {ours[-1][0] * 1000:6.1f} ms"
                f" | bare {theirs[-1][1]:6.2f} tok/s ttft {theirs[-1][0] * 1000:6.1f} ms"
            )
    e_tps = statistics.median(o[1] for o in ours)
    b_tps = statistics.median(t[1] for t in theirs)
    e_ttft = statistics.median(o[0] for o in ours)
    b_ttft = statistics.median(t[0] for t in theirs)
    assert ours[-1][2].prompt_tokens == len(tokens), "the two sides saw different prompts"
    print(
        f"model {args.quant} ({path}), n_ctx {args.ctx}, threads {args.threads}, {args.tokens} tokens,"
        f" {args.busy} competing busy processes"
    )
    print(
        f"generation tok/s: engine {e_tps:.2f}, bare {b_tps:.2f}, ratio {e_tps / b_tps:.3f} (goal >= 0.98)"
    )
    print(
        f"time to first token: engine {e_ttft * 1000:.1f} ms, bare {b_ttft * 1000:.1f} ms, "
        f"difference {(e_ttft - b_ttft) * 1000:+.1f} ms (goal <= 30 ms)"
    )


if __name__ == "__main__":
    main()
