"""Entry point: no arguments opens the window; a subcommand runs the CLI (``quantdesk --help``)."""

from __future__ import annotations

import sys


def gui_main() -> int:
    """Open the main window (the double-click entry point)."""
    from app.ui.app import run_gui

    return run_gui(sys.argv[1:])


def _attach_console() -> None:
    """A windowed Windows build has no stdout: print to the console it was started from, if any."""
    if sys.platform == "win32" and getattr(sys, "frozen", False) and sys.stdout is None:
        import ctypes

        if ctypes.windll.kernel32.AttachConsole(-1):  # -1: the parent process's console
            sys.stdout = sys.stderr = open("CONOUT$", "w", encoding="utf-8")  # noqa: SIM115


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # -psn_...: the process serial number old macOS Finders pass to a double-clicked .app
    if not args or args[0].startswith(("-platform", "-psn_")):
        return gui_main()
    _attach_console()
    if args == ["--self-test"]:
        from app.selftest import run_self_test

        return run_self_test()
    from app.cli import run_cli

    return run_cli(args)


if __name__ == "__main__":
    # multiprocessing "spawn" children re-import this module; the guard keeps them from running main.
    # In a frozen bundle the engine child is this same executable: freeze_support() turns it into the
    # child right here (without it the child would open a second window).
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())
