"""``quantdesk chat MODEL``: interactive streaming chat, or one reply with ``--prompt``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from app.cli.common import fail, print_json
from app.cli.memory_flags import add_memory_flags, plan_options
from app.cli.worker import add_workers_flag
from app.core.engine import Engine, EngineCrashed, EngineError, GenerationStats, Sampling
from app.core.errors import QuantDeskError
from app.core.planning import LoadPlan, Planner
from app.core.rpc import parse_workers

DEFAULT_CTX = 4096


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a local GGUF model in the terminal")
    p.add_argument("model", help="path to a .gguf file")
    p.add_argument("--prompt", help="send one message, print the reply and exit")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument(
        "--ctx",
        type=int,
        default=None,
        help=f"context size in tokens (default: {DEFAULT_CTX}, or less when the plan says so)",
    )
    p.add_argument(
        "--gpu-layers",
        type=int,
        default=None,
        help="layers to offload to the GPU (default: as many as the memory plan allows)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--preset", default="balanced", choices=["precise", "balanced", "creative", "greedy"]
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--json", action="store_true", help="with --prompt: print a JSON object")
    p.add_argument(
        "--chat-format",
        default="auto",
        help="prompt format: auto (the file's template, else llama.cpp's built-in one for the "
        "model's family, else completion), gguf, completion, or builtin:NAME (e.g. builtin:chatml)",
    )
    add_workers_flag(p)
    add_memory_flags(p)
    p.set_defaults(func=run)


def _sampling(args: argparse.Namespace) -> Sampling:
    s = Sampling.preset(args.preset)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.temperature is not None:
        changes["temperature"] = args.temperature
    if changes:
        s = replace(s, **changes)
    return s


def _reply(engine: Engine, messages: list[dict[str, str]], args, echo: bool) -> GenerationStats:
    stats: GenerationStats | None = None
    for item in engine.chat(messages, max_tokens=args.max_tokens, sampling=_sampling(args)):
        if isinstance(item, GenerationStats):
            stats = item
        elif echo:
            sys.stdout.write(item)
            sys.stdout.flush()
    assert stats is not None
    return stats


def _plan(args: argparse.Namespace) -> LoadPlan | None:
    """The core planner's context and GPU layers (and split over ``--workers``), unless both the
    context and the layers were given by hand without workers."""
    workers = parse_workers(args.workers)
    if not workers and args.ctx is not None and args.gpu_layers is not None:
        return None
    with Planner() as planner:
        plan = planner.plan_load(
            args.model, args.ctx or DEFAULT_CTX, options=plan_options(args), workers=workers
        )
    if args.gpu_layers is not None:
        plan = replace(
            plan, n_gpu_layers=args.gpu_layers, reason=f"{plan.reason}; GPU layers by hand"
        )
    return plan


def _json_error(message: str, exc: QuantDeskError) -> int:
    """``--json`` prints a JSON object even when it failed: the error's message and kind."""
    print_json({"text": None, "error": {"message": message, "kind": str(exc.kind)}})
    return 1


def run(args: argparse.Namespace) -> int:
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    try:
        plan = _plan(args)
    except QuantDeskError as exc:  # does not fit, a worker that is not there, a bad file
        if args.json and args.prompt is not None:
            return _json_error(f"cannot plan {args.model}: {exc}", exc)
        return fail(str(exc))
    if plan is not None and not args.json:
        print(
            f"plan: context {plan.n_ctx}, GPU layers {plan.n_gpu_layers}: {plan.reason}",
            file=sys.stderr,
        )
    # The plan's keywords when there is one: it may have chosen expert overrides or a split.
    load = (
        plan.load_kwargs()
        if plan is not None
        else {
            "n_ctx": args.ctx,
            "n_gpu_layers": args.gpu_layers,
            **plan_options(args).load_kwargs(),
        }
    )
    options = dict(
        n_threads=args.threads,
        chat_format=None if args.chat_format == "auto" else args.chat_format,
        **load,
    )
    with Engine() as engine:
        try:
            engine.load(args.model, **options)
        except EngineError as exc:
            if args.json and args.prompt is not None:
                return _json_error(f"cannot load {args.model}: {exc}", exc)
            return fail(f"cannot load {args.model}: {exc}")
        if args.prompt is not None:
            messages.append({"role": "user", "content": args.prompt})
            try:
                stats = _reply(engine, messages, args, echo=not args.json)
            except EngineError as exc:
                return _json_error(str(exc), exc) if args.json else fail(str(exc))
            if args.json:
                info = engine.loaded
                loaded = {"n_ctx": info.n_ctx, "n_gpu_layers": info.n_gpu_layers} if info else {}
                print_json(stats.to_json() | loaded)
            else:
                print()
            return 0
        print("QuantDesk chat. Empty line or Ctrl+D quits; Ctrl+C stops a reply.", file=sys.stderr)
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if not line.strip():
                break
            messages.append({"role": "user", "content": line})
            try:
                stats = _reply(engine, messages, args, echo=True)
            except KeyboardInterrupt:
                engine.cancel()
                print("\n[stopped]", file=sys.stderr)
                messages.pop()
                continue
            except EngineCrashed as exc:
                messages.pop()
                # The model went with the process: load it again so the chat carries on (the
                # message that was being answered is not resent: it may be what crashed it).
                print(f"\n[error] {exc}", file=sys.stderr)
                print("[the engine crashed; reloading the model ...]", file=sys.stderr)
                try:
                    engine.load(args.model, **options)
                except EngineError as again:
                    return fail(f"cannot reload {args.model}: {again}")
                print("[model reloaded; send your message again]", file=sys.stderr)
                continue
            except EngineError as exc:
                print(f"\n[error] {exc}", file=sys.stderr)
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": stats.text})
            print(
                f"\n[{stats.tokens} tokens, {stats.gen_tok_s:.1f} tok/s, "
                f"first token {stats.ttft_s * 1000:.0f} ms]",
                file=sys.stderr,
            )
    return 0
