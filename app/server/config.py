"""Server options and the safe defaults: loopback only unless an API key is set, bounded requests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from app.core.errors import ErrorKind, QuantDeskError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_TTL_S = 600.0


class ServerConfigError(QuantDeskError):
    """Options the server refuses to start with (the message says why and what to do)."""

    default_kind = ErrorKind.REQUEST


def is_loopback(host: str) -> bool:
    """True for addresses only this computer can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@dataclass
class ServerOptions:
    """Everything ``quantdesk serve`` and the Server page can set (defaults are the safe ones)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (tests)
    api_key: str = ""  # required for any non-loopback host
    models: list[str] = field(default_factory=list)  # library ids/names served; empty: all
    idle_ttl_s: float = DEFAULT_TTL_S  # unload a model idle this long; 0: never
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    max_body_bytes: int = 4_000_000
    max_tokens_limit: int = 8192  # a request asking for more gets a 400
    default_max_tokens: int = 512
    n_ctx: int = 4096  # the context each model is planned for (shortened by the plan if needed)
    n_threads: int | None = None
    ram_budget_bytes: int | None = None  # what-if budgets (None: this machine's)
    vram_budget_bytes: int | None = None
    queue_timeout_s: float = 300.0  # a request waiting longer for its model gets a 503
    load_timeout_s: float = 600.0
    workers: tuple[str, ...] = ()  # RPC workers a model may be split over (app.core.rpc)

    def check(self) -> None:
        """Refuse unsafe or impossible options (raises :class:`ServerConfigError`)."""
        if not 0 <= self.port <= 65535:
            raise ServerConfigError(f"port {self.port} is not between 1 and 65535")
        if not is_loopback(self.host) and not self.api_key:
            raise ServerConfigError(
                f"refusing to listen on {self.host} without an API key: any computer that can reach "
                "it could use your models. Set --api-key KEY (clients send it as "
                "'Authorization: Bearer KEY'), or keep the default host 127.0.0.1."
            )
        for name in ("max_body_bytes", "max_tokens_limit", "default_max_tokens", "n_ctx"):
            if getattr(self, name) <= 0:
                raise ServerConfigError(f"{name} must be positive")
        if self.idle_ttl_s < 0:
            raise ServerConfigError("the idle TTL cannot be negative (0 keeps models loaded)")
        if "*" in self.cors_origins:
            raise ServerConfigError(
                "CORS origin '*' would let every web page you visit use your models: "
                "list the origins instead"
            )

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"
