"""The gateway's errors, each the OpenAI-style error body a client expects."""
from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error a client sees as `{"error": {message, type, param, code}}` with `status`."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


class RequestError(GatewayError):
    """The request is malformed or asks for something the gateway does not do (HTTP 400)."""


class ContextOverflow(GatewayError):
    """The prompt leaves no room to sample within the model's context (HTTP 400, OpenAI's code)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages", code="context_length_exceeded")


class UnknownSession(GatewayError):
    """No such session, or it was closed (its episode is over) (HTTP 404)."""

    status = 404

    def __init__(self, message: str) -> None:
        super().__init__(message, code="session_not_found")


class UpstreamError(GatewayError):
    """The engine behind the gateway failed this call (HTTP 502); nothing was recorded."""

    status = 502
    kind = "upstream_error"


class NoSandbox(GatewayError):
    """The session has no sandbox to run commands in (HTTP 409)."""

    status = 409
    kind = "invalid_request_error"
