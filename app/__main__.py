"""Entry point: no arguments opens the window; a subcommand runs the CLI (``quantdesk --help``)."""

from __future__ import annotations

import sys


def gui_main() -> int:
    """Open the main window (the double-click entry point)."""
    from app.ui.app import run_gui

    return run_gui(sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-platform"):
        return gui_main()
    from app.cli import run_cli

    return run_cli(args)


if __name__ == "__main__":
    # multiprocessing "spawn" children re-import this module; the guard keeps them from running main
    sys.exit(main())
