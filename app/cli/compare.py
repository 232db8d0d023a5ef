"""``quantdesk compare MODEL MODEL...``: the same prompt (or a prompt file) on several variants.

Prints speed, memory and drift from the reference per variant; ``--json`` prints the object
documented in app.core.compare_report.  Ctrl+C stops the run and still reports what ran.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from app.cli.common import fail, human_bytes, print_json
from app.cli.worker import add_workers_flag
from app.core.cancel import CancelToken
from app.core.compare import (
    CompareError,
    CompareOptions,
    Finished,
    PlanReady,
    Progress,
    ReplyDone,
    VariantFailed,
    run_compare,
)
from app.core.compare_report import COLUMNS, CompareReport, format_cell, rows
from app.core.errors import QuantDeskError
from app.core.rpc import parse_workers
from app.core.taskeval import PromptItem, read_prompts
from app.core.units import parse_size


def _size(text: str) -> int:
    """``12G``, ``8GB``, ``512M``; a bare number is GiB (as this flag always took)."""
    try:
        return parse_size(text if not text.replace(".", "", 1).isdigit() else f"{text}G")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare quant variants of a model side by side")
    p.add_argument("models", nargs="+", metavar="MODEL", help="two or more .gguf files")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt sent to every variant")
    src.add_argument("--prompts", metavar="FILE.jsonl", help='task file: {"prompt", "expected"?}')
    p.add_argument("--reference", metavar="MODEL", help="the variant others are measured against")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--ctx", type=int, default=2048, help="context size in tokens")
    p.add_argument("--threshold", type=float, default=5.0, help="task verdict threshold in %%")
    p.add_argument(
        "--no-reference-text", action="store_true", help="skip the prompt-independent text pass"
    )
    p.add_argument(
        "--memory-budget",
        type=_size,
        metavar="SIZE",
        help="memory the variants may use together, e.g. 12G (a bare number: GiB)",
    )
    p.add_argument("--sequential", action="store_true", help="run one variant at a time")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_workers_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    errors: list[Any] = []
    if args.prompts:
        try:
            items, errors = read_prompts(args.prompts)
        except ValueError as exc:
            return fail(str(exc))
        for e in errors:
            print(f"{args.prompts}:{e.line}: skipped: {e.error}", file=sys.stderr)
        if not items:
            return fail(f"{args.prompts} has no usable prompt")
    else:
        items = [PromptItem.single(args.prompt)]
    try:
        workers = parse_workers(args.workers)
    except QuantDeskError as exc:
        return fail(str(exc))
    options = CompareOptions(
        max_tokens=args.max_tokens,
        n_ctx=args.ctx,
        threshold_pct=args.threshold,
        reference_text="" if args.no_reference_text else None,
        memory_budget=args.memory_budget,
        mode="sequential" if args.sequential else None,
        workers=workers,
    )
    cancel = CancelToken()
    report: CompareReport | None = None

    def on_interrupt(_sig: int, _frame: object) -> None:
        # An exception inside the generator would end it; a flag lets it wind down and report.
        cancel.set()
        print("\nstopping...", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        for event in run_compare(
            args.models,
            items,
            reference=args.reference,
            options=options,
            cancel=cancel,
            task_errors=errors,
        ):
            if isinstance(event, Finished):
                report = event.report
            elif not args.json:
                _narrate(event)
    except CompareError as exc:
        return fail(str(exc))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert report is not None
    if args.json:
        print_json(report.to_json())
    else:
        _print_table(report)
    return 130 if report.cancelled else 0


def _narrate(event: object) -> None:
    if isinstance(event, PlanReady):
        names = ", ".join(v.label for v in event.variants)
        print(f"comparing {names}", file=sys.stderr)
        print(f"reference: {event.variants[event.reference_index].label}", file=sys.stderr)
        print(f"mode: {event.plan.mode} -- {event.plan.reason}", file=sys.stderr)
    elif isinstance(event, Progress) and event.total > 1 and event.done < event.total:
        print(f"  {event.stage}: {event.done}/{event.total}", file=sys.stderr)
    elif isinstance(event, ReplyDone):
        s = event.stats
        print(
            f"  variant {event.index + 1}: {s.tokens} tokens, {s.gen_tok_s:.1f} tok/s",
            file=sys.stderr,
        )
    elif isinstance(event, VariantFailed):
        print(f"  variant {event.index + 1} failed: {event.message}", file=sys.stderr)


def _print_table(report: CompareReport) -> None:
    keys = ["quant", "reference", "size_bytes", "ttft_s", "gen_tok_s", "peak_rss_bytes"]
    keys += ["kld_mean", "top1_agreement", "text_kld_mean", "text_top1_agreement"]
    if report.task:
        keys += ["task_score", "task_degradation_pct", "task_verdict"]
    labels = dict(COLUMNS)
    table = [[labels[k] for k in keys]]
    for row in rows(report):
        table.append([format_cell(k, row[k]) for k in keys])
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    for cells in table:
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    for r in report.results:
        if r.error:
            print(f"{r.quant}: error: {r.error}")
    print(f"\nmode: {report.mode} ({report.mode_reason})")
    if len(report.results) and not report.task:
        for r in report.results:
            print(f"\n--- {r.quant} ({human_bytes(r.size_bytes)}) ---\n{r.text}")
