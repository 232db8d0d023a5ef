"""Multi-turn chat: does each turn evaluate only its new tokens?

Ten turns of one conversation on the MEDIUM generated model through the engine process (the same
path as the Chat page and ``quantdesk chat``).  For each turn it prints the prompt tokens, how many
of them came from the KV cache of the previous turn, the tokens evaluated, and the time to first
token.  The baseline, measured in the same run, is the first turn (nothing cached): the goal is
that later turns reuse >= 95 % of the previous context and keep a TTFT close to the first turn's.

    .venv/bin/python -m bench.multiturn [--turns 10] [--quant Q4_K_M] [--ctx 4096] [--tokens 48]
"""

from __future__ import annotations

import argparse
import statistics

from app.core.engine import Engine, GenerationStats, Sampling
from tests import modelfactory

QUESTIONS = [
    "Tell me about the memory of a language model.",
    "And how does the context size change it?",
    "What does quantization do to the weights?",
    "Which part grows fastest with a long conversation?",
    "Explain the key-value cache once more, briefly.",
    "What would you keep on the GPU first?",
    "How much does a compute buffer need?",
    "Summarise what we said so far.",
    "What is the trade-off of a smaller quant?",
    "Thank you, one last word on speed?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=48, help="tokens per reply")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    path = modelfactory.model_path(args.quant, modelfactory.MEDIUM)
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are concise."}]
    rows: list[GenerationStats] = []
    previous_context = 0
    with Engine() as engine:
        engine.load(path, n_ctx=args.ctx, n_threads=args.threads)
        print(f"{path.name}, n_ctx {args.ctx}, {args.tokens} tokens per reply")
        print(f"{'turn':>4} {'prompt':>7} {'cached':>7} {'evaluated':>9} {'reuse':>7} {'TTFT':>8}")
        for turn in range(args.turns):
            messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            stats: GenerationStats | None = None
            for item in engine.chat(
                messages, max_tokens=args.tokens, sampling=Sampling.preset("greedy")
            ):
                if isinstance(item, GenerationStats):
                    stats = item
            assert stats is not None
            rows.append(stats)
            messages.append({"role": "assistant", "content": stats.text})
            evaluated = stats.prompt_tokens - stats.cached_prompt_tokens
            reuse = stats.cached_prompt_tokens / previous_context if previous_context else 0.0
            print(
                f"{turn + 1:>4} {stats.prompt_tokens:>7} {stats.cached_prompt_tokens:>7} "
                f"{evaluated:>9} {100 * reuse:>6.1f}% {1000 * stats.ttft_s:>6.0f}ms"
            )
            previous_context = stats.prompt_tokens + stats.tokens
    first = rows[0].ttft_s
    later = [r.ttft_s for r in rows[1:]]
    if later:
        print(
            f"\nTTFT: first turn {1000 * first:.0f} ms (baseline, nothing cached); later turns "
            f"median {1000 * statistics.median(later):.0f} ms, ratio "
            f"{statistics.median(later) / first:.2f} (goal: close to 1)"
        )


if __name__ == "__main__":
    main()
