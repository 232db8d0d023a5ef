"""Small helpers shared by CLI commands: JSON output and error reporting."""

from __future__ import annotations

import json
import sys
from typing import Any

from app.core.units import human_bytes

__all__ = ["fail", "human_bytes", "print_json"]


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def fail(message: str, code: int = 1) -> int:
    print(f"quantdesk: error: {message}", file=sys.stderr)
    return code
