"""Shared core objects of the window, created once and reachable from any page or worker thread.

They live in ``AppContext.services`` (closed by the window on shutdown when they have ``close``):
the hardware profile (detected off the GUI thread, replaced on refresh) and the dry-run runner
(one engine child serving every plan of the Models page).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.dryrun import DryRunner
from app.core.hardware import HardwareProfile, detect
from app.core.library import Library

if TYPE_CHECKING:
    from app.ui.main_window import AppContext


def hardware_profile(context: AppContext, refresh: bool = False) -> HardwareProfile:
    """This machine's profile; detects it on first use (call from a worker thread)."""
    if refresh:
        profile = detect()
        context.set_service("hardware", profile)
        return profile
    return context.service("hardware", detect)


def dry_runner(context: AppContext) -> DryRunner:
    """The window's DryRunner (its engine child starts on the first dry run)."""
    return context.service("dryrun", DryRunner)


def library(context: AppContext) -> Library:
    """The Library in the folder the settings name now (cheap: one small SQLite statement).

    Built per call rather than shared, so a library folder changed in Settings applies at once.
    """
    from app.ui.settings_service import shared_settings

    return Library(folder=shared_settings(context).library_path())
