"""Run the server: uvicorn in its own thread (the GUI) or in the calling thread (``serve``).

:class:`LocalServer` owns the pool, the FastAPI app and the uvicorn server.  ``start()`` returns
once the socket listens (or raises why it cannot, e.g. the port is taken); ``stop()`` asks uvicorn
to finish (``should_exit``), waits a bounded time, and then stops every engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import uvicorn

from app.core.errors import ErrorKind, QuantDeskError
from app.core.library import Library
from app.core.planning import Planner
from app.server.app import create_app
from app.server.config import ServerConfigError, ServerOptions
from app.server.models import ModelPool

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0


class ServerError(QuantDeskError):
    """The server could not start (the port is taken, the address is not this computer's...)."""

    default_kind = ErrorKind.REQUEST


class LocalServer:
    """The pool, the app and uvicorn, started in a thread or run in the calling one."""

    def __init__(
        self,
        options: ServerOptions,
        planner: Planner,
        library: Library,
        *,
        log_dir: Path | None = None,
    ) -> None:
        options.check()
        self.options = options
        self.pool = ModelPool(planner, library, options, log_dir=log_dir)
        self.app = create_app(self.pool, options)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS chose when the options said 0)."""
        return self.options.port

    @property
    def base_url(self) -> str:
        return self.options.base_url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _bind(self) -> socket.socket:
        """Bind first, here: a taken port is an error the caller sees, not a thread's log line."""
        family = socket.AF_INET6 if ":" in self.options.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.options.host, self.options.port))
        except OSError as exc:
            sock.close()
            raise ServerError(
                f"cannot listen on {self.options.host}:{self.options.port}: "
                f"{exc.strerror or exc} (is another server using the port?)"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.options.port = sock.getsockname()[1]
        return sock

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="off",
        )

    def start(self) -> None:
        """Listen in a background thread; returns when it answers (raises :class:`ServerError`)."""
        if self.running:
            return
        self._sock = self._bind()
        server = uvicorn.Server(self._config())
        self._server = server
        self._thread = threading.Thread(target=self._run, name="quantdesk-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the server did not start: {self._error or 'timed out'}")
            time.sleep(0.02)

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # shown by start() / the page
            self._error = exc

    def serve_forever(self) -> None:
        """Run in the calling (main) thread until Ctrl+C or SIGTERM; then stop everything."""
        self._sock = self._bind()
        server = uvicorn.Server(self._config())
        self._server = server
        try:
            asyncio.run(server.serve(sockets=[self._sock]))
        finally:
            self._close()

    def stop(self) -> None:
        """Stop answering, end the streams, stop every engine process (idempotent, bounded)."""
        server, thread = self._server, self._thread
        # Streams first: they end at once, so uvicorn's graceful shutdown has nothing to wait for.
        self.pool.stop_accepting()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                if server is not None:
                    server.force_exit = True
                thread.join(STOP_TIMEOUT_S)
        self._thread = None
        self._close()

    def _close(self) -> None:
        # Engines first: a generation still running in a worker ends when its engine stops.
        self.pool.close()
        executor = getattr(self.app.state, "executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


__all__ = ["LocalServer", "ServerConfigError", "ServerError", "ServerOptions"]
