"""Memory settings: what each choice costs in memory and in multi-turn chat speed.

For the zoo's small gemma3 (5:1 sliding-window layers, window 256) and llama (no window) models at
n_ctx 8192 (and 32768 for gemma3), each setting of ``PlanOptions`` is planned (dry run +
``fit.plan_memory``) and then used by a fresh engine child for a short chat: 4 turns, each a
~300-token user message and 32 greedy tokens (``ignore_eos``).  Columns:

* planned RAM, KV and compute MiB (the plan made for exactly these settings);
* the child's peak RSS during the chat (VmHWM, reset after the load so the loader's transient is
  not counted);
* prompt and generation tok/s as a ratio to the model's baseline row (the defaults: swa_full off,
  flash_attn auto, n_ubatch 512) measured in the same run: other work on the machine makes absolute rates noise;
  both are medians over the turns (prompt: the evaluated tokens over the time to first token),
  after a one-token warm-up so turn 1 is not the cold one;
* the tokens re-evaluated on turn 4: with the common prefix reused only the new message (and the
  previous reply's tail) is, with a full-size or a window-only sliding-window cache alike.

    .venv/bin/python -m bench.memory_settings [--quick] [--run-timeout 300]

``--quick``: gemma3 at 8192 only.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path
from typing import Any

from app.core import fit
from app.core.dryrun import DryRunner
from app.core.engine import GenerationStats, Sampling
from app.core.engine.protocol import GenerateRequest, MemorySettings
from app.core.gguf_header import read_local
from bench.fit_accuracy import timed_engine

MIB = 1 << 20
TURNS = 4
REPLY_TOKENS = 32
SETTINGS: list[tuple[str, MemorySettings]] = [
    ("baseline", MemorySettings()),
    ("swa_full=True", MemorySettings(swa_full=True)),
    ("flash_attn=True", MemorySettings(flash_attn=True)),
    ("flash_attn=False", MemorySettings(flash_attn=False)),
    ("n_ubatch=256", MemorySettings(n_ubatch=256)),
    ("n_ubatch=1024", MemorySettings(n_ubatch=1024)),
]
TOPICS = [
    "memory of the model and the plan for each layer",
    "the cache that grows with every turn of the talk",
    "the weights and the quant that makes them small",
    "the time it takes to read the prompt and write a reply",
]
FILLER = (
    "the model reads the memory plan and the quant of each layer then it can write a number "
    "for the time it will take to find the way people use the water and the oil "
)


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _message(turn: int, words: int = 260) -> str:
    # Distinct per turn (a new topic first) so no turn's message is a prefix of another's.
    filler = FILLER.split()
    body = (filler * (words // len(filler) + 1))[:words]
    return f"Turn {turn + 1}: tell me about {TOPICS[turn % len(TOPICS)]}. " + " ".join(body)


def _chat_run(path: Path, n_ctx: int, memory: MemorySettings, timeout: int) -> dict[str, Any]:
    """A fresh engine child: load with ``memory``, then the multi-turn chat."""
    try:
        with timed_engine("memsettings-", timeout) as eng:
            eng.load(path, n_ctx=n_ctx, n_threads=2, memory=memory)
            assert eng.pid is not None
            # Turn 1's prompt rate is the cold one otherwise: the mapped weights are paged in and
            # the threads spun up there.  A one-token warm-up shares no prefix with the chat.
            warm = GenerateRequest(
                prompt="Warm up.", max_tokens=1, sampling=Sampling.preset("greedy")
            )
            eng.complete(warm)
            with contextlib.suppress(OSError):  # "5": the peak mark back to the current RSS
                Path(f"/proc/{eng.pid}/clear_refs").write_text("5")
            messages: list[dict[str, str]] = [{"role": "system", "content": "You are concise."}]
            turns: list[GenerationStats] = []
            greedy = Sampling.preset("greedy")
            for turn in range(TURNS):
                messages.append({"role": "user", "content": _message(turn)})
                stats = None
                for item in eng.chat(
                    messages, max_tokens=REPLY_TOKENS, sampling=greedy, ignore_eos=True
                ):
                    if isinstance(item, GenerationStats):
                        stats = item
                assert stats is not None
                turns.append(stats)
                messages.append({"role": "assistant", "content": stats.text})
            return {"ok": True, "turns": turns, **_status(eng.pid)}
    except Exception as exc:  # RunTimeout, EngineCrashed, a failed load
        return {"ok": False, "error": str(exc)[:100]}


def main() -> None:
    from tests import zoo

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="gemma3 at 8192 only")
    ap.add_argument("--run-timeout", type=int, default=300, help="seconds per engine run")
    args = ap.parse_args()
    cases = [("gemma3", 8192)]
    if not args.quick:
        cases += [("llama", 8192), ("gemma3", 32768)]
    print(
        f"{TURNS} turns of ~300-token messages + {REPLY_TOKENS} greedy tokens, n_threads 2; "
        "speed = ratio to the model's baseline row (same run)"
    )
    print(
        "| model | n_ctx | setting | plan RAM MiB | plan KV MiB | plan compute MiB | peak RSS MiB "
        "| prompt tok/s ratio | gen tok/s ratio | turn 4 evaluated / prompt | turn 4 reply = baseline's |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    runner = DryRunner(cache_path=Path(tempfile.mkdtemp()) / "c.json")
    try:
        for fam, n_ctx in cases:
            path = zoo.small_path(fam)
            spec = read_local(path)
            p, digest = runner.prepare(path, spec)
            base: tuple[float, float] | None = None
            base_text: str | None = None
            for name, settings in SETTINGS:
                dry = runner.run(p, digest, n_ctx, 0, settings)
                plan = fit.plan_memory(
                    spec,
                    dry,
                    n_ctx,
                    0,
                    "f16",
                    "f16",
                    settings.n_ubatch,
                    flash_attn=settings.flash_attn,
                )
                row = (
                    f"| {fam} | {n_ctx} | {name} | {plan.ram_bytes / MIB:.0f} "
                    f"| {plan.kv_bytes / MIB:.0f} | {plan.compute_cpu_bytes / MIB:.0f} "
                )
                r = _chat_run(path, n_ctx, settings, args.run_timeout)
                if not r["ok"]:
                    print(row + f"| - | - | - | {r['error']} | - |", flush=True)
                    continue
                turns: list[GenerationStats] = r["turns"]
                # A median over the turns (each ~300 evaluated tokens): one turn is at the mercy
                # of whatever else runs on the machine.
                prompt_rate = statistics.median(t.prompt_tok_s for t in turns)
                gen_rate = statistics.median(t.gen_tok_s for t in turns)
                if base is None:
                    base = (prompt_rate, gen_rate) if name == "baseline" else (0.0, 0.0)
                last = turns[-1]
                if name == "baseline":
                    base_text = last.text
                same = "yes" if last.text == base_text else "no"
                evaluated = last.prompt_tokens - last.cached_prompt_tokens
                ratio = (
                    f"{prompt_rate / base[0]:.2f} | {gen_rate / base[1]:.2f}"
                    if base[0] and base[1]
                    else "- | -"
                )
                print(
                    row + f"| {r['VmHWM'] / MIB:.0f} | {ratio} "
                    f"| {evaluated} / {last.prompt_tokens} | {same} |",
                    flush=True,
                )
    finally:
        runner.close()


if __name__ == "__main__":
    main()
