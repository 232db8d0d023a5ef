"""Command-line interface.  Each command lives in its own module with a ``register(sub)`` function.

JSON output (``--json``) is a contract: scripts rely on the keys each command documents.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import app

# One line per command module; each adds its subcommands to the parser.
COMMAND_MODULES = [
    "app.cli.gui",
    "app.cli.chat",
    "app.cli.hw",
    "app.cli.plan",
    "app.cli.compare",
    "app.cli.hub",
    "app.cli.serve",
    "app.cli.worker",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantdesk",
        description="Run GGUF models locally. With no command, opens the app window.",
    )
    parser.add_argument("--version", action="version", version=f"QuantDesk {app.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def run_cli(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
