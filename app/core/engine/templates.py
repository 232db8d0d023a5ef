"""Chat templates from model files, rendered in a sandbox with limits (engine child only).

A template comes from a stranger's file.  Jinja's sandbox stops it from reaching Python, but not
from exhausting the engine: ``'a' * 300000000`` or nested ``range`` loops.  So the renderer here
refuses string and list repetition past :data:`MAX_TEXT` characters, caps the rendered prompt, and
stops a render that runs longer than a time limit (SIGALRM in the child's main thread where the OS
has it; the parent enforces the same limit from outside in every case, see client.Engine).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MAX_TEXT = 4_000_000  # characters: far above any real prompt (1M tokens are ~4M characters)
TEMPLATE_TIMEOUT_S = 5.0


class TemplateLimit(Exception):
    """A template ran past a limit; the message says which."""


@dataclass(frozen=True)
class Rendered:
    prompt: str
    stop: list[str]


def _env() -> Any:
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class LimitedSandbox(ImmutableSandboxedEnvironment):
        """The sandbox, plus a size check on ``*`` and ``**`` before they allocate."""

        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int):
                        size = len(seq) * n
                        if size > MAX_TEXT:
                            raise SecurityError(
                                f"the chat template builds a {size:,}-item string or list "
                                f"(the limit is {MAX_TEXT:,})"
                            )
            if operator == "**" and isinstance(right, int) and abs(right) > 1024:
                raise SecurityError(f"the chat template raises a number to the power {right}")
            return super().call_binop(context, operator, left, right)

    return LimitedSandbox(trim_blocks=True, lstrip_blocks=True)


class TemplateRenderer:
    """A GGUF chat template compiled once per load, rendered once per request."""

    def __init__(self, template: str, bos_token: str, eos_token: str) -> None:
        self._template = _env().from_string(template)
        self.bos_token, self.eos_token = bos_token, eos_token

    def __call__(
        self, messages: list[dict[str, str]], timeout_s: float = TEMPLATE_TIMEOUT_S
    ) -> Rendered:
        def raise_exception(message: str) -> None:
            from jinja2.exceptions import TemplateError

            raise TemplateError(message)

        with time_limit(timeout_s):
            prompt = self._template.render(
                messages=messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=True,
                raise_exception=raise_exception,
                strftime_now=lambda fmt: datetime.now().strftime(fmt),
            )
        if len(prompt) > MAX_TEXT:
            raise TemplateLimit(
                f"the chat template produced {len(prompt):,} characters (the limit is {MAX_TEXT:,})"
            )
        return Rendered(prompt, [self.eos_token] if self.eos_token else [])


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TemplateLimit` in this thread when the block runs longer than ``seconds``.

    Only where SIGALRM exists and on the main thread; elsewhere the block runs unbounded here and
    the parent's watchdog (which sees the render start) stops the whole engine instead.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def _expired(signum: int, frame: Any) -> None:
        raise TemplateLimit(f"the chat template took longer than {seconds:g} s to render")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
