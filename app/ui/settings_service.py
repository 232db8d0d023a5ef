"""The one :class:`~app.core.settings.Settings` object the window's pages share.

Pages read it with :func:`shared_settings`; the Settings page changes it, saves it and emits
``context.events.settings_changed`` so other pages can apply what concerns them.
"""

from __future__ import annotations

from typing import Any

from app.core.settings import Settings


def shared_settings(context: Any) -> Settings:
    """The window's settings, loaded from disk on first use."""
    return context.service("settings", Settings.load)
