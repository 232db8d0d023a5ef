"""OpenAI's error JSON and the one table from an error's kind to its HTTP status."""

from __future__ import annotations

from typing import Any

from app.core.errors import ErrorKind, QuantDeskError

# What each kind of core error means to an HTTP client.  Anything not listed is a 500.
STATUS: dict[ErrorKind, int] = {
    ErrorKind.REQUEST: 400,
    ErrorKind.TEMPLATE: 400,
    ErrorKind.INVALID_FILE: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.AUTH: 401,
    ErrorKind.NO_FIT: 503,
    ErrorKind.LIMIT: 400,
    ErrorKind.TIMEOUT: 503,
    ErrorKind.LOAD: 500,
    ErrorKind.CRASHED: 500,
    ErrorKind.ENGINE: 500,
    ErrorKind.UNSUPPORTED: 400,
    ErrorKind.CANCELLED: 499,
}

# OpenAI's error "type" by status class.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class ApiError(QuantDeskError):
    """An error answered in OpenAI's shape; ``status`` is the HTTP status."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: ErrorKind | None = None,
    ) -> None:
        super().__init__(message, kind or ErrorKind.REQUEST)
        self.status = status
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(
                    self.status, "server_error" if self.status >= 500 else "invalid_request_error"
                ),
                "param": self.param,
                "code": self.code,
            }
        }


def status_of(kind: ErrorKind) -> int:
    return STATUS.get(kind, 500)


def from_exception(exc: BaseException) -> ApiError:
    """Any error as an :class:`ApiError`: core errors by their kind, the rest as a 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, QuantDeskError):
        codes = {ErrorKind.NO_FIT: "model_does_not_fit", ErrorKind.NOT_FOUND: "model_not_found"}
        code = codes.get(exc.kind)
        if exc.kind == ErrorKind.REQUEST and "but the context holds" in exc.message:
            code = "context_length_exceeded"  # the engine's check of the templated prompt
        return ApiError(exc.message, status_of(exc.kind), code=code, kind=exc.kind)
    return ApiError(f"internal error: {type(exc).__name__}: {exc}", 500, kind=ErrorKind.INTERNAL)
