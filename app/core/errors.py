"""The one base of every error a person may see, and the kinds the app tells apart.

Each module keeps its own subclass (``GGUFError``, ``HubError``, ``EngineError`` ...) so callers can
catch narrowly, but all of them are :class:`QuantDeskError`: a message written for people and an
:class:`ErrorKind` that the GUI, the CLI and the server map to a badge, an exit code or an HTTP status
without parsing the text.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` for Python 3.10: members are their values as strings."""

        def __str__(self) -> str:
            return str(self.value)


class ErrorKind(StrEnum):
    """What went wrong, in one word a program can branch on."""

    REQUEST = "request"  # the request itself was wrong (bad option, unknown model)
    LOAD = "load"  # llama.cpp could not load the file
    TEMPLATE = "template"  # the chat template failed or ran past its limits
    INVALID_FILE = "invalid_file"  # a GGUF that llama.cpp would refuse, or no GGUF at all
    NOT_FOUND = "not_found"
    NETWORK = "network"
    AUTH = "auth"  # a wrong token or API key
    GATED = "gated"  # a gated or private repo
    SERVER = "server"  # the remote side failed (5xx, rate limits)
    REFUSED = "refused"  # the remote side gave something we will not use (no hash, ambiguous name)
    CORRUPT = "corrupt"  # bytes that are not what was promised
    DISK = "disk"  # writing or moving a file failed
    OFFLINE = "offline"
    VERIFY = "verify"  # a hash mismatch
    DISK_FULL = "disk_full"
    NO_FIT = "no_fit"  # the plan says this machine cannot hold it
    UNSUPPORTED = "unsupported"  # e.g. an architecture this llama.cpp build does not know
    ENGINE = "engine"  # llama.cpp refused or failed a request
    CRASHED = "crashed"  # the engine process died
    TIMEOUT = "timeout"  # a bounded wait ran out
    LIMIT = "limit"  # a resource limit (memory, template time, header size) was hit
    CANCELLED = "cancelled"
    BUSY = "busy"  # the same work already runs (a download in another window)
    STORAGE = "storage"  # the library index or the chat store
    INTERNAL = "internal"


class QuantDeskError(Exception):
    """An error with a message for people and a machine-readable :class:`ErrorKind`."""

    default_kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, kind: ErrorKind | str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.kind = _kind(kind) if kind is not None else self.default_kind

    def __str__(self) -> str:
        return self.message


def _kind(kind: ErrorKind | str) -> ErrorKind:
    try:
        return ErrorKind(kind)
    except ValueError:  # a kind from an older engine child or a typo: keep the message, not a crash
        return ErrorKind.INTERNAL
