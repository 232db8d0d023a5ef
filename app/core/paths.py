"""Every on-disk location QuantDesk uses, in one place.

User data lives in platformdirs' per-OS folders.  Setting ``QUANTDESK_HOME`` puts everything under
that one folder instead (tests, scripts and portable installs use it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

_APP = "QuantDesk"


def home() -> Path | None:
    """The override folder from ``QUANTDESK_HOME``, or None when the per-OS folders apply."""
    value = os.environ.get("QUANTDESK_HOME")
    return Path(value).expanduser() if value else None


def _dir(kind: str) -> Path:
    root = home()
    if root is not None:
        path = root / kind
    elif kind == "data":
        path = Path(platformdirs.user_data_dir(_APP, appauthor=False))
    elif kind == "config":
        path = Path(platformdirs.user_config_dir(_APP, appauthor=False))
    elif kind == "cache":
        path = Path(platformdirs.user_cache_dir(_APP, appauthor=False))
    else:
        path = Path(platformdirs.user_log_dir(_APP, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    return _dir("data")


def config_dir() -> Path:
    return _dir("config")


def cache_dir() -> Path:
    return _dir("cache")


def log_dir() -> Path:
    return _dir("logs")


def default_library_dir() -> Path:
    """Where downloaded and imported models live unless the user picks another folder."""
    path = data_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_path() -> Path:
    """The SQLite file that holds conversations and the library index."""
    return data_dir() / "quantdesk.sqlite3"


def settings_path() -> Path:
    return config_dir() / "settings.json"


def resources_dir() -> Path:
    """The read-only ``resources/`` folder, from a source checkout or a PyInstaller bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"
