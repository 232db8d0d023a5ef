"""Download throughput: a verified ``download`` against a plain streaming GET, same file, same run.

The Hub imitation (tests/hubsim.py) serves a >= 500 MB GGUF from a separate process on 127.0.0.1,
so the server does not compete with the client for the GIL.  Three transfers are timed, best of
``--rounds`` each, interleaved so that load from other processes hits all of them alike:

* ``plain GET -> discard``: stream the body and drop it (no hashing, no disk);
* ``plain GET -> file``: stream the body into a file (no hashing) -- what ``curl -o`` does;
* ``quantdesk pull``: :func:`app.core.download.download` -- write, SHA-256 while the bytes arrive,
  header check, atomic move, library record.

The ratio pull / plain-GET-to-file is the cost of verification (goal >= 0.95: hashing overlaps the
transfer).  ``--link-mbps`` throttles the imitation to a real link's speed (the default run
measures unlimited loopback, then a 1 Gbit/s link): at loopback speed on a small machine the
server, the socket copy and SHA-256 compete for the same cores, so that is the worst case.
Usage: ``python bench/download_throughput.py [--size-mb 520] [--rounds 3] [--link-mbps 0 1000]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPO = "bench/big-GGUF"
NAME = "big-Q8_0.gguf"
_SERVER = """
import sys
from pathlib import Path
from tests.hubsim import HubSim
with HubSim({%r: {%r: Path(%r)}}) as sim:
    sim.throttle(%r)
    print(sim.endpoint, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
"""


def big_gguf(size_mb: int) -> Path:
    """A valid GGUF (one I8 tensor of random bytes) of about ``size_mb`` MB, cached."""
    import gguf

    from tests import modelfactory

    path = modelfactory.cache_root() / f"bench-big-{size_mb}mb.gguf"
    if path.exists():
        return path
    rows = size_mb * 1_000_000 // 4096
    data = np.random.default_rng(0).integers(-128, 128, size=(rows, 4096), dtype=np.int8)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("bench-big")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    w.add_tensor("token_embd.weight", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def plain_get(url: str, sink: Path | None) -> float:
    from huggingface_hub import get_session

    start = time.perf_counter()
    handle = sink.open("wb", buffering=0) if sink else None
    try:
        with get_session().stream("GET", url, headers={"Accept-Encoding": "identity"}) as r:
            r.raise_for_status()
            for chunk in r.iter_raw():
                if handle is not None:
                    handle.write(chunk)
    finally:
        if handle is not None:
            handle.close()
    return time.perf_counter() - start


def pull(home: Path) -> float:
    from app.core import download, hub
    from app.core.library import Library

    library = Library(folder=home / "models", db_path=home / "db.sqlite3")
    variant = hub.pick_variant(hub.list_variants(REPO), NAME)
    start = time.perf_counter()
    steps = list(download.download(variant, library, margin_bytes=0))
    last = steps[-1] if steps else None
    elapsed = time.perf_counter() - start
    assert last is not None and last.state == "done", last
    for m in library.list():
        library.remove(m)
    return elapsed


def measure(path: Path, rounds: int, link_mbps: float) -> dict[str, list[float]]:
    """Best-of-``rounds`` timings of the three transfers against a fresh imitation process."""
    rate = link_mbps * 1e6 / 8 if link_mbps else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER % (REPO, NAME, str(path), rate)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        endpoint = server.stdout.readline().strip()  # type: ignore[union-attr]
        os.environ.update(
            HF_ENDPOINT=endpoint,
            NO_PROXY="127.0.0.1,localhost",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
        )
        from app.core import hub

        url = hub.file_url(REPO, NAME, "main")
        times: dict[str, list[float]] = {"discard": [], "file": [], "pull": []}
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
            home = Path(tmp)
            for _ in range(rounds):
                times["discard"].append(plain_get(url, None))
                times["file"].append(plain_get(url, home / "plain.bin"))
                (home / "plain.bin").unlink()
                times["pull"].append(pull(home))
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(timeout=30)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=520)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--link-mbps", type=float, nargs="+", default=[0, 1000], help="0: unlimited loopback"
    )
    args = parser.parse_args()
    path = big_gguf(args.size_mb)
    size = path.stat().st_size
    print(f"file: {size / 1e6:.0f} MB from the Hub imitation on 127.0.0.1; best of {args.rounds}")
    for link in args.link_mbps:
        times = measure(path, args.rounds, link)
        best = {k: min(v) for k, v in times.items()}
        print(f"link: {'unlimited loopback' if not link else f'{link:g} Mbit/s'}")
        for label, key in (
            ("plain GET -> discard", "discard"),
            ("plain GET -> file", "file"),
            ("quantdesk pull (sha256)", "pull"),
        ):
            runs = ", ".join(f"{t:.2f}" for t in times[key])
            print(f"  {label:<24} {size / best[key] / 1e6:8.0f} MB/s   ({runs} s)")
        print(
            f"  ratio pull / plain GET to file:  {best['file'] / best['pull']:.3f}  (goal >= 0.95)"
        )
        print(f"  ratio pull / plain GET discard:  {best['discard'] / best['pull']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
