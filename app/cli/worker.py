"""``quantdesk worker``: lend this computer's CPU or GPU to a model loaded on another computer.

Runs llama.cpp's RPC server (see app.core.rpc).  It binds to 127.0.0.1 unless told otherwise and
refuses any other address without ``--allow-any-address``: the protocol has no authentication.
"""

from __future__ import annotations

import argparse
import sys

from app.cli.common import human_bytes, print_json
from app.core.planning import LoadPlan, Planner, PlanOptions
from app.core.rpc import DEFAULT_PORT, WorkerError, check_bind_address, parse_workers, serve
from app.core.units import parse_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="serve this computer's CPU or GPU to a model split over several computers",
        description="Run a llama.cpp RPC worker. Reach it from another computer through an SSH "
        "tunnel (ssh -N -L PORT:127.0.0.1:PORT THIS-HOST) and pass --workers 127.0.0.1:PORT there.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})"
    )
    p.add_argument(
        "--device", default="cpu", help="device to serve: cpu, cuda0, metal, ... (default cpu)"
    )
    p.add_argument("--mem", default=None, help="memory to offer, e.g. 8G (default: what is free)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: half the cores)")
    p.add_argument(
        "--allow-any-address",
        action="store_true",
        help="allow a non-loopback --host (only on a network you trust: there is no authentication)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        mem = parse_size(args.mem) if args.mem else None
    except ValueError as exc:
        print(f"error: --mem: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is out of range", file=sys.stderr)
        return 2
    try:
        warning = check_bind_address(args.host, args.allow_any_address)
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(warning.format(addr=f"{args.host}:{args.port}", port=args.port), file=sys.stderr)
    limit = f", offering {human_bytes(mem)}" if mem else ""
    print(
        f"quantdesk worker: serving {args.device} on {args.host}:{args.port}{limit} "
        "(Ctrl-C stops it)",
        flush=True,
    )
    try:
        serve(args.host, args.port, args.device, mem, args.threads)
    except WorkerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1


# ---- --workers on the commands that plan or load a model ---------------------------------------


def add_workers_flag(p: argparse.ArgumentParser) -> None:
    """``--workers HOST:PORT[,HOST:PORT...]``: split the model over these workers and this machine."""
    p.add_argument(
        "--workers",
        default=None,
        metavar="HOST:PORT[,...]",
        help="split the model over these quantdesk workers and this computer",
    )


def split_plan(args: argparse.Namespace, options: PlanOptions | None = None) -> LoadPlan | None:
    """The split plan for ``args.model`` when ``--workers`` is given (PlanError/WorkerError raise)."""
    workers = parse_workers(getattr(args, "workers", None))
    if not workers:
        return None
    with Planner() as planner:
        budget = planner.budget(
            getattr(args, "ram_budget", None), getattr(args, "vram_budget", None)
        )
        return planner.plan_load(
            args.model, args.ctx or 4096, options=options, budget=budget, workers=workers
        )


def print_split(plan: LoadPlan, as_json: bool) -> None:
    """A split plan for people (a line per device) or as JSON."""
    sp = plan.split
    if as_json:
        out = {"verdict": plan.verdict, "n_ctx": plan.n_ctx, "n_gpu_layers": plan.n_gpu_layers}
        print_json(
            out | {"ram_bytes": plan.ram_bytes, "vram_bytes": plan.vram_bytes} | sp.to_json()
        )
        return
    print(f"verdict:  {plan.verdict} -- {plan.reason}")
    print(
        f"context:  {plan.n_ctx} tokens; n_gpu_layers {plan.n_gpu_layers}; tensor_split {list(sp.tensor_split)}"
    )
    for s in sp.shares:
        first = (
            f"layers {s.first_layer}-{s.first_layer + s.n_layers - 1}"
            if s.n_layers
            else "no layers"
        )
        print(
            f"{s.name}: {first}: weights {human_bytes(s.weights_bytes)}, KV {human_bytes(s.kv_bytes)}, "
            f"compute {human_bytes(s.compute_bytes)} = {human_bytes(s.total_bytes)} "
            f"of {human_bytes(s.budget_bytes)}"
        )
