"""Memory settings: what each choice costs in memory and in multi-turn chat speed.

For the zoo's small gemma3 (5:1 sliding-window layers, window 256) and llama (no window) models at
n_ctx 8192 (and 32768 for gemma3), each setting of ``PlanOptions`` is planned (dry run +
``fit.plan_memory``) and then used by a fresh engine child for a short chat: 4 turns, each a
~300-token user message and 32 greedy tokens (``ignore_eos``).  Columns:

* planned RAM, KV and compute MiB (the plan made for exactly these settings);
* the child's peak RSS during the chat (VmHWM, reset after the load so the loader's transient is
  not counted);
* prompt and generation tok/s as a ratio to the model's baseline row (the defaults: swa_full off,
  flash_attn auto, n_ubatch 512): every setting runs once per round, in an order rotated each
  round, and the ratio is to the same round's baseline, its median over the rounds shown (other
  work on the machine makes absolute rates noise; a single round put 0.6-1.7 between identical
  settings).  Within a run the rate is the median over the turns (prompt: the evaluated tokens
  over the time to first token), after a one-token warm-up so turn 1 is not the cold one;
* the tokens re-evaluated on turn 4: with the common prefix reused only the new message (and the
  previous reply's tail) is, with a full-size or a window-only sliding-window cache alike.

    .venv/bin/python -m bench.memory_settings [--quick] [--rounds 5] [--run-timeout 300]

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
    ap.add_argument("--rounds", type=int, default=5, help="runs of every setting (median ratio)")
    args = ap.parse_args()
    cases = [("gemma3", 8192)]
    if not args.quick:
        cases += [("llama", 8192), ("gemma3", 32768)]
    print(
        f"{TURNS} turns of ~300-token messages + {REPLY_TOKENS} greedy tokens, n_threads 2; "
        f"speed = median over {args.rounds} rounds of the ratio to the same round's baseline"
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
            rows = {}
            for name, settings in SETTINGS:
                dry = runner.run(p, digest, n_ctx, 0, settings)
                plan = fit.plan_memory(spec, dry, n_ctx)  # the settings: the dry run's
                rows[name] = (
                    f"| {fam} | {n_ctx} | {name} | {plan.ram_bytes / MIB:.0f} "
                    f"| {plan.kv_bytes / MIB:.0f} | {plan.compute_cpu_bytes / MIB:.0f} "
                )
            runs = _rounds(path, n_ctx, args.rounds, args.run_timeout)
            for name, _settings in SETTINGS:
                print(rows[name] + _result(runs, name), flush=True)
    finally:
        runner.close()


def _rounds(path: Path, n_ctx: int, rounds: int, timeout: int) -> list[dict[str, dict[str, Any]]]:
    """Every setting's chat, ``rounds`` times, each round in a rotated order: a setting's speed is
    compared with the baseline of its own round, so a slow spell of the machine (or being the
    first child to page the model in) does not land on one setting."""
    out = []
    for k in range(rounds):
        order = SETTINGS[k % len(SETTINGS) :] + SETTINGS[: k % len(SETTINGS)]
        out.append({name: _chat_run(path, n_ctx, s, timeout) for name, s in order})
    return out


def _result(runs: list[dict[str, dict[str, Any]]], name: str) -> str:
    """One setting's columns: peak RSS (the highest round), the median over rounds of its speed
    ratios to the same round's baseline, and turn 4 of the first round that ran."""
    good = [r for r in runs if r[name]["ok"] and r["baseline"]["ok"]]
    if not good:
        failed = next(r[name] for r in runs if not r[name]["ok"])
        return f"| - | - | - | {failed.get('error', 'baseline failed')} | - |"

    def rate(r: dict[str, Any], field: str) -> float:
        # A median over the turns (each ~300 evaluated tokens) within a run, too.
        return statistics.median(getattr(t, field) for t in r["turns"])

    ratios = [
        f"{statistics.median(rate(r[name], f) / rate(r['baseline'], f) for r in good):.2f}"
        for f in ("prompt_tok_s", "gen_tok_s")
    ]
    last = good[0][name]["turns"][-1]
    same = "yes" if last.text == good[0]["baseline"]["turns"][-1].text else "no"
    evaluated = last.prompt_tokens - last.cached_prompt_tokens
    peak = max(r[name]["VmHWM"] for r in good)
    return (
        f"| {peak / MIB:.0f} | {ratios[0]} | {ratios[1]} "
        f"| {evaluated} / {last.prompt_tokens} | {same} |"
    )


if __name__ == "__main__":
    main()
