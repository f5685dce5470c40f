"""Typed errors of the request path, and the one table that turns them into HTTP answers.

The pure modules (policy, budget, plan) and the upstream call raise these; none of them knows an
HTTP status. `ERRORS` maps each type to its status and OpenAI error `type` / `code`, and
`api.APIError.of(exc)` renders any exception through it, so a status is decided in one place.

Client faults (4xx): `InvalidRequest` (a field; `param` names it), `ModelNotFound`, `NotServable`
(the catalog cannot serve this request: images without a vision model, budget 0 with only
thinking models), `EngineRejected` (the engine refused the request, e.g. max_tokens beyond the
context: its own 4xx is kept). Upstream faults (5xx): `UpstreamUnavailable` (no replica, replica
died, back-pressure; `reason` says which), `UpstreamError` (the engine answered a server error or
the call failed), `UpstreamTimeout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# Why a candidate was passed over, or why an upstream call failed (header, span, metric label).
FallbackReason = Literal["no_replica", "scaled_to_zero", "replica_died", "backpressure", "upstream_error"]
FALLBACK_REASONS: Final[tuple[FallbackReason, ...]] = (
    "no_replica", "scaled_to_zero", "replica_died", "backpressure", "upstream_error",
)


class ServeGraphError(Exception):
    """Base of every error the router answers with; `message` is what the client reads."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code  # refines the table's code for this instance (None: the table's)


class InvalidRequest(ServeGraphError, ValueError):
    """A request field is malformed or out of range; `param` names it."""


class ModelNotFound(ServeGraphError):
    """The client named a model that is not in the catalog."""


class NotServable(ServeGraphError):
    """A valid request this catalog cannot serve (e.g. images and no vision model)."""


class EngineRejected(ServeGraphError):
    """The engine refused the request as the client's fault; its 4xx status is kept."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status if 400 <= status < 500 else 400


class UpstreamFailure(ServeGraphError):
    """A model call failed on the serving side; `model` is the candidate, `reason` the kind."""

    reason: FallbackReason = "upstream_error"

    def __init__(self, message: str, *, model: str | None = None, reason: FallbackReason | None = None) -> None:
        super().__init__(message, code=reason)
        self.model = model
        if reason is not None:
            self.reason = reason


class UpstreamUnavailable(UpstreamFailure):
    """No replica could take the call: none running, the one chosen died, or back-pressure."""

    reason: FallbackReason = "no_replica"


class UpstreamError(UpstreamFailure):
    """The engine answered a server error, or the call raised, before the first byte."""


class UpstreamTimeout(UpstreamFailure):
    """No first item within the request timeout."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str  # OpenAI's error `type`
    code: str | None  # OpenAI's error `code`, unless the instance refines it


INTERNAL: Final = ErrorKind(500, "server_error", "internal_error")

# The one table. Looked up along the class's MRO, so a subclass not listed maps like its base;
# anything that is not a ServeGraphError is INTERNAL (a bug: logged, still OpenAI's shape).
ERRORS: Final[dict[type[ServeGraphError], ErrorKind]] = {
    InvalidRequest: ErrorKind(400, "invalid_request_error", "invalid_value"),
    ModelNotFound: ErrorKind(404, "invalid_request_error", "model_not_found"),
    NotServable: ErrorKind(400, "invalid_request_error", "not_servable"),
    EngineRejected: ErrorKind(400, "invalid_request_error", None),
    UpstreamUnavailable: ErrorKind(503, "service_unavailable", "no_replica"),
    UpstreamError: ErrorKind(502, "server_error", "upstream_error"),
    UpstreamTimeout: ErrorKind(504, "timeout_error", "timeout"),
    UpstreamFailure: ErrorKind(502, "server_error", "upstream_error"),
    ServeGraphError: INTERNAL,
}


def error_kind(exc: BaseException) -> ErrorKind:
    """Status, type and code for `exc` (an instance's `code` and EngineRejected's status win)."""
    if not isinstance(exc, ServeGraphError):
        return INTERNAL
    kind = next((ERRORS[c] for c in type(exc).__mro__ if c in ERRORS), INTERNAL)
    status = exc.status if isinstance(exc, EngineRejected) else kind.status
    return ErrorKind(status, kind.type, exc.code or kind.code)
