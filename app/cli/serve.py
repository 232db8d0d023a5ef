"""``quantdesk serve``: the OpenAI-compatible local server, headless, in the main thread.

Models are the library's (``quantdesk list``); ``--models`` limits them.  Each loads on first use
as the planner says, next to the others while they fit together.  Ctrl+C stops the server and every
engine process.
"""

from __future__ import annotations

import argparse
import sys

from app.cli.common import fail
from app.cli.worker import add_workers_flag
from app.core.errors import QuantDeskError
from app.core.rpc import parse_workers
from app.core.units import parse_size
from app.server.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TTL_S, ServerOptions


def _bytes(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible local server (headless)")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}; any other needs --api-key)",
    )
    p.add_argument(
        "--port", type=int, default=None, help=f"port (default: the setting, {DEFAULT_PORT})"
    )
    p.add_argument("--api-key", default="", help="clients must send 'Authorization: Bearer KEY'")
    p.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="MODEL",
        help="serve only these library models (id or file name)",
    )
    p.add_argument(
        "--ttl",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"unload a model idle this long (default: the setting, {DEFAULT_TTL_S:.0f}; 0: never)",
    )
    p.add_argument(
        "--ctx", type=int, default=4096, help="context to plan each model for (default 4096)"
    )
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads per model")
    p.add_argument(
        "--cors",
        nargs="+",
        default=[],
        metavar="ORIGIN",
        help="allow these web origins (CORS is off otherwise)",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=8192,
        help="largest max_tokens a request may ask (default 8192)",
    )
    p.add_argument(
        "--ram-budget", type=_bytes, help="RAM the models may use together (what-if), e.g. 16G"
    )
    p.add_argument("--vram-budget", type=_bytes, help="VRAM the models may use together, e.g. 12G")
    add_workers_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.core.library import Library
    from app.core.planning import PlanOptions, default_planner
    from app.core.settings import Settings
    from app.server.runner import LocalServer

    settings = Settings.load()
    try:
        workers = parse_workers(args.workers)
    except QuantDeskError as exc:
        return fail(str(exc))
    options = ServerOptions(
        host=args.host,
        port=settings.server_port if args.port is None else args.port,
        api_key=args.api_key,
        models=list(args.models),
        idle_ttl_s=float(settings.server_idle_ttl_s if args.ttl is None else args.ttl),
        cors_origins=list(args.cors),
        max_tokens_limit=args.max_tokens,
        n_ctx=args.ctx,
        n_threads=args.threads,
        ram_budget_bytes=args.ram_budget,
        vram_budget_bytes=args.vram_budget,
        workers=workers,
    )
    try:
        options.check()
        library = Library()
        planner = default_planner()
        planner.options = PlanOptions.from_settings(settings)  # the app's memory settings
        server = LocalServer(options, planner, library)
        if options.models:
            for key in options.models:
                server.pool.resolve(key)  # an unknown name fails now, not at the first request
        offered = [m.name for m in server.pool.models()]
    except QuantDeskError as exc:
        return fail(str(exc))
    print(
        f"QuantDesk server on {options.base_url} ({len(offered)} models: "
        f"{', '.join(offered) or 'none yet, add some with quantdesk pull'}). Ctrl+C stops it.",
        file=sys.stderr,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled: the normal way to stop
        pass
    except QuantDeskError as exc:
        return fail(str(exc))
    print("QuantDesk server stopped.", file=sys.stderr)
    return 0
