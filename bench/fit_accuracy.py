"""Fit accuracy: predicted ``ram_bytes`` against what a real run needs, and a whole-repo plan's time.

For the MEDIUM generated model at Q2_K, Q4_K_M, Q8_0 and contexts 2048, 8192, 32768 (above its
trained 4096: llama.cpp accepts that with a warning), the plan (dry run on a header-only copy, as
the app does before a download) is compared with a real load + a 64-token prompt + 16 generated
tokens in a fresh engine child:

* llama.cpp's buffers after the load (model, KV, compute, output) plus the runtime's own RSS;
* the child's peak RSS (VmHWM), RssAnon and RssFile after the run;
* as root with a writable memory cgroup (v1 or v2): the smallest memory limit under which the run
  completes without slowing down (nothing needed is read twice from disk: /proc/PID/io
  read_bytes), found by bisection.
  The model file's page cache is dropped before every run so that its pages are charged to the run.

Errors are ``(predicted - measured) / measured``: positive means the plan over-estimates.  Then a
whole repo of variants is planned against the loopback Hub imitation (tests/hubsim.py), cold (new
engine child, empty cache) and warm.

    .venv/bin/python -m bench.fit_accuracy [--quick] [--no-cgroup] [--contexts 2048,8192,32768]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from app.core import fit, paths
from app.core.dryrun import DryRunner
from app.core.engine import Engine, Sampling
from app.core.engine.protocol import GenerateRequest, TokenizeRequest
from app.core.gguf_header import read_local
from tests import modelfactory

MIB = 1 << 20
WORDS = [
    "the",
    "model",
    "reads",
    "the",
    "memory",
    "plan",
    "and",
    "the",
    "quant",
    "of",
    "each",
    "layer",
    "then",
    "it",
    "can",
    "write",
    "a",
    "number",
    "for",
    "the",
    "time",
    "it",
    "will",
    "take",
    "to",
    "find",
    "the",
    "way",
    "the",
    "people",
    "use",
    "the",
    "water",
    "and",
    "the",
    "oil",
]


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _major_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[9])  # majflt: pages read from disk on a fault


def _read_bytes(pid: int) -> int:
    """Bytes this process made the kernel fetch from storage (page faults and readahead included)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def _drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def private_copy(path: Path, folder: Path) -> Path:
    """A copy nobody else maps: its page cache can be dropped, so a run's reads are charged to it.

    (Other sessions may be running the same generated model; pages they map cannot be dropped.)
    """
    dst = folder / path.name
    if not dst.exists():
        shutil.copyfile(path, dst)
    _drop_page_cache(dst)
    return dst


class Cgroup:
    """A memory cgroup (v1 or v2) for one process; None when this machine does not allow one."""

    def __init__(self, path: Path, v2: bool) -> None:
        self.path, self.v2 = path, v2

    @staticmethod
    def create() -> Cgroup | None:
        name = f"quantdesk-bench-{os.getpid()}"
        for root, v2 in ((Path("/sys/fs/cgroup/memory"), False), (Path("/sys/fs/cgroup"), True)):
            if v2 and not (root / "cgroup.controllers").exists():
                continue
            try:
                path = root / name
                path.mkdir(exist_ok=True)
                cg = Cgroup(path, v2)
                if not v2:
                    with contextlib.suppress(OSError):
                        (path / "memory.move_charge_at_immigrate").write_text("3")
                return cg
            except OSError:
                continue
        return None

    def limit(self, nbytes: int | None) -> None:
        value = str(nbytes) if nbytes else ("max" if self.v2 else "-1")
        if self.v2:
            (self.path / "memory.max").write_text(value)
            with contextlib.suppress(OSError):
                (self.path / "memory.swap.max").write_text("0")
            return
        memsw = self.path / "memory.memsw.limit_in_bytes"
        # memsw must stay >= the memory limit: raise it first, then set both (no swap use).
        with contextlib.suppress(OSError):
            memsw.write_text("-1")
        (self.path / "memory.limit_in_bytes").write_text(value)
        with contextlib.suppress(OSError):
            memsw.write_text(value)

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def peak(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return 0

    def reset_peak(self) -> None:
        if not self.v2:
            with contextlib.suppress(OSError):
                (self.path / "memory.max_usage_in_bytes").write_text("0")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def run_once(path: Path, n_ctx: int, prompt: str, cg: Cgroup | None, limit: int | None) -> dict:
    """Load + prompt + 16 tokens in a fresh engine child; None values mean it died."""
    logs = Path(tempfile.mkdtemp(prefix="fitbench-"))
    eng = Engine(log_dir=logs)
    eng.start()
    try:
        if cg is not None:
            cg.limit(limit)
            cg.add(eng.pid)
            cg.reset_peak()
        _drop_page_cache(path)
        t0 = time.perf_counter()
        try:
            info = eng.load(path, n_ctx=n_ctx)
            loaded_read = _read_bytes(eng.pid)
            greedy = Sampling.preset("greedy")
            req = GenerateRequest(
                prompt=prompt, max_tokens=16, sampling=greedy, stream=False, ignore_eos=True
            )
            stats = eng.complete(req)
            st = _status(eng.pid)
            majflt = _major_faults(eng.pid)
            read_bytes = _read_bytes(eng.pid)
        except Exception as exc:  # EngineCrashed under a tight cgroup limit: OOM-killed
            return {"ok": False, "error": str(exc)[:120]}
        wall = time.perf_counter() - t0
        return {
            "ok": True,
            "wall": wall,
            "gen_tok_s": stats.gen_tok_s,
            "prompt_tokens": stats.prompt_tokens,
            "tokens": stats.tokens,
            "buffers": info.buffers,
            "cg_peak": cg.peak() if cg else 0,
            "majflt": majflt,
            "read_bytes": read_bytes,
            "steady_read_bytes": read_bytes - loaded_read,
            **st,
        }
    finally:
        eng.close()
        shutil.rmtree(logs, ignore_errors=True)


def make_prompt(path: Path, n_tokens: int = 64) -> str:
    """Text that tokenizes to exactly ``n_tokens`` tokens (BOS included) with this model."""
    with Engine() as eng:
        eng.load(path, n_ctx=512)
        words = list(WORDS) * (n_tokens // len(WORDS) + 2)

        def count(n: int) -> int:
            return len(eng.request(TokenizeRequest(" ".join(words[:n]))))

        lo, hi = 1, len(words)  # the most words that stay within n_tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if count(mid) <= n_tokens else (lo, mid - 1)
        return " ".join(words[:lo])


def min_limit(path: Path, n_ctx: int, prompt: str, cg: Cgroup, base: dict, guess: int) -> int:
    """Smallest cgroup limit (to ~1.5 %) under which the run completes without slowing down.

    "Slowing down" is judged by bytes read from storage rather than wall time (two cores shared
    with other work make timings too noisy): pages of the model evicted and read again from
    disk, beyond 1 % of the file.
    Reclaiming pages that are never read again (the file pages of repacked tensors) is harmless.
    """

    def ok(limit: int) -> bool:
        r = run_once(path, n_ctx, prompt, cg, limit)
        # Re-reading more than 1 % of the model after it is loaded means pages that inference
        # needs got evicted.  Re-reads while loading (readahead pages evicted before llama.cpp
        # copied them) slow the load only: that is the plan's peak_ram_bytes, not ram_bytes.
        # (Major-fault counts miss readahead, so bytes come from /proc/PID/io.)
        extra = r["steady_read_bytes"] - base["steady_read_bytes"] if r["ok"] else 0
        good = bool(r["ok"]) and extra <= path.stat().st_size // 100
        why = r.get("error") or (
            f"re-read {extra / MIB:.1f} MiB after load, "
            f"{(r['read_bytes'] - base['read_bytes']) / MIB:.1f} MiB in all, wall {r['wall']:.1f}s"
        )
        print(f"      limit {limit / MIB:7.0f} MiB: {'ok  ' if good else 'FAIL'} {why}", flush=True)
        return good

    lo, hi = 32 * MIB, int(guess * 1.3)  # lo: surely too small (the runtime alone is ~60 MiB)
    while not ok(hi):
        lo, hi = hi, int(hi * 1.4)
    while hi - lo > hi * 0.015:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _pct(pred: int, measured: int) -> str:
    return f"{100.0 * (pred - measured) / measured:+6.1f}%" if measured else "   n/a"


def accuracy(args: argparse.Namespace) -> None:
    quants = ["Q4_K_M"] if args.quick else ["Q2_K", "Q4_K_M", "Q8_0"]
    contexts = [int(c) for c in args.contexts.split(",")]
    cg = None if args.no_cgroup else Cgroup.create()
    if cg is None:
        print("cgroup: no writable memory cgroup here (or --no-cgroup): limit search skipped")
    else:
        print(f"cgroup: {'v2' if cg.v2 else 'v1'} at {cg.path}")
    try:
        _accuracy(quants, contexts, cg, args.fill)
    finally:
        if cg is not None:
            cg.remove()


def _accuracy(quants: list[str], contexts: list[int], cg: Cgroup | None, fill: bool) -> None:
    rows = []
    medium = modelfactory.model_path("Q4_K_M", modelfactory.MEDIUM)
    # 64 prompt tokens, or (--fill) a prompt that fills the context: the plan's worst case.
    prompts = {n: make_prompt(medium, n - 17 if fill else 64) for n in contexts}
    with DryRunner() as runner:
        for q in quants:
            path = private_copy(modelfactory.model_path(q, modelfactory.MEDIUM), paths.cache_dir())
            spec = read_local(path)
            # Plan from a header-only copy, exactly as before a download.
            sparse = paths.cache_dir() / f"fitbench-{path.name}"
            with path.open("rb") as f, sparse.open("wb") as out:
                out.write(f.read(spec.data_offset))
                out.truncate(path.stat().st_size)
            for n_ctx in contexts:
                dry = runner.run(*runner.prepare(sparse, spec), n_ctx)
                plan = fit.plan_memory(spec, dry, n_ctx)
                base = run_once(path, n_ctx, prompts[n_ctx], None, None)
                assert base["ok"], base
                bufs = base["buffers"]
                llama = sum(v for k, v in bufs.items() if not k.startswith("CPU_Mapped"))
                llama += plan.mapped_resident_bytes + dry.base_rss_bytes
                cg_min = (
                    min_limit(path, n_ctx, prompts[n_ctx], cg, base, plan.ram_bytes) if cg else 0
                )
                rows.append((q, n_ctx, plan, base, llama, cg_min))
                print(
                    f"  {q} ctx {n_ctx}: predicted {plan.ram_bytes / MIB:.0f} MiB, "
                    f"cgroup min {cg_min / MIB:.0f} MiB, HWM {base['VmHWM'] / MIB:.0f} MiB "
                    f"(prompt {base['prompt_tokens']} tok, gen {base['tokens']} tok)",
                    flush=True,
                )
            sparse.unlink(missing_ok=True)
            path.unlink(missing_ok=True)
    print()
    print(
        "quant   n_ctx  predicted  compute   buffers+rt  RssAnon  RssFile  VmHWM   cgroup-min"
        "  err/cgroup  err/buffers  err/HWM"
    )
    worst: list[float] = []
    for q, n_ctx, plan, base, llama, cg_min in rows:
        print(
            f"{q:7} {n_ctx:6} {plan.ram_bytes / MIB:8.0f}M {plan.compute_bytes / MIB:7.0f}M "
            f"{llama / MIB:9.0f}M {base['RssAnon'] / MIB:7.0f}M {base['RssFile'] / MIB:7.0f}M "
            f"{base['VmHWM'] / MIB:6.0f}M {cg_min / MIB:9.0f}M   {_pct(plan.ram_bytes, cg_min)}"
            f"     {_pct(plan.ram_bytes, llama)}    {_pct(plan.ram_bytes, base['VmHWM'])}"
        )
        ref = cg_min or llama
        worst.append((plan.ram_bytes - ref) / ref)
    w = max(worst, key=abs)
    print(f"\nworst error ({'vs cgroup minimum' if cg else 'vs buffers'}): {100 * w:+.1f}%")
    print(f"most under-estimated: {100 * min(worst):+.1f}% (goal: never under by more than 5 %)")


def repo_timing() -> None:
    """Plan every variant of a repo served by the loopback Hub imitation: cold, then warm."""
    from app.cli.plan import variant_sources
    from app.core.planning import Planner
    from app.core.recommend import budget_for
    from tests.hub_fixtures import TINY_REPO, tiny_repo_files
    from tests.hubsim import HubSim

    files = tiny_repo_files()
    medium = {
        f"quantdesk-medium-{q}.gguf": modelfactory.model_path(q, modelfactory.MEDIUM)
        for q in ("Q2_K", "Q4_K_M", "Q8_0")
    }
    repos = {TINY_REPO: files, "quantdesk-test/medium-GGUF": medium}
    budget = budget_for(None, ram_bytes=8 << 30, vram_bytes=0)
    with HubSim(repos) as hub, tempfile.TemporaryDirectory() as home:
        os.environ.update(
            HF_ENDPOINT=hub.endpoint,
            HF_HOME=str(Path(home) / "hf"),
            HF_HUB_DISABLE_XET="1",
            NO_PROXY="127.0.0.1,localhost",
            QUANTDESK_HOME=str(Path(home) / "qd"),
        )
        for repo in repos:
            for label in ("cold", "warm"):
                planner = Planner()
                t0 = time.perf_counter()
                rec = planner.recommend_sources(variant_sources(repo), 4096, budget=budget)
                took = time.perf_counter() - t0
                planner.close()
                runner = planner.runner
                served = sum(v for k, v in hub.bytes_served.items() if k.startswith(repo))
                total = sum(v.size_bytes for v in rec.variants)
                print(
                    f"plan of {repo} ({len(rec.variants)} variants, {label}): {took:.2f} s "
                    f"(goal <= 3 s); {served / MIB:.1f} MiB read of {total / MIB:.0f} MiB; "
                    f"dry runs {runner.runs}; recommended {rec.recommended and rec.recommended.file}"
                )
                hub.bytes_served.clear()


# ---- the architecture zoo: both workloads --------------------------------------------------------
class RunTimeout(Exception):
    """One measured run took longer than --run-timeout."""


@contextlib.contextmanager
def timed_engine(prefix: str, timeout: int) -> Iterator[Engine]:
    """A fresh engine child for one measured run, closed after it; RunTimeout past ``timeout`` s."""
    import signal

    logs = Path(tempfile.mkdtemp(prefix=prefix))
    eng = Engine(log_dir=logs)

    def _expire(signum: int, frame: object) -> None:
        raise RunTimeout(f"over {timeout} s")

    old = signal.signal(signal.SIGALRM, _expire)
    signal.alarm(timeout)
    try:
        eng.start()
        yield eng
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        eng.close()
        shutil.rmtree(logs, ignore_errors=True)


def _zoo_run(
    path: Path, n_ctx: int, workload: str, cache: str, swa_full: bool, timeout: int, fill: bool
) -> dict:
    """One fresh engine child: a chat filling the context, or the reference's scoring pass over it.

    Without ``fill`` the model is only loaded (llama.cpp's buffers, for the long contexts).
    """
    from app.core.engine.protocol import MemorySettings, ScoreRequest

    try:
        with timed_engine("fitbench-zoo-", timeout) as eng:
            info = eng.load(
                path,
                n_ctx=n_ctx,
                n_threads=2,
                memory=MemorySettings(
                    type_k=cache,
                    type_v=cache,
                    swa_full=swa_full,
                    n_outputs_max=fit.WORKLOAD_OUTPUTS[workload],
                ),
            )
            loaded = _status(eng.pid)
            # The workload's own peak, without the load's transient (the loader's metadata, freed
            # by the end of the load): "5" resets the peak-RSS mark to the current RSS.
            with contextlib.suppress(OSError):
                Path(f"/proc/{eng.pid}/clear_refs").write_text("5")
            if fill:
                words = (WORDS * (n_ctx // len(WORDS) + 2))[:n_ctx]
                room = n_ctx - 24  # the prompt fills the context but for the generated tokens
                for _ in range(6):  # cut the text until it tokenizes within the room
                    n = len(eng.request(TokenizeRequest(" ".join(words))))
                    if n <= room:
                        break
                    words = words[: max(1, len(words) * room // n - 4)]
                text = " ".join(words)
                if workload == "chat":
                    greedy = Sampling.preset("greedy")
                    req = GenerateRequest(
                        prompt=text, max_tokens=16, sampling=greedy, stream=False, ignore_eos=True
                    )
                    eng.complete(req)
                else:
                    tokens = eng.request(TokenizeRequest(text))
                    eng.request(ScoreRequest(tokens=list(tokens), start=1), timeout=timeout)
            st = _status(eng.pid)
            transient = loaded["VmHWM"] - loaded["VmRSS"]
            return {
                "ok": True,
                "buffers": info.buffers,
                "caches": info.caches,
                "load_transient": transient,
                **st,
            }
    except Exception as exc:  # RunTimeout, EngineCrashed
        return {"ok": False, "error": str(exc)[:120]}


def _buffer_errors(plan: fit.MemoryPlan, dry: fit.DryRun, r: dict) -> str:
    """Plan vs llama.cpp's logged buffers of the real load, each in %: KV (each cache), compute,
    output."""
    bufs = r["buffers"]
    parts = []
    real = {(c.kind, c.cells): c.nbytes for c in r["caches"]}
    for c in plan.kv_caches:
        got = real.get((c["kind"], c["cells"]))
        parts.append(f"{c['kind']} {_logged_pct(c['bytes'], got)}")
    parts.append(f"compute {_logged_pct(dry.compute.get('CPU', 0), bufs.get('CPU compute'))}")
    parts.append(f"output {_logged_pct(plan.output_bytes, bufs.get('CPU output'))}")
    return ", ".join(parts)


def _logged_pct(pred: int, logged: int | None) -> str:
    """The plan's figure against one llama.cpp logs, rounded as the log rounds it (0.01 MiB):
    otherwise an exact plan of a 0.27 MiB cache reads as 1.6 % off."""
    if logged is None:
        return "?"
    shown = round(pred / MIB, 2) * MIB
    return "+0.0%" if abs(shown - logged) < 1 else _pct(int(shown), logged).strip()


def zoo_accuracy(args: argparse.Namespace) -> None:
    """Per family, context and cache type: the plan vs llama.cpp's buffers, and (``--fill``
    contexts) vs the measured peak RSS of each workload."""
    from app.core.engine.protocol import MemorySettings
    from tests import zoo

    families = args.families.split(",") if args.families else list(zoo.FAMILIES)
    runner = DryRunner(cache_path=Path(tempfile.mkdtemp()) / "c.json")
    print(
        "| family | n_ctx | cache | workload | predicted MiB | measured peak MiB "
        "| plan vs measured | plan vs llama.cpp's buffers |"
    )
    print("|---|---|---|---|---|---|---|---|")
    try:
        for fam in families:
            path = zoo.small_path(fam)
            spec = read_local(path)
            p, digest = runner.prepare(path, spec)
            trained = spec.n_ctx_train
            contexts = [int(c) for c in args.zoo_contexts.split(",")]
            contexts = sorted({c for c in contexts if c <= trained} | {trained})
            fill = {int(c) for c in args.fill_contexts.split(",")} if args.fill_contexts else set()
            for n_ctx in contexts:
                for cache in args.caches.split(","):
                    # A scoring pass without a reference is the reference's (it keeps its top-k);
                    # a variant's pass against one is measured by bench/compare_memory.py.
                    for workload in ("chat", "reference"):
                        settings = MemorySettings(
                            type_k=cache,
                            type_v=cache,
                            swa_full=args.swa_full,
                            n_outputs_max=fit.WORKLOAD_OUTPUTS[workload],
                        )
                        dry = runner.run(p, digest, n_ctx, 0, settings)
                        plan = fit.plan_memory(spec, dry, n_ctx, 0, cache, cache)
                        pred = fit.workload_ram_bytes(spec, dry, plan, workload)
                        measured = n_ctx in fill and cache == "f16"
                        r = _zoo_run(
                            path,
                            n_ctx,
                            workload,
                            cache,
                            args.swa_full,
                            args.run_timeout,
                            measured,
                        )
                        row = f"| {fam} | {n_ctx} | {cache} | {workload} | {pred / MIB:.0f} "
                        if not r["ok"]:
                            print(row + f"| - | {r['error']} | |", flush=True)
                            continue
                        peak = (
                            f"{r['VmHWM'] / MIB:.0f} | {_pct(pred, r['VmHWM'])} "
                            f"(load +{r['load_transient'] / MIB:.0f})"
                        )
                        print(
                            row + f"| {peak if measured else '- | -'} "
                            f"| {_buffer_errors(plan, dry, r)} |",
                            flush=True,
                        )
    finally:
        runner.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Q4_K_M only")
    ap.add_argument("--no-cgroup", action="store_true", help="skip the cgroup limit search")
    ap.add_argument("--contexts", default="2048,8192,32768")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--fill", action="store_true", help="prompt fills the context (worst case)")
    ap.add_argument("--zoo", action="store_true", help="the architecture zoo (tests/zoo.py) only")
    ap.add_argument("--families", default="", help="zoo families (default: all)")
    ap.add_argument(
        "--zoo-contexts",
        default="2048,8192,32768",
        help="zoo contexts (the trained maximum is added, larger ones dropped)",
    )
    ap.add_argument(
        "--fill-contexts",
        default="2048,8192",
        help="zoo contexts also measured with a filled context (peak RSS per workload, f16 cache)",
    )
    ap.add_argument("--caches", default="f16,q8_0", help="zoo KV cache types")
    ap.add_argument("--swa-full", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--run-timeout", type=int, default=300, help="seconds per measured run")
    args = ap.parse_args()
    if args.zoo:
        zoo_accuracy(args)
        return
    home = tempfile.mkdtemp(prefix="fitbench-home-")
    os.environ.setdefault("QUANTDESK_HOME", home)
    try:
        if not args.skip_accuracy:
            accuracy(args)
        repo_timing()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
