"""``quantdesk screenshots DIR``: open the window offscreen, visit every page, save one PNG each.

It shows whatever the library holds; with a model present, the Chat page gets one streamed reply
(through the page's ``screenshot_setup`` hook, like every other page that has one).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import fail, print_json

if TYPE_CHECKING:
    from app.ui.main_window import MainWindow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("screenshots", help="save a PNG of every page of the window (offscreen)")
    p.add_argument("folder", help="where to write the PNG files")
    p.add_argument("--size", default="1280x800", help="window size WIDTHxHEIGHT (default 1280x800)")
    p.add_argument("--repo", help="on the Models page, open this Hub repo's variants")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per page")
    p.add_argument("--json", action="store_true", help="print the files written as JSON")
    p.set_defaults(func=run)


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def wait_until_idle(window: MainWindow, timeout_s: float, settle_s: float = 0.3) -> bool:
    """Process events until the window's tasks are done (True) or ``timeout_s`` passed (False)."""
    from PySide6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        QApplication.processEvents()
        busy = bool(window.context.runner.active)
        busy = busy or any(getattr(p, "busy", False) for p in window.pages.values())
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= settle_s:
            return True
        time.sleep(0.02)
    return False


def _quiet_offscreen_warnings() -> None:
    """The offscreen platform warns once per window that it cannot resize to size hints."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    def handler(kind: QtMsgType, context: object, message: str) -> None:
        if "propagateSizeHints" not in message:
            print(message, file=sys.stderr)

    qInstallMessageHandler(handler)


def take_screenshots(
    folder: Path, size: tuple[int, int], repo: str | None, timeout_s: float
) -> list[Path]:
    """Visit every page and save ``NN-title.png``; returns the paths written."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from app.ui.app import make_application
    from app.ui.main_window import PAGES, MainWindow

    make_application([])
    _quiet_offscreen_warnings()
    folder.mkdir(parents=True, exist_ok=True)
    window = MainWindow()
    window.resize(*size)
    window.show()
    written: list[Path] = []
    try:
        for number, (title, _) in enumerate(PAGES, start=1):
            page = window.show_page(title)
            setup = getattr(page, "screenshot_setup", None)
            if setup is not None and title == "Models":
                setup(repo=repo)
            elif setup is not None:
                setup()
            wait_until_idle(window, timeout_s)
            # A wider page before this one may have grown the window: each page gets the size
            # asked for, unless its own minimum does not allow it (then say so).
            window.resize(*size)
            QApplication.processEvents()
            if (window.width(), window.height()) != size:
                print(
                    f"{title}: the window cannot be {size[0]}x{size[1]}; this page needs at least "
                    f"{window.width()}x{window.height()}",
                    file=sys.stderr,
                )
            path = folder / f"{number:02d}-{_slug(title)}.png"
            if not window.grab().save(str(path)):
                raise OSError(f"could not write {path}")
            written.append(path)
    finally:
        window.close()
        window.deleteLater()
    return written


def run(args: argparse.Namespace) -> int:
    match = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if not match:
        return fail(f"--size must look like 1280x800, not {args.size!r}")
    size = (int(match.group(1)), int(match.group(2)))
    try:
        written = take_screenshots(Path(args.folder), size, args.repo, args.timeout)
    except OSError as exc:
        return fail(str(exc))
    if args.json:
        print_json({"files": [str(p) for p in written]})
    else:
        for path in written:
            print(path)
    return 0
