"""Server overhead: streamed tokens through the local server vs the engine directly, in one run.

Both sides load the same model (the MEDIUM generated model at Q4_K_M by default; ``--tiny`` for the
tiny one, where the per-token cost of HTTP shows most) with the same context and threads, and
stream the same raw prompt with greedy sampling and a fixed token count.  Rounds alternate (engine,
server, engine, ...) so drift of the machine hits both.  The server side is measured as a client
sees it: a plain HTTP client reading the event stream (no SDK parsing in the figures).  Prints the
streamed tok/s ratio (goal >= 0.97) and the time-to-first-token difference (goal <= 20 ms), then
runs ``--clients`` concurrent streaming clients on the one model (they queue on it) and reports
errors and the total tok/s.

    .venv/bin/python -m bench.server_overhead [--rounds 5] [--tokens 128] [--clients 8] [--tiny]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from app.core.engine import Engine, GenerationStats, Sampling
from app.core.engine.protocol import GenerateRequest
from tests import modelfactory

PROMPT = (
    "The memory plan of a quantized language model depends on the weights, the key-value cache "
    "and the compute buffers. Explain how each of them grows with the context size."
)
GREEDY = {"temperature": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0}


def engine_run(engine: Engine, prompt: str, n: int) -> tuple[float, float, int]:
    """TTFT, streamed tok/s and tokens as the engine's caller sees them."""
    req = GenerateRequest(
        prompt=prompt, max_tokens=n, sampling=Sampling.preset("greedy"), ignore_eos=True
    )
    t0 = time.perf_counter()
    t_first = t_last = 0.0
    stats = None
    for item in engine.generate(req):
        now = time.perf_counter()
        if isinstance(item, GenerationStats):
            stats = item
            break
        if not t_first:
            t_first = now
        t_last = now
    assert stats is not None
    return t_first - t0, (stats.tokens - 1) / (t_last - t_first), stats.tokens


def server_run(port: int, model: str, prompt: str, n: int) -> tuple[float, float, int]:
    """TTFT, streamed tok/s and tokens through /v1/completions (stream, usage included)."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        "seed": 1,
        **GREEDY,
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:500]!r}")
    t_first = t_last = 0.0
    tokens = 0
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if "error" in event:
            raise RuntimeError(event["error"]["message"])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        elif event["choices"] and event["choices"][0]["text"]:
            now = time.perf_counter()
            if not t_first:
                t_first = now
            t_last = now
    conn.close()
    return t_first - t0, (tokens - 1) / (t_last - t_first), tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument(
        "--tiny", action="store_true", help="the tiny model (HTTP cost per token shows)"
    )
    args = ap.parse_args()
    shape = modelfactory.TINY if args.tiny else modelfactory.MEDIUM
    path = Path(modelfactory.model_path(args.quant, shape))

    home = tempfile.mkdtemp(prefix="qd-bench-server-")
    env = {**os.environ, "QUANTDESK_HOME": home}  # the bench's own library, nothing of the user's
    subprocess.run(
        [sys.executable, "-m", "app", "import", str(path)], env=env, check=True, capture_output=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server runs as a user runs it: its own process, so the client's Python is not its GIL.
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--port",
            str(port),
            "--ctx",
            str(args.ctx),
            "--threads",
            str(args.threads),
            "--ttl",
            "0",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_listening(port, server)
    name = path.name
    ours: list[tuple[float, float, int]] = []
    theirs: list[tuple[float, float, int]] = []
    try:
        with Engine() as engine:
            engine.load(path, n_ctx=args.ctx, n_threads=args.threads)
            # Warm-up: both loaded (the server loads on first use), both paths run once.
            engine_run(engine, "Warm-up. " + PROMPT, 8)
            server_run(port, name, "Warm-up. " + PROMPT, 8)
            loaded = json.loads(_get(port, "/health"))["loaded"]
            assert loaded[0]["n_ctx"] == args.ctx, f"the server planned {loaded}"
            for r in range(1, args.rounds + 1):
                # A new first word each round: neither side may reuse the previous KV prefix.
                prompt = f"Round {r}: {PROMPT}"
                theirs.append(engine_run(engine, prompt, args.tokens))
                ours.append(server_run(port, name, prompt, args.tokens))
                print(
                    f"round {r}: server {ours[-1][1]:7.2f} tok/s ttft {ours[-1][0] * 1000:6.1f} ms"
                    f" | engine {theirs[-1][1]:7.2f} tok/s ttft {theirs[-1][0] * 1000:6.1f} ms"
                )
        assert all(o[2] == args.tokens for o in ours + theirs), "a side stopped early"
        s_tps = statistics.median(o[1] for o in ours)
        e_tps = statistics.median(t[1] for t in theirs)
        s_ttft = statistics.median(o[0] for o in ours)
        e_ttft = statistics.median(t[0] for t in theirs)
        print(f"model {name}, n_ctx {args.ctx}, threads {args.threads}, {args.tokens} tokens")
        print(
            f"streamed tok/s: server {s_tps:.2f}, engine {e_tps:.2f}, "
            f"ratio {s_tps / e_tps:.3f} (goal >= 0.97)"
        )
        print(
            f"time to first token: server {s_ttft * 1000:.1f} ms, engine {e_ttft * 1000:.1f} ms, "
            f"difference {(s_ttft - e_ttft) * 1000:+.1f} ms (goal <= 20 ms)"
        )
        concurrent(port, name, args)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(port, "/health")
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited: {proc.stderr.read() if proc.stderr else ''}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not come up") from None
            time.sleep(0.2)


def concurrent(port: int, name: str, args: argparse.Namespace) -> None:
    """``--clients`` streams at once on one model: every one must succeed (they queue)."""
    results: list[tuple[float, float, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            out = server_run(port, name, f"Client {i}: {PROMPT}", args.tokens)
            with lock:
                results.append(out)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    wall = time.perf_counter() - t0
    total = sum(r[2] for r in results)
    print(
        f"{args.clients} concurrent streaming clients on one model: {len(results)} done, "
        f"{len(errors)} errors, {total} tokens in {wall:.2f} s = {total / wall:.2f} tok/s total"
        + (f"; first error: {errors[0]}" if errors else "")
    )


if __name__ == "__main__":
    main()
